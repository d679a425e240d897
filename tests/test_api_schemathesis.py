"""Schemathesis against the live REST API: the real app and worker on a port of 127.0.0.1, the fake GitHub
behind them, a few PRs tracked from signed webhooks and some releases; `st run` in a subprocess tests every
operation but the endless event stream, and the run must find nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.api.tokens import ApiTokens
from bot.app import STORE, make_app
from bot.config import Settings
from bot.store import Store
from bot.store.base import Installation
from tests.fakes.github import FakeGitHub
from tests.helpers import webhook_headers
from tests.scenario import INSTALLATION, REPO, Clock, labeled

pytestmark = pytest.mark.slow

CONFIG = 'timezone: Europe/Berlin\nwindows:\n  - days: [mon-fri]\n    hours: "10:00-16:00"\n'
PRS = (1, 2, 3, 4)
FIRST = {pr: f"{pr:x}0" * 20 for pr in PRS}  # each PR's first commit
HEAD = {pr: f"{pr:x}f" * 20 for pr in PRS}  # and its head
EXAMPLES = 100  # per operation and phase: the whole run stays well under a minute on two cores
SEED = 20261125
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def arrange(fake: FakeGitHub) -> None:
    """Four open PRs with two commits each, reviews, a required check and a commit status on each head."""
    fake.set_file(REPO, ".github/release-secretary.yml", CONFIG)
    fake.set_branch_protection(REPO, "main", ["ci/build"])
    fake.set_permission(REPO, "alice", "write")
    fake.set_permission(REPO, "bob", "read")
    for pr in PRS:
        fake.add_pull(
            REPO, pr, head_sha=HEAD[pr], title=f"Change {pr}", user_login="alice", commits=[FIRST[pr], HEAD[pr]]
        )
        fake.set_commit(FIRST[pr], f"Start change {pr}", author_login="alice")
        fake.set_commit(HEAD[pr], f"Finish change {pr}\n\nWith a body.", author_login="alice")
        fake.add_review(REPO, pr, user_login="bob", state="CHANGES_REQUESTED", commit_id=FIRST[pr])
        fake.add_check_run(REPO, HEAD[pr], "ci/build", status="completed", conclusion="success")
        fake.add_status(REPO, HEAD[pr], "ci/lint", "success", description="lint passed", target_url="https://ci.test/1")
    fake.add_review(REPO, 1, user_login="bob", state="APPROVED")


async def seed(base: str, store: Store, token: str) -> None:
    """PRs tracked from webhooks (a plain label on 1-3, the release label on 4), then releases through the API:
    PR 2 booked, PR 3 booked and cancelled."""
    async with aiohttp.ClientSession() as session:

        async def deliver(event: str, data: dict[str, Any]) -> None:
            body = json.dumps(data).encode()
            async with session.post(f"{base}/webhooks/github", data=body, headers=webhook_headers(event, body)) as r:
                assert r.status == 202, await r.text()

        async def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(f"{base}/api/v1/repos/{REPO}/prs{path}", json=body, headers=headers) as r:
                answer: dict[str, Any] = await r.json(content_type=None)
                assert r.status == 200, answer
                return answer

        for pr in (1, 2, 3):
            await deliver("pull_request", labeled(pr, HEAD[pr], sender="alice", label="bug"))
        await deliver("pull_request", labeled(4, HEAD[4], sender="alice"))

        async def tracked() -> bool:
            pulls, _ = await store.list_pull_states(repos=[REPO], limit=10)
            return len(pulls) == len(PRS) and await store.get_latest_release(REPO, 4) is not None

        await until(tracked)
        assert (await call("/2/schedule", {"when": "monday 11:00"}))["release"] is not None
        assert (await call("/3/schedule", {"when": "tuesday 11:00"}))["release"] is not None
        assert (await call("/3/cancel", {"reason": "not this week"}))["release"]["state"] == "cancelled"


async def until(done: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await done():
        if time.monotonic() > deadline:
            raise AssertionError("the worker did not track the PRs in time")
        await asyncio.sleep(0.05)


def schemathesis_config() -> str:
    """Known identifiers, drawn most of the time so the cases reach past 404 into the operations' logic."""
    shas = [*FIRST.values(), *HEAD.values()]
    dictionaries = {
        "owners": ["octo-org"],
        "names": ["widgets"],
        "prs": list(PRS),
        "shas": shas,
        "prefixes": [sha[:7] for sha in shas],
        "releases": [1],
        "repos": [REPO],
        "labels": ["bug", "Ready for Prod"],
        "logins": ["bob", "alice"],
    }
    bindings = {
        "path.owner": ("owners", 0.9),
        "path.name": ("names", 0.9),
        "path.number": ("prs", 0.7),
        "path.sha": ("shas", 0.7),
        "path.release": ("releases", 0.6),
        "query.repo": ("repos", 0.6),
        "query.label": ("labels", 0.5),
        "query.since_sha": ("prefixes", 0.5),
        "query.reviewer": ("logins", 0.5),
    }
    lines = ["[dictionaries]"]
    lines += [f"{name} = {{ values = {json.dumps(values)} }}" for name, values in dictionaries.items()]
    lines += ["", "[parameters]"]
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = {p} }}' for key, (name, p) in bindings.items()]
    return "\n".join(lines) + "\n"


async def run_schemathesis(port: int, token: str, workdir: Path) -> tuple[int, str]:
    config = workdir / "schemathesis.toml"
    config.write_text(schemathesis_config())
    # Only 127.0.0.1: no proxy; Schemathesis 4 has no telemetry or upload to turn off.
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("SCHEMATHESIS")}
    env |= {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "NO_COLOR": "1", "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"http://127.0.0.1:{port}/api/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--exclude-operation-id",
        "events",  # a server-sent event stream never ends
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--output-truncate",
        "false",
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        return -1, "schemathesis did not finish in 90 s:\n" + output.decode(errors="replace")
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_schemathesis_finds_nothing_in_the_live_api(
    app_settings: Settings, fake_github: FakeGitHub, tmp_path: Path
) -> None:
    arrange(fake_github)
    clock = Clock()
    settings = app_settings.replace(reconcile_interval=0.0, calendar_sweep_interval=0.0, redelivery_sweep_interval=0.0)
    app = make_app(settings, run_worker=True, clock=clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        store = app[STORE]
        await store.save_installation(Installation(id=INSTALLATION, account_login="octo-org", repositories=(REPO,)))
        token, _ = await ApiTokens(store, clock).create(
            name="schemathesis", login="alice", repos=[REPO], scopes=["read", "write"]
        )
        await seed(f"http://127.0.0.1:{port}", store, token)
        workdir = tmp_path / "schemathesis"
        workdir.mkdir()
        code, output = await run_schemathesis(port, token, workdir)
    finally:
        await runner.cleanup()
    problems = []
    if code != 0:
        # The report as Schemathesis wrote it: each failing case with the curl line that reproduces it.
        problems.append(f"schemathesis exited {code}:\n{output}")
    if fake_github.violations:
        problems.append("requests of the bot that break GitHub's description:\n" + "\n".join(fake_github.violations))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
