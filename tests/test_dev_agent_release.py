"""A release deployed by the real dev agent: the bot (its real app, worker and a2a-sdk client) on
127.0.0.1, the fake GitHub, and `python -m devagent` as a separate process that checks the bot's tokens
against the bot's own JWKS and pushes task updates back to `/a2a/push`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from bot.a2a.registry import AgentError
from bot.a2a.runner import PUSH_TOKEN
from bot.app import make_app
from bot.config import Settings
from bot.release import State
from tests.fakes.github import FakeGitHub
from tests.scenario import REPO, Clock, Scenario

ROOT = Path(__file__).resolve().parent.parent
HEAD = "a" * 40
T = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)  # Friday 15:00 in Berlin
CONFIG = """\
timezone: Europe/Berlin
windows:
  - days: [mon-fri]
    hours: "10:00-16:00"
deploy:
  playbook: {playbook}
  environment: production
  parameters:
    environment: "{{environment}}"
    sha: "{{merge_sha}}"
"""
SCRIPTS = {
    "deploy-ok.sh": '#!/bin/sh\nfor n in 1 2 3 4 5; do echo "deploying $1 step $n"; sleep 0.6; done\necho "done $2"\n',
    "deploy-bad.sh": '#!/bin/sh\necho "migrating $1"\necho "error: migration 42 failed" >&2\nexit 1\n',
    "deploy-slow.sh": '#!/bin/sh\necho "starting $1"\nsleep 3\necho "finished"\n',
    "rollback-web.sh": '#!/bin/sh\necho "rolling back $1 from $2"\n',
}
# A playbook that merges the PR itself (deploy.merge_by: agent), pinned to the SHA the bot verified.
MERGE_AND_DEPLOY = """\
import json, os, sys, time, urllib.request
sha, pr = sys.argv[1], sys.argv[2]
pinned = os.environ.get("PIN", "yes") == "yes"
if not pinned:
    print("waiting", flush=True)
    time.sleep(1)
