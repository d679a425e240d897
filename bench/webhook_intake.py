"""Webhook intake benchmark: our `/webhooks/github` (verify, parse, store in SQLite, 202) against a bare
aiohttp handler that only reads the body and answers 200, in the same run on the same machine.

Throughput: `wrk` (Debian package `wrk`) with a Lua script that gives every request a fresh
X-GitHub-Delivery, so each one is a new stored delivery; without wrk, a Python closed-loop client.
Latency: an open-loop asyncio client sending at a steady rate (default 1,000 req/s) and timing each ack.

    python bench/webhook_intake.py [--seconds 10] [--rate 1000] [--connections 32]

The last line printed is JSON: intake_req_per_s, bare_req_per_s, ratio, p50/p99 ack latency (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import importlib.util
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = ROOT / "tests" / "fixtures" / "github" / "webhooks" / "pull_request" / "labeled.json"
SECRET = "bench-secret"

BARE_SERVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    async def handle(request):
        await request.read()
        return web.Response(status=200)

    app = web.Application(client_max_size=25 * 1024 * 1024)
    app.router.add_post("/webhooks/github", handle)
    if sys.argv[2] == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        import asyncio
        loop = asyncio.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, loop=loop)
    """
)

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "pull_request"
wrk.headers["X-Hub-Signature-256"] = "{signature}"
local f = assert(io.open("{payload}", "rb"))
wrk.body = f:read("*all")
f:close()
local thread_id = 0
local counter = 0
setup = function(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
request = function()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = string.format("bench-%s-%d-%d", "{run}", tid or 0, counter)
  return wrk.format(nil, nil, nil, nil)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def start_bare(port: int, loop: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port), loop])


def start_bot(port: int, data_dir: Path, loop: str) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATA_DIR": str(data_dir),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "EVENT_LOOP": loop,
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen([sys.executable, "-m", "bot", "web"], env=env, cwd=data_dir)


def wrk_throughput(port: int, seconds: int, connections: int, signature: str, workdir: Path) -> float:
    script = workdir / f"intake-{port}.lua"
    script.write_text(
        WRK_SCRIPT.replace("{signature}", signature)
        .replace("{payload}", str(PAYLOAD))
        .replace("{run}", uuid.uuid4().hex[:8])
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/webhooks/github",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} requests failed:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(out)
    return float(match.group(1))


async def python_throughput(port: int, seconds: int, connections: int, body: bytes, signature: str) -> float:
    url = f"http://127.0.0.1:{port}/webhooks/github"
    done = 0
    deadline = time.monotonic() + seconds

    async def loop(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            async with session.post(url, data=body, headers=headers(signature)) as response:
                await response.read()
                assert response.status in (200, 202), response.status
            done += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        started = time.monotonic()
        await asyncio.gather(*(loop(session) for _ in range(connections)))
        return done / (time.monotonic() - started)


def headers(signature: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
    }


async def steady_latency(port: int, rate: int, seconds: int, body: bytes, signature: str) -> list[float]:
    """Open loop: requests leave on schedule whether or not earlier ones came back."""
    url = f"http://127.0.0.1:{port}/webhooks/github"
    latencies: list[float] = []
    failures = 0
    interval = 1.0 / rate
    total = rate * seconds

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one(scheduled: float) -> None:
            nonlocal failures
            async with session.post(url, data=body, headers=headers(signature)) as response:
                await response.read()
                if response.status != 202:
                    failures += 1
            # From the moment it was due: a client that falls behind counts against us, not for us.
            latencies.append((time.perf_counter() - scheduled) * 1000)

        tasks = []
        start = time.perf_counter() + 0.05
        for i in range(total):
            scheduled = start + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{failures} requests were not acknowledged with 202")
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=6, help="length of each throughput round and of the latency run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        help="event loop for both servers (the bot's default: uvloop when installed)",
    )
    args = parser.parse_args()

    body = PAYLOAD.read_bytes()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    use_wrk = shutil.which("wrk") is not None
    tool = "wrk" if use_wrk else "python-client"
    results: dict[str, float | str | int] = {"payload_bytes": len(body), "load_tool": tool, "loop": args.loop}

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)

        def throughput(port: int) -> float:
            if use_wrk:
                return wrk_throughput(port, args.seconds, args.connections, signature, workdir)
            return asyncio.run(python_throughput(port, args.seconds, args.connections, body, signature))

        # Both servers run side by side (an idle one costs nothing) and are measured in alternating
        # rounds: on a shared two-core machine, the median of interleaved rounds is what compares fairly.
        bare_port, bot_port = free_port(), free_port()
        bare = start_bare(bare_port, args.loop)
        bot = start_bot(bot_port, workdir / "bot", args.loop)
        try:
            wait_ready(bare_port)
            wait_ready(bot_port)
            bare_runs, intake_runs = [], []
            for _ in range(args.rounds):
                bare_runs.append(throughput(bare_port))
                intake_runs.append(throughput(bot_port))
            results["bare_req_per_s"] = round(statistics.median(bare_runs), 1)
            results["intake_req_per_s"] = round(statistics.median(intake_runs), 1)
            results["rounds"] = args.rounds
            latencies = asyncio.run(steady_latency(bot_port, args.rate, args.seconds, body, signature))
        finally:
            for proc in (bare, bot):
                proc.terminate()
                proc.wait()
        db = workdir / "bot" / "release-secretary.db"
        stored = int(sum(intake_runs) * args.seconds) + len(latencies)
        results["db_bytes_per_delivery"] = round(
            (db.stat().st_size + sum(p.stat().st_size for p in db.parent.glob("*.db-wal"))) / max(1, stored), 1
        )

    results["ratio"] = round(float(results["intake_req_per_s"]) / float(results["bare_req_per_s"]), 3)
    results["steady_rate"] = args.rate
    results["p50_ack_ms"] = round(percentile(latencies, 0.50), 2)
    results["p99_ack_ms"] = round(percentile(latencies, 0.99), 2)
    results["max_ack_ms"] = round(max(latencies), 2)
    print(
        f"bare aiohttp: {results['bare_req_per_s']} req/s; intake: {results['intake_req_per_s']} req/s "
        f"({results['ratio']}x) with {tool}, {args.connections} connections, {args.seconds}s"
    )
    print(
        f"steady {args.rate} req/s for {args.seconds}s: p50 {results['p50_ack_ms']} ms, "
        f"p99 {results['p99_ack_ms']} ms, max {results['max_ack_ms']} ms"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
