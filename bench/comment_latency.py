"""Sticky comment latency: from a webhook POST to the bot's PATCH of the PR's progress comment arriving
at the (fake) GitHub, at a steady event rate over many PRs. Also counts the GitHub API requests the bot
makes for each step of the scenario.

The bot runs for real (`python -m bot serve`, SQLite, default pacing); the fake GitHub from the test
suite runs in this process and validates every request against GitHub's OpenAPI description. Each PR
lives in its own installation (as when the App is installed on many repositories): writes are
spaced per installation, so one installation could not take 50 edits a second from any bot.

Scenario per PR: the `Ready for Prod` label (creates the release, the comment and the check run),
then CI flipping between green and red (`check_suite` completed), each flip one edit of the comment.

    python bench/comment_latency.py [--prs 200] [--rate 50] [--seconds 20]

Last line: JSON with p50_ms, p99_ms, max_ms, events, edits, requests per step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.github import FakeGitHub  # noqa: E402
from tests.fakes.keys import make_app_key  # noqa: E402
from tests.helpers import SECRET, webhook_headers  # noqa: E402
from tests.scenario import labeled, suite_completed  # noqa: E402

APP_ID = 4242


class TimedFake(FakeGitHub):
    """The fake GitHub, noting when each request arrives (before it does any work on it).

    It still checks every request the bot sends against the OpenAPI description; it skips checking
    its own responses (the test suite does that), which would otherwise take most of this process's
    CPU on a two-core machine and slow the bot's reads for reasons that are not the bot's."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, str, str]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append((time.perf_counter(), request.method, request.path))
        return await super()._handle(request)

    def _response_problems(self, op: Any, reply: Any) -> str:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def repo_of(i: int) -> str:
    return f"org{i}/service{i}"


def retarget(data: dict[str, Any], i: int) -> dict[str, Any]:
    data["installation"] = {"id": 1000 + i}
    return data