request = urllib.request.Request(
    f"{os.environ['GITHUB_API']}/repos/{os.environ['REPO']}/pulls/{pr}/merge",
    data=json.dumps({"sha": sha, "merge_method": "squash"} if pinned else {"merge_method": "squash"}).encode(),
    method="PUT",
    headers={"Authorization": f"token {os.environ['GITHUB_TOKEN']}", "Accept": "application/vnd.github+json",
             "Content-Type": "application/json"},
)
merged = json.load(urllib.request.urlopen(request))
print(f"merged {sha[:7]} as {merged['sha'][:7]}", flush=True)
time.sleep(1.5)  # deploying
print("deployed", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class World:
    def __init__(self, scenario: Scenario, agent_url: str, agent_log: Path) -> None:
        self.scenario = scenario
        self.agent_url = agent_url
        self.agent_log = agent_log


async def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            assert process.poll() is None, log.read_text()
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered: {log.read_text()}")


def agent_config(tmp_path: Path, agent_url: str, bot_url: str, github: dict[str, str]) -> Path:
    scripts = tmp_path / "playbooks"
    scripts.mkdir()
    for name, text in SCRIPTS.items():
        (scripts / name).write_text(text)
        (scripts / name).chmod(0o755)
    declared = {
        "environment": {"pattern": "^[a-z]+$", "required": True},
        "sha": {"pattern": "^[0-9a-f]{40}$", "required": True},
    }
    playbooks = {
        name.removesuffix(".sh"): {
            "skill": "run_playbook",
            "argv": [str(scripts / name), "{environment}", "{sha}"],
            "timeout_seconds": 30,
            "repos": ["octo-org/*"],
            "parameters": declared,
        }
        for name in SCRIPTS
    }
    playbooks["rollback-web"]["skill"] = "rollback_release"
    (scripts / "merge_and_deploy.py").write_text(MERGE_AND_DEPLOY)
    playbooks["merge-and-deploy"] = {
        "argv": [sys.executable, str(scripts / "merge_and_deploy.py"), "{sha}", "{pr}"],
        "env": github,
        "timeout_seconds": 30,
        "repos": ["octo-org/*"],
        "parameters": {
            "sha": {"pattern": "^[0-9a-f]{40}$", "required": True},
            "pr": {"pattern": "^[0-9]+$", "required": True},
        },
    }
    # The same, careless: it merges whatever the head is by then (no sha).
    playbooks["merge-unpinned"] = {**playbooks["merge-and-deploy"], "env": {**github, "PIN": "no"}}
    config = {
        "url": agent_url,
        "bot": {"issuer": bot_url, "jwks_url": f"{bot_url}/.well-known/jwks.json"},
        "push_urls": [f"{bot_url}/a2a/push"],
        "playbooks": playbooks,
    }
    path = tmp_path / "devagent.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def spawn_agent(config: Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "devagent", "--config", str(config)],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
async def world(tmp_path: Path, app_settings: Settings, fake_github: FakeGitHub) -> AsyncIterator[World]:
    bot_port, agent_port = free_port(), free_port()
    bot_url, agent_url = f"http://127.0.0.1:{bot_port}", f"http://127.0.0.1:{agent_port}"
    clock = Clock()
    fake_github.add_pull(REPO, 7, head_sha=HEAD, title="Faster widgets", user_login="alice")
    fake_github.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    fake_github.set_permission(REPO, "alice", "write")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    settings = app_settings.replace(sticky_debounce=0.0, public_url=bot_url)
    client: TestClient = TestClient(TestServer(make_app(settings, clock=clock), host="127.0.0.1", port=bot_port))  # type: ignore[type-arg]
    await client.start_server()
    log = tmp_path / "devagent.log"
    # The agent's own credentials (in real life a deploy key or token of its own): an installation token.
    github = {"GITHUB_API": fake_github.url, "GITHUB_TOKEN": fake_github.issue_token(99), "REPO": REPO}
    process = spawn_agent(agent_config(tmp_path, agent_url, bot_url, github), tmp_path, log)
    try:
        await wait_for(f"{agent_url}/.well-known/agent-card.json", process, log)
        scenario = Scenario(client, settings, fake_github, clock)
        await scenario.worker.service.agents.registry.add("octo-org", agent_url)  # type: ignore[union-attr]
        yield World(scenario, agent_url, log)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 10)
        await client.close()


async def ship_at_t(world: World, playbook: str | None) -> None:
    """Book with that playbook and move to the slot (None: the release is booked already)."""
    scenario = world.scenario
    if playbook is not None:
        scenario.fake.set_file(REPO, ".github/release-secretary.yml", CONFIG.format(playbook=playbook))
        await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
        release = await scenario.store.get_active_release(REPO, 7)
        assert release is not None and release.state is State.SCHEDULED, release
    scenario.clock.now = T
    await scenario.settle()


async def run_worker_until(scenario: Scenario, state: State) -> None:
    """The worker's own loop (a pool, renders running while a deploy job follows its agent) until the
    release reaches `state`; then whatever is left due."""
    stop = asyncio.Event()
    running = asyncio.create_task(scenario.worker.run(stop))
    try:
        for _ in range(600):
            release = await scenario.store.get_latest_release(REPO, 7)
            if release is not None and release.state is state:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    await scenario.settle()


def sticky_edits(scenario: Scenario) -> list[str]:
    return [
        str((r.json or {}).get("body", ""))
        for r in scenario.fake.calls("issues/update-comment")
        if str((r.json or {}).get("body", "")).startswith("<!-- release-secretary -->")
    ]


