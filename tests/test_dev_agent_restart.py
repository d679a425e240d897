"""The bot process killed while its dev agent runs the deploy: the real `python -m bot serve` (web and
worker) is SIGKILLed mid-playbook and started again, shortly (the agent's push notifications of the end
arrive) or only once the playbook is over (its pushes were lost: the deploy job, taken over, reads the
task). Either way the outcome reaches the release, with one merge, one agent run and one summary."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from bot.a2a.registry import Registry
from bot.secrets import generate_key
from bot.store import NewDelivery
from bot.store.sqlite import SqliteStore
from tests.fakes.github import FakeGitHub
from tests.fakes.keys import AppKey
from tests.helpers import SECRET
from tests.scenario import pr_comment
from tests.test_dev_agent_release import free_port

ROOT = Path(__file__).resolve().parent.parent
REPO = "octo-org/service"
CONFIG = """\
windows:
  - days: [mon-sun]
    hours: "00:00-23:59"
deploy:
  playbook: deploy-slow
  parameters:
    sha: "{merge_sha}"
"""
PLAYBOOK = '#!/bin/sh\necho "deploying $1"\nsleep 3\necho "deployed"\n'

pytestmark = pytest.mark.slow


def spawn(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


async def until(what: str, check: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("down_for", [0.5, 5.0], ids=["back-before-the-end", "back-after-the-end"])
async def test_a_bot_killed_while_the_agent_deploys_gets_the_outcome_after_restart(
    tmp_path: Path, fake_github: FakeGitHub, app_key: AppKey, down_for: float
) -> None:
    fake_github.add_app(4242, app_key.public_key_pem)
    fake_github.add_repo(REPO)
    fake_github.add_installation(100, "octo-org", repos=[REPO])
    head = "d" * 40
    fake_github.add_pull(REPO, 7, head_sha=head, title="Change", user_login="mo")
    fake_github.add_check_run(REPO, head, "ci/build", status="completed", conclusion="success")
    fake_github.set_permission(REPO, "mo", "maintain")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    fake_github.set_file(REPO, ".github/release-secretary.yml", CONFIG)
    (tmp_path / "app.pem").write_bytes(app_key.rsa_private_key_pem)
    bot_port, agent_port = free_port(), free_port()
    bot_url, agent_url = f"http://127.0.0.1:{bot_port}", f"http://127.0.0.1:{agent_port}"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "HOST": "127.0.0.1",
        "PORT": str(bot_port),
        "PUBLIC_URL": bot_url,
        "DATABASE_PATH": str(tmp_path / "bot.db"),
        "DATA_DIR": str(tmp_path / "data"),
        "SECRETS_KEY": generate_key(),
        "GITHUB_APP_ID": "4242",
        "GITHUB_PRIVATE_KEY_PATH": str(tmp_path / "app.pem"),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": fake_github.url,
        "GITHUB_WRITE_INTERVAL": "0",
        "STICKY_DEBOUNCE_SECONDS": "0",
        "WORKER_LEASE_SECONDS": "2",
        "WORKER_POLL_INTERVAL": "0.05",
        "REDELIVERY_SWEEP_INTERVAL": "0",
        "CALENDAR_SWEEP_INTERVAL": "0",
        "RECONCILE_INTERVAL": "0",
    }
    script = tmp_path / "deploy-slow.sh"
    script.write_text(PLAYBOOK)
    script.chmod(0o755)
    agent_config = {
        "url": agent_url,
        "bot": {"issuer": bot_url, "jwks_url": f"{bot_url}/.well-known/jwks.json"},
        "push_urls": [f"{bot_url}/a2a/push"],
        "playbooks": {
            "deploy-slow": {
                "argv": [str(script), "{sha}"],
                "repos": ["octo-org/*"],
                "parameters": {"sha": {"pattern": "^[0-9a-f]{40}$", "required": True}},
            }
        },
    }
    (tmp_path / "agent.yml").write_text(yaml.safe_dump(agent_config))
    store = SqliteStore(tmp_path / "bot.db")
    await store.open()
    agent = spawn(
        [sys.executable, "-m", "devagent", "--config", str(tmp_path / "agent.yml")], env, tmp_path, tmp_path / "a.log"
    )
    bot = spawn([sys.executable, "-m", "bot", "serve"], env, tmp_path, tmp_path / "bot.log")
    registry = Registry(store, lambda: datetime.now(UTC))
    try:
        async with httpx.AsyncClient() as http:

            async def up(url: str) -> bool:
                try:
                    return (await http.get(url)).status_code == 200
                except httpx.HTTPError:
                    return False

            await until("the agent", lambda: up(f"{agent_url}/.well-known/agent-card.json"))
            await until("the bot", lambda: up(f"{bot_url}/healthz"))
            await registry.add("octo-org", agent_url)
            comment_id = fake_github.add_comment(REPO, 7, "/ship now --force", user_login="mo")
            data = pr_comment(7, "/ship now --force", sender="mo", comment_id=comment_id, repo=REPO)
            data["installation"] = {"id": 100}
            delivery = str(uuid.uuid4())
            await store.record_delivery(
                NewDelivery(
                    key=f"4242:{delivery}",
                    delivery_id=delivery,
                    event="issue_comment",
                    action="created",
                    installation_id=100,
                    body=json.dumps(data).encode(),
                    received_at=datetime.now(UTC),
                )
            )

            async def running() -> bool:
                sessions = await registry.sessions()
                return bool(sessions and sessions[0].task_id and sessions[0].log)

            await until("the playbook to run", running)
            bot.send_signal(signal.SIGKILL)
            await asyncio.to_thread(bot.wait, 10)
            await asyncio.sleep(down_for)
            bot = spawn([sys.executable, "-m", "bot", "serve"], env, tmp_path, tmp_path / "bot.log")

            async def released() -> bool:
                """Released, and its summary out (the reply is queued with the change, sent after it)."""
                release = await store.get_latest_release(REPO, 7)
                summaries = [c for c in fake_github.comments_on(REPO, 7) if c["body"].startswith("### ✅ Released")]
                return release is not None and release.state.value == "released" and bool(summaries)

            await until("the release to be released", released, seconds=60)
        sessions = await registry.sessions()
    finally:
        bot.send_signal(signal.SIGTERM)
        agent.send_signal(signal.SIGTERM)
        await asyncio.to_thread(bot.wait, 30)
        await asyncio.to_thread(agent.wait, 30)
        await store.close()
    # One run on the agent, followed to its end; one merge; one summary.
    assert [s.log for s in sessions] == [[f"deploying {fake_github.pull(REPO, 7)['merge_commit_sha']}", "deployed"]]
    assert sessions[0].state == "completed"
    assert [r.status for r in fake_github.calls("pulls/merge")].count(200) == 1
    summaries = [c for c in fake_github.comments_on(REPO, 7) if c["body"].startswith("### ✅ Released")]
    assert len(summaries) == 1, (tmp_path / "bot.log").read_text()[-3000:]
    if down_for > 3:  # nobody took the end's push: the restarted worker read the finished task instead
        assert "reading the task" in (tmp_path / "bot.log").read_text()
