"""Dev agent round trip: from `SendStreamingMessage` to the first progress event and to completion, for
a trivial playbook, over N runs.

The real `python -m devagent` runs as its own process on 127.0.0.1 and checks every token against the
JWKS the bot's key manager publishes (served here by a small aiohttp app); the bot side is the real
client (`bot.a2a.client`, a2a-sdk over httpx) with a fresh signed token per request.

    python bench/a2a_roundtrip.py [--runs 50]

Last line: JSON with first_event_ms_p50, first_event_ms_p99, complete_ms_p50, complete_ms_p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.a2a.client import open_call  # noqa: E402
from bot.a2a.keys import AgentKeys  # noqa: E402
from bot.secrets import SecretBox, Vault, generate_key  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spawn(config: Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "devagent", "--config", str(config)],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def main(runs: int) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = SqliteStore(tmp / "bench.db")
        await store.open()
        keys = AgentKeys(Vault(store, SecretBox((generate_key(),))), lambda: datetime.now(UTC))
        bot_port, agent_port = free_port(), free_port()
        bot_url, agent_url = f"http://127.0.0.1:{bot_port}", f"http://127.0.0.1:{agent_port}"

        async def jwks(request: web.Request) -> web.Response:
            return web.json_response(await keys.jwks())

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", jwks)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", bot_port).start()
        script = tmp / "hello.sh"
        script.write_text('#!/bin/sh\necho "hello $1"\n')
        script.chmod(0o755)
        config = {
            "url": agent_url,
            "bot": {"issuer": bot_url, "jwks_url": f"{bot_url}/.well-known/jwks.json"},
            "push_urls": [f"{bot_url}/a2a/push"],
            "playbooks": {
                "hello": {
                    "argv": [str(script), "{who}"],
                    "repos": ["octo-org/*"],
                    "parameters": {"who": {"pattern": "^[a-z]+$", "required": True}},
                }
            },
        }
        (tmp / "agent.yml").write_text(yaml.safe_dump(config))
        process = spawn(tmp / "agent.yml", tmp, tmp / "agent.log")
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(200):
                    try:
                        card_answer = await http.get(f"{agent_url}/.well-known/agent-card.json")
                        break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.05)
                else:
                    raise SystemExit((tmp / "agent.log").read_text())
            from a2a.types import AgentCard
            from google.protobuf.json_format import ParseDict

            card = ParseDict(card_answer.json(), AgentCard(), ignore_unknown_fields=True)
            first: list[float] = []
            complete: list[float] = []
            failures = 0
            for _ in range(runs):
                call = open_call(
                    keys,
                    card,
                    issuer=bot_url,
                    audience=agent_url,
                    skill="run_playbook",
                    repo="octo-org/widgets",
                    release="octo-org/widgets#7/1",
                )
                data = {
                    "skill": "run_playbook",
                    "playbook": "hello",
                    "parameters": {"who": "world"},
                    "repo": "octo-org/widgets",
                    "release": "octo-org/widgets#7/1",
                }
                started = time.perf_counter()
                seen_first = None
                state = ""
                try:
                    async for update in call.send(uuid.uuid4().hex, data):
                        if seen_first is None and update.line is not None:
                            seen_first = time.perf_counter() - started
                        if update.final:
                            state = update.state
                            break
                finally:
                    await call.close()
                if state != "completed" or seen_first is None:
                    failures += 1
                    continue
                first.append(seen_first * 1000)
                complete.append((time.perf_counter() - started) * 1000)
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 10)
            await runner.cleanup()
            await store.close()
    return {
        "runs": runs,
        "failures": failures,
        "first_event_ms_p50": round(statistics.median(first), 1),
        "first_event_ms_p99": round(percentile(first, 0.99), 1),
        "complete_ms_p50": round(statistics.median(complete), 1),
        "complete_ms_p99": round(percentile(complete, 0.99), 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    figures = asyncio.run(main(parser.parse_args().runs))
    print(
        f"{figures['runs']} runs ({figures['failures']} failed): first progress event p50 "
        f"{figures['first_event_ms_p50']} ms, p99 {figures['first_event_ms_p99']} ms; completion p50 "
        f"{figures['complete_ms_p50']} ms, p99 {figures['complete_ms_p99']} ms"
    )
    print(json.dumps(figures))