async def test_a_playbook_on_the_dev_agent_deploys_the_merge_and_its_lines_reach_the_pr_in_order(world: World) -> None:
    scenario = world.scenario
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", CONFIG.format(playbook="deploy-ok"))
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    scenario.clock.now = T
    # The worker's own loop (a pool): the progress comment is edited while the playbook runs.
    await run_worker_until(scenario, State.RELEASED)
    [merge] = scenario.fake.calls("pulls/merge")
    assert merge.json is not None and merge.json["sha"] == HEAD
    released = await scenario.store.get_latest_release(REPO, 7)
    assert released is not None and released.state is State.RELEASED, released
    assert released.deploy_target == "playbook deploy-ok" and released.deploy_id
    # The agent got the merge commit; its lines reached the progress comment while it ran, in order.
    agents = scenario.worker.service.agents
    assert agents is not None
    [session] = await agents.registry.sessions()
    assert session.parameters == {"environment": "production", "sha": released.merge_sha}
    assert session.log == [*(f"deploying production step {n}" for n in range(1, 6)), f"done {released.merge_sha}"]
    assert [c["state"] for c in session.changes] == ["sending", "working", "completed"]
    shown = [[int(n) for n in re.findall(r"deploying production step (\d)", body)] for body in sticky_edits(scenario)]
    shown = [lines for lines in shown if lines]
    assert len(shown) >= 2, shown  # more than one batch of lines, as they came
    for lines in shown:
        assert lines == list(range(1, len(lines) + 1)), shown  # each edit: the lines so far, in order
    assert [len(lines) for lines in shown] == sorted(len(lines) for lines in shown), shown
    summaries = [a for a in scenario.answers(7) if a.startswith("### ✅ Released")]
    assert len(summaries) == 1 and "playbook deploy-ok" in summaries[0]


async def test_a_playbook_that_exits_1_fails_the_release_with_its_last_lines(world: World) -> None:
    scenario = world.scenario
    await ship_at_t(world, "deploy-bad")
    failed = await scenario.store.get_latest_release(REPO, 7)
    assert failed is not None and failed.state is State.FAILED, failed
    said = scenario.answers(7)[-1].replace("\\", "")
    assert "@alice" in said and "deploy-bad on the dev agent failed" in said and "exit 1" in said
    assert "error: migration 42 failed" in said
    assert "error: migration 42 failed" in scenario.sticky(7)["body"]


async def test_a_skill_missing_from_the_agent_card_is_named(world: World) -> None:
    agents = world.scenario.worker.service.agents
    assert agents is not None
    agent = await agents.registry.for_repo(REPO)
    assert agent is not None
    with pytest.raises(AgentError, match=r"has no skill tail_logs \(its skills: run_playbook, rollback_release\)"):
        await agents.registry.require_skill(agent, "tail_logs")


async def test_a_release_whose_agent_cannot_be_reached_is_not_merged(world: World) -> None:
    scenario = world.scenario
    agents = scenario.worker.service.agents
    assert agents is not None
    await agents.registry.add(REPO, "http://127.0.0.1:9")  # nothing listens there; the repo scope wins
    await ship_at_t(world, "deploy-ok")
    assert scenario.fake.calls("pulls/merge") == []
    said = scenario.answers(7)[-1].replace("\\", "")
    assert "did not go ahead" in said and "the dev agent at http://127.0.0.1:9 could not be reached" in said


async def test_push_notifications_need_the_bot_token_and_the_task_secret(world: World) -> None:
    scenario = world.scenario
    client = scenario.client
    event = {"statusUpdate": {"taskId": "t-1", "contextId": "c-1", "status": {"state": "TASK_STATE_COMPLETED"}}}
    answer = await client.post("/a2a/push", json=event)
    assert answer.status == 401 and "push token" in (await answer.json())["error"]
    agents = scenario.worker.service.agents
    assert agents is not None
    token = await agents.push_token()
    answer = await client.post(
        "/a2a/push", json=event, headers={"Authorization": f"Bearer {token}", "X-A2A-Notification-Token": "guess"}
    )
    assert answer.status == 401 and "no task of this bot" in (await answer.json())["error"]
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert [k["kty"] for k in jwks["keys"]] == ["OKP"] and "d" not in jwks["keys"][0]


