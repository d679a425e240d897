"""Releases survive a worker killed at random points: the real `python -m bot worker`, SIGKILLed
again and again while six releases (one more asked for in each of the first rounds) go from
`/ship now --force` through the merge and the deploy workflow to released; restarted each time. At
the end every release is released with exactly one merge, one dispatch, one summary comment and one
progress comment."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.secrets import generate_key
from bot.store import NewDelivery
from bot.store.sqlite import SqliteStore
from tests.fakes.github import FakeGitHub
from tests.fakes.keys import AppKey
from tests.helpers import SECRET
from tests.scenario import pr_comment, workflow_run

ROOT = Path(__file__).resolve().parent.parent
REPOS = tuple(f"octo-org/service-{n}" for n in range(6))
CONFIG = 'windows:\n  - days: [mon-sun]\n    hours: "00:00-23:59"\nslot_minutes: 5\ndeploy:\n  workflow: deploy.yml\n'
KILLS = 30
SEED = int(os.environ.get("CRASH_SEED", "20261125"))  # soak runs set other seeds

pytestmark = pytest.mark.slow


async def test_releases_survive_sigkill_at_random_points(
    tmp_path: Path, fake_github: FakeGitHub, app_key: AppKey
) -> None:
    fake_github.add_app(4242, app_key.public_key_pem)
    for i, repo in enumerate(REPOS):
        fake_github.add_repo(repo)
        fake_github.add_installation(100 + i, "octo-org", repos=[repo])
        head = f"{i + 1:040x}"
        fake_github.add_pull(repo, 7, head_sha=head, title=f"Change {i}", user_login="mo")
        fake_github.add_check_run(repo, head, "ci/build", status="completed", conclusion="success")
        fake_github.set_permission(repo, "mo", "maintain")
        fake_github.set_branch_protection(repo, "main", ["ci/build"])
        fake_github.set_file(repo, ".github/release-secretary.yml", CONFIG)
    (tmp_path / "app.pem").write_bytes(app_key.rsa_private_key_pem)
    db = tmp_path / "bot.db"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "DATABASE_PATH": str(db),
        "DATA_DIR": str(tmp_path / "data"),
        "SECRETS_KEY": generate_key(),
        "GITHUB_APP_ID": "4242",
        "GITHUB_PRIVATE_KEY_PATH": str(tmp_path / "app.pem"),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": fake_github.url,
        "GITHUB_WRITE_INTERVAL": "0",
        "STICKY_DEBOUNCE_SECONDS": "0",
        "WORKER_LEASE_SECONDS": "1",
        "WORKER_POLL_INTERVAL": "0.05",
        "WORKER_MAX_ATTEMPTS": "50",
        "REDELIVERY_SWEEP_INTERVAL": "0",
        "CALENDAR_SWEEP_INTERVAL": "0",
        "RECONCILE_INTERVAL": "0",
        "LOG_LEVEL": "INFO",
    }
    store = SqliteStore(db)
    await store.open()
    try:
        rng = random.Random(SEED)
        finished: set[str] = set()
        mid_flight = 0  # kills that landed while some release was between asked and released
        for round_ in range(KILLS):
            if round_ < len(REPOS):
                repo = REPOS[round_]
                await deliver(
                    store, "issue_comment", comment(repo, 100 + round_, fake_github), installation=100 + round_
                )
            worker = start(env, tmp_path, round_)
            try:
                # Kills land while the worker starts, and then at random points of its work. The delay is
                # counted from its "worker started" line, so a slow machine does not turn every kill
                # into one before any work.
                if rng.random() < 0.1:
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                else:
                    await started(worker, tmp_path, round_)
                    await asyncio.sleep(rng.uniform(0.0, 0.6))
                await answer_dispatches(store, fake_github, finished)
            finally:
                worker.send_signal(signal.SIGKILL)
                await asyncio.to_thread(worker.wait, 10)
            states = [await latest_state(store, repo) for repo in REPOS]
            mid_flight += any(state not in (None, "released") for state in states)
        worker = start(env, tmp_path, KILLS)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                await answer_dispatches(store, fake_github, finished)
                if all(
                    [await latest_state(store, repo) == "released" and summaries(fake_github, repo) for repo in REPOS]
                ):
                    break
                await asyncio.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(worker.wait, 30)
        assert mid_flight >= 3, mid_flight  # some kills did land in the middle of releases
        for repo in REPOS:
            assert await latest_state(store, repo) == "released", (repo, await story(store, tmp_path, repo))
            merges = [r for r in fake_github.calls("pulls/merge") if r.path.startswith(f"/repos/{repo}/")]
            assert [r.status for r in merges].count(200) == 1, (repo, [r.status for r in merges])
            dispatches = [d for d in fake_github.workflow_dispatches if d["repo"] == repo]
            assert len(dispatches) == 1, (repo, dispatches)
            bot_comments = [c for c in fake_github.comments_on(repo, 7) if c["user"]["type"] == "Bot"]
            stickies = [c for c in bot_comments if c["body"].startswith("<!-- release-secretary -->")]
            assert len(stickies) == 1 and len(summaries(fake_github, repo)) == 1, (
                repo,
                [c["body"][:40] for c in bot_comments],
            )
        assert fake_github.violations == []
    finally:
        await store.close()


def start(env: dict[str, str], cwd: Path, round_: int) -> subprocess.Popen[bytes]:
    with (cwd / f"worker-{round_}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=env, cwd=cwd, stderr=log)


async def started(worker: subprocess.Popen[bytes], cwd: Path, round_: int) -> None:
    """Until the worker has logged that it started (it is up and claiming work)."""
    log = cwd / f"worker-{round_}.log"
    deadline = time.monotonic() + 30
    while b"worker started" not in log.read_bytes():
        assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.02)


def summaries(fake: FakeGitHub, repo: str) -> list[dict[str, Any]]:
    return [
        c for c in fake.comments_on(repo, 7) if c["user"]["type"] == "Bot" and c["body"].startswith("### ✅ Released")
    ]


def comment(repo: str, installation: int, fake: FakeGitHub) -> dict[str, object]:
    comment_id = fake.add_comment(repo, 7, "/ship now --force", user_login="mo")
    data = pr_comment(7, "/ship now --force", sender="mo", comment_id=comment_id, repo=repo)
    data["installation"] = {"id": installation}
    return data


async def deliver(store: SqliteStore, event: str, data: dict[str, object], *, installation: int) -> None:
    delivery = str(uuid.uuid4())
    await store.record_delivery(
        NewDelivery(
            key=f"4242:{delivery}",
            delivery_id=delivery,
            event=event,
            action=str(data.get("action")),
            installation_id=installation,
            body=json.dumps(data).encode(),
            received_at=datetime.now(UTC),
        )
    )


async def answer_dispatches(store: SqliteStore, fake: FakeGitHub, finished: set[str]) -> None:
    """GitHub's side: each dispatched deploy run completes, and its workflow_run webhook arrives."""
    for run in list(fake.workflow_runs.values()):
        key = f"{run.repo}:{run.id}"
        if run.event != "workflow_dispatch" or key in finished:
            continue
        run.status, run.conclusion = "completed", "success"
        finished.add(key)
        data = workflow_run(run.id, run.head_sha, workflow="deploy.yml", repo=run.repo)
        data["installation"] = {"id": 100 + REPOS.index(run.repo)}
        await deliver(store, "workflow_run", data, installation=100 + REPOS.index(run.repo))


async def story(store: SqliteStore, cwd: Path, repo: str) -> list[str]:
    """What a stuck release went through, and the jobs left for it: the failure message says why."""
    release = await store.get_latest_release(repo, 7)
    lines = [f"{t.at:%H:%M:%S} {t.to_state.value}: {t.reason}" for t in release.audit] if release else []
    with sqlite3.connect(cwd / "bot.db") as conn:
        rows = conn.execute(
            "SELECT key, kind, status, attempts, due_at, last_error FROM jobs WHERE key LIKE ?", (f"%{repo}%",)
        ).fetchall()
    logs = [
        line
        for n in range(KILLS + 1)
        for line in (cwd / f"worker-{n}.log").read_text().splitlines()
        if '"WARNING"' in line or '"ERROR"' in line
    ]
    return lines + [repr(row) for row in rows] + logs[-15:]


async def latest_state(store: SqliteStore, repo: str) -> str | None:
    release = await store.get_latest_release(repo, 7)
    return release.state.value if release else None