async def wait_ready(port: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the bot did not start")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fake = TimedFake()
    await fake.start()
    key = make_app_key()
    fake.add_app(APP_ID, key.public_key_pem)
    heads: dict[int, str] = {}
    for i in range(args.prs):
        repo = repo_of(i)
        fake.add_repo(repo)
        fake.add_installation(1000 + i, f"org{i}", repos=[repo], app_id=APP_ID)
        heads[i] = f"{i:040x}"
        fake.add_pull(repo, 1, head_sha=heads[i], title=f"Change {i}", user_login="alice")
        fake.set_permission(repo, "alice", "write")
        fake.set_branch_protection(repo, "main", ["ci/build"])
        fake.add_check_run(repo, heads[i], "ci/build", status="in_progress", conclusion=None)

    tmp = Path(tempfile.mkdtemp(prefix="rs-bench-"))
    (tmp / "app.pem").write_bytes(key.rsa_private_key_pem)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATA_DIR": str(tmp / "data"),
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY_PATH": str(tmp / "app.pem"),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": fake.url,
        "LOG_LEVEL": "WARNING",
        "REDELIVERY_SWEEP_INTERVAL": "0",
    }
    bot = subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=env, cwd=tmp)  # noqa: ASYNC220
    sent: dict[int, list[float]] = defaultdict(list)  # PR index -> send times awaiting an edit
    steps: list[tuple[str, int, int]] = []  # (step, first request index, last request index)
    try:
        await wait_ready(port)
        url = f"http://127.0.0.1:{port}/webhooks/github"
        async with aiohttp.ClientSession() as session:

            async def post(event: str, data: dict[str, Any]) -> None:
                body = json.dumps(data).encode()
                headers = webhook_headers(event, body, delivery=str(uuid.uuid4()))
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 202, await response.text()

            # Step 1: every PR gets the label. The first five one at a time, to count their API calls.
            for i in range(args.prs):
                first = len(fake.requests)
                await post("pull_request", retarget(labeled(1, heads[i], sender="alice", repo=repo_of(i)), i))
                if i < 5:
                    await settle(fake, lambda i=i: labelled(fake, i, heads[i]))
                    steps.append(("label", first, len(fake.requests)))
            await settle(fake, lambda: all(labelled(fake, i, heads[i]) for i in range(args.prs)), timeout=120)
            # Past the sticky debounce (3 s): flips measure the edit path, not the deliberate coalescing.
            await asyncio.sleep(3.5)

            # Step 2: CI flips, at a steady rate, round robin over the PRs.
            comment_of = {fake.comments_on(repo_of(i), 1)[0]["id"]: i for i in range(args.prs)}
            edits_before = len(fake.arrivals)
            interval = 1.0 / args.rate
            total = args.rate * args.seconds
            start = time.perf_counter() + 0.1
            count_first = len(fake.requests)
            for n in range(total):
                due = start + n * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                i = n % args.prs
                conclusion = "failure" if (n // args.prs) % 2 == 0 else "success"
                fake.add_check_run(repo_of(i), heads[i], "ci/build", status="completed", conclusion=conclusion)
                sent[i].append(time.perf_counter())
                asyncio.get_running_loop().create_task(
                    post("check_suite", retarget(suite_completed(heads[i], conclusion=conclusion, repo=repo_of(i)), i))
                )
            await asyncio.sleep(3.0)
            flips = len(fake.requests) - count_first
    finally:
        bot.send_signal(signal.SIGTERM)
        # Wait without blocking this loop: it serves the fake GitHub the bot is finishing calls to.
        await asyncio.to_thread(bot.wait, 30)
        await fake.close()

    latencies: list[float] = []
    edits = 0
    pending = {i: list(times) for i, times in sent.items()}
    for at, method, path in fake.arrivals[edits_before:]:
        if method != "PATCH" or "/issues/comments/" not in path:
            continue
        i = comment_of.get(int(path.rsplit("/", 1)[1]))
        if i is None or not pending.get(i):
            continue
        edits += 1
        # An edit answers every event of its PR sent before it (coalesced edits answer several).
        while pending[i] and pending[i][0] <= at:
            latencies.append((at - pending[i].pop(0)) * 1000)
    unanswered = sum(len(v) for v in pending.values())
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else float("nan")

    label_calls = Counter(r.operation_id for step, a, b in steps for r in fake.requests[a:b] if step == "label")
    return {
        "prs": args.prs,
        "rate_per_s": args.rate,
        "events": total,
        "edits": edits,
        "unanswered": unanswered,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "api_requests_label_step": round(sum(label_calls.values()) / max(1, len(steps)), 1),
        "api_requests_check_flip_step": round(flips / max(1, total), 1),
        "label_step_calls": dict(sorted((k or "?", v / max(1, len(steps))) for k, v in label_calls.items())),
        "violations": len(fake.violations),
    }


def labelled(fake: FakeGitHub, i: int, head: str) -> bool:
    """The PR has its progress comment and its `Release` check run."""
    runs = fake.check_runs_for(repo_of(i), head)
    return bool(fake.comments_on(repo_of(i), 1)) and any(r["name"] == "Release" for r in runs)


async def settle(fake: FakeGitHub, done: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            await asyncio.sleep(0.02)  # let the check run land too
            return
        await asyncio.sleep(0.005)
    raise RuntimeError("the bot did not answer the label in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prs", type=int, default=200)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(
        f"{results['events']} check events at {args.rate}/s over {args.prs} PRs: {results['edits']} edits, "
        f"p50 {results['p50_ms']} ms, p99 {results['p99_ms']} ms, max {results['max_ms']} ms"
    )
    print(
        f"GitHub API requests per step: label {results['api_requests_label_step']} "
        f"({results['label_step_calls']}), CI flip {results['api_requests_check_flip_step']}"
    )
    detail = results.pop("label_step_calls")
    del detail
    print(json.dumps(results))


if __name__ == "__main__":
    main()