async def test_the_outcome_reaches_the_release_through_a_push_when_the_worker_died_mid_deploy(
    world: World,
) -> None:
    """The worker that follows the stream is gone (its task cancelled mid-deploy, as a killed process
    leaves it); the agent's push notification, queued by the web side, still ends the release."""
    scenario = world.scenario
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", CONFIG.format(playbook="deploy-slow"))
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    scenario.clock.now = T
    following = asyncio.create_task(scenario.settle())
    agents = scenario.worker.service.agents
    assert agents is not None
    for _ in range(400):  # until the playbook runs on the agent
        sessions = await agents.registry.sessions()
        if sessions and sessions[0].task_id and sessions[0].log:
            break
        await asyncio.sleep(0.05)
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    releasing = await scenario.store.get_active_release(REPO, 7)
    assert releasing is not None and releasing.state is State.RELEASING
    # The agent finishes on its own and pushes the final state to /a2a/push; a worker applies it.
    for _ in range(400):
        await scenario.settle()
        done = await scenario.store.get_latest_release(REPO, 7)
        if done is not None and done.state is State.RELEASED:
            break
        await asyncio.sleep(0.1)
    done = await scenario.store.get_latest_release(REPO, 7)
    assert done is not None and done.state is State.RELEASED, (done, world.agent_log.read_text()[-2000:])


@pytest.mark.parametrize("over", [False, True], ids=["still-running", "over-by-then"])
async def test_a_restarted_worker_resumes_the_task_when_the_push_notifications_were_lost(
    world: World, over: bool
) -> None:
    """The worker following the stream dies mid-deploy and the agent's pushes never arrive (the bot's
    push token changed under them); the deploy job, taken over when its lease lapses, finds the session
    it started and follows the same task to its end: SubscribeToTask while it runs, GetTask when it is
    over by then (the agent refuses to subscribe to a finished task)."""
    scenario = world.scenario
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", CONFIG.format(playbook="deploy-slow"))
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    agents = scenario.worker.service.agents
    assert agents is not None
    scenario.clock.now = T
    following = asyncio.create_task(scenario.settle())
    for _ in range(400):
        sessions = await agents.registry.sessions()
        if sessions and sessions[0].task_id and sessions[0].log:
            break
        await asyncio.sleep(0.05)
    await agents.vault.put(PUSH_TOKEN, "not-the-token-the-agent-has", now=T)
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    assert (await scenario.store.get_active_release(REPO, 7)).state is State.RELEASING  # type: ignore[union-attr]
    if over:
        await asyncio.sleep(3.5)  # the playbook ends while no worker follows it
    scenario.clock.advance(seconds=scenario.settings.worker_lease_seconds + 1)  # the dead worker's lease lapses
    await scenario.settle()
    done = await scenario.store.get_latest_release(REPO, 7)
    assert done is not None and done.state is State.RELEASED, (done, world.agent_log.read_text()[-2000:])
    [session] = await agents.registry.sessions()
    assert session.log == ["starting production", "finished"]
    assert len(scenario.fake.calls("pulls/merge")) == 1
    assert [c["state"] for c in session.changes] == ["sending", "working", "completed"]


async def test_a_missing_agent_is_reported_at_t_minus_15_and_the_release_goes_ahead_once_it_is_back(
    world: World,
) -> None:
    scenario = world.scenario
    agents = scenario.worker.service.agents
    assert agents is not None
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", CONFIG.format(playbook="deploy-ok"))
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    await agents.registry.add(REPO, "http://127.0.0.1:9")  # a wrong address for this repository
    scenario.clock.now = T - timedelta(minutes=15)
    await scenario.settle()
    blocked = await scenario.store.get_active_release(REPO, 7)
    assert blocked is not None and blocked.state is State.BLOCKED
    assert "the dev agent at http://127.0.0.1:9 could not be reached" in scenario.sticky(7)["body"].replace("\\", "")
    assert await agents.registry.remove(REPO)  # fixed: the organisation's agent serves it again
    await ship_at_t(world, None)
    released = await scenario.store.get_latest_release(REPO, 7)
    assert released is not None and released.state is State.RELEASED, released


async def test_merge_by_the_agent_merges_the_verified_sha_and_deploys_in_one_run(world: World) -> None:
    scenario = world.scenario
    config = CONFIG.format(playbook="merge-and-deploy").replace(
        '  parameters:\n    environment: "{environment}"\n    sha: "{merge_sha}"\n',
        '  merge_by: agent\n  parameters:\n    sha: "{sha}"\n    pr: "{pr}"\n',
    )
    assert "merge_by: agent" in config
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", config)
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    scenario.clock.now = T
    await run_worker_until(scenario, State.RELEASED)
    [merge] = scenario.fake.calls("pulls/merge")
    assert merge.json is not None and merge.json["sha"] == HEAD  # the agent's merge, pinned by the bot's {sha}
    assert merge.headers["user-agent"].startswith("Python-urllib")  # sent by the playbook, not by the bot
    released = await scenario.store.get_latest_release(REPO, 7)
    assert released is not None and released.state is State.RELEASED, (released, world.agent_log.read_text()[-1500:])
    assert released.merge_sha == scenario.fake.pull(REPO, 7)["merge_commit_sha"]
    agents = scenario.worker.service.agents
    assert agents is not None
    [session] = await agents.registry.sessions()  # one run: merged and deployed, not run again to deploy
    assert session.log == [f"merged {HEAD[:7]} as {released.merge_sha[:7]}", "deployed"]
    # Its lines showed while it ran, before the bot knew it had merged.
    assert any(f"text\nmerged {HEAD[:7]} as" in body for body in sticky_edits(scenario))  # in the deploy log


async def test_an_agent_that_merged_another_head_fails_the_release(world: World) -> None:
    scenario = world.scenario
    config = CONFIG.format(playbook="merge-unpinned").replace(
        '  parameters:\n    environment: "{environment}"\n    sha: "{merge_sha}"\n',
        '  merge_by: agent\n  parameters:\n    sha: "{sha}"\n    pr: "{pr}"\n',
    )
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", config)
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    scenario.clock.now = T
    running = asyncio.create_task(scenario.settle())
    agents = scenario.worker.service.agents
    assert agents is not None
    for _ in range(400):  # the playbook started, and waits a second before it merges
        sessions = await agents.registry.sessions()
        if sessions and sessions[0].log:
            break
        await asyncio.sleep(0.05)
    scenario.fake.push_to_pull(REPO, 7, "c" * 40)  # someone pushes meanwhile (green, so GitHub lets it merge)
    scenario.fake.add_check_run(REPO, "c" * 40, "ci/build", status="completed", conclusion="success")
    await running
    failed = await scenario.store.get_latest_release(REPO, 7)
    assert failed is not None and failed.state is State.FAILED, failed
    said = scenario.answers(7)[-1]
    assert f"the dev agent merged ccccccc, not the verified {HEAD[:7]}" in said


async def test_push_notifications_are_checked_against_the_session_they_name(world: World) -> None:
    """A real session's task: a wrong secret, another session's secret, then the right one."""
    scenario = world.scenario
    agents = scenario.worker.service.agents
    assert agents is not None
    agent = await agents.registry.for_repo(REPO)
    assert agent is not None
    sessions = []
    for n, secret in enumerate(("secret-a", "secret-b")):
        session = await agents.registry.open_session(
            agent,
            skill="run_playbook",
            playbook="deploy-ok",
            parameters={},
            repo=REPO,
            release=f"{REPO}#7/{n + 1}",
            requested_by="alice",
            push_secret=secret,
        )
        session.task_id = f"task-{n}"
        await agents.registry.save(session)
        sessions.append(session)
    token = await agents.push_token()
    event = {
        "statusUpdate": {"taskId": "task-0", "contextId": sessions[0].id, "status": {"state": "TASK_STATE_WORKING"}}
    }

    async def push(secret: str) -> int:
        headers = {"Authorization": f"Bearer {token}", "X-A2A-Notification-Token": secret}
        return (await scenario.client.post("/a2a/push", json=event, headers=headers)).status

    assert await push("wrong") == 401
    assert await push("secret-b") == 401  # session B's secret does not open session A's task
    assert await scenario.store.claim_jobs("t", now=scenario.clock.now, lease_seconds=5, limit=50) == []
    assert await push("secret-a") == 200
    [job] = await scenario.store.claim_jobs("t", now=scenario.clock.now, lease_seconds=5, limit=50)
    assert job.kind == "agent-push" and job.payload["session"] == sessions[0].key


async def test_a_playbook_past_the_deploy_timeout_is_cancelled_on_the_agent_and_fails_the_release(
    world: World,
) -> None:
    scenario = world.scenario
    config = CONFIG.format(playbook="deploy-slow").replace(
        "  environment: production\n", "  environment: production\n  timeout_minutes: 1\n"
    )
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", config)
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    agents = scenario.worker.service.agents
    assert agents is not None
    scenario.clock.now = T
    stop = asyncio.Event()
    running = asyncio.create_task(scenario.worker.run(stop))
    try:
        for _ in range(400):
            sessions = await agents.registry.sessions()
            if sessions and sessions[0].log:
                break
            await asyncio.sleep(0.05)
        scenario.clock.now = T + timedelta(minutes=2)  # the deploy's minute is up while it still runs
        for _ in range(400):
            failed = await scenario.store.get_latest_release(REPO, 7)
            if failed is not None and failed.state is State.FAILED:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    await scenario.settle()  # what the decision queued (the reply) goes out
    failed = await scenario.store.get_latest_release(REPO, 7)
    assert failed is not None and failed.state is State.FAILED, failed
    assert "no result from playbook deploy-slow after 1 minute." in scenario.answers(7)[-1]
    for _ in range(100):  # the agent's word that it stopped: on the stream, or by push
        [session] = await agents.registry.sessions()
        if session.state == "canceled":
            break
        await asyncio.sleep(0.1)
        await scenario.settle()
    assert session.state == "canceled" and "finished" not in session.log  # stopped on the agent, not waited for


async def test_ship_rollback_runs_the_rollback_playbook_on_the_agent(world: World) -> None:
    scenario = world.scenario
    config = CONFIG.format(playbook="deploy-ok").replace(
        "  environment: production\n", "  environment: production\n  rollback_playbook: rollback-web\n"
    )
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", config)
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    await ship_at_t(world, None)
    released = await scenario.store.get_latest_release(REPO, 7)
    assert released is not None and released.state is State.RELEASED and released.merge_sha
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship rollback", sender="alice"))
    rolled = await scenario.store.get_latest_release(REPO, 7)
    assert rolled is not None and rolled.state is State.ROLLED_BACK, rolled
    assert rolled.rollback_id and rolled.rollback_id.startswith("agent:")
    agents = scenario.worker.service.agents
    assert agents is not None
    rollback = [s for s in await agents.registry.sessions() if s.skill == "rollback_release"]
    assert [s.log for s in rollback] == [[f"rolling back production from {released.merge_sha}"]]
    assert rollback[0].requested_by == "alice" and rollback[0].state == "completed"
    assert "was rolled back" in scenario.answers(7)[-1]
    # Asked again: it is done already, nothing runs twice.
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship rollback", sender="alice"))
    assert "this release was rolled back already (agent:" in scenario.answers(7)[-1]
    assert len([s for s in await agents.registry.sessions() if s.skill == "rollback_release"]) == 1
