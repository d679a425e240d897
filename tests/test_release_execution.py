"""The release at its slot, end to end: the real app and worker, signed webhooks, the fake GitHub.

`/ship` -> checks green -> scheduled -> T-15 check -> at T the SHA-pinned merge -> summary -> released,
the calendar event marked done; and the ways it must not merge: a push after verification (seen at
T, or only by GitHub's 409), red checks at T, a PR GitHub cannot merge, the environment lock held."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import make_app
from bot.calendar import DONE_PREFIX
from bot.config import Settings
from bot.release import State
from tests.fakes.github import FakeGitHub
from tests.scenario import REPO, Clock, Scenario, deployment_status, suite_completed, synchronize, workflow_run

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
HEAD = "a" * 40
CONFIG = """\
timezone: Europe/Berlin
windows:
  - days: [mon-fri]
    hours: "10:00-16:00"
merge_method: squash
"""
T_MINUS_15 = datetime(2026, 11, 27, 13, 45, tzinfo=UTC)
T = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)  # Friday 15:00 in Berlin


@pytest.fixture
async def scenario(aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub) -> Scenario:
    clock = Clock()
    fake_github.add_pull(REPO, 7, head_sha=HEAD, title="Faster widgets", user_login="alice")
    fake_github.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    fake_github.set_permission(REPO, "alice", "write")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    fake_github.set_file(REPO, ".github/release-secretary.yml", CONFIG)
    settings = app_settings.replace(sticky_debounce=0.0, public_url="https://bot.example.test")
    client = await aiohttp_client(make_app(settings, clock=clock))
    return Scenario(client, settings, fake_github, clock)


async def booked(scenario: Scenario) -> None:
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.SCHEDULED and release.verified_sha == HEAD


async def at(scenario: Scenario, moment: datetime) -> None:
    scenario.clock.now = moment
    await scenario.settle()


async def test_the_whole_life_merges_the_verified_sha_at_the_slot(scenario: Scenario) -> None:
    await booked(scenario)
    await at(scenario, T_MINUS_15)
    assert scenario.fake.calls("pulls/merge") == []  # not before its time
    await at(scenario, T)
    [merge] = scenario.fake.calls("pulls/merge")
    assert merge.json == {"sha": HEAD, "merge_method": "squash", "commit_title": "Faster widgets (#7)"}
    assert scenario.fake.pull(REPO, 7)["merged"] is True
    release = await scenario.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.RELEASED and release.merge_sha
    summary = [a for a in scenario.answers(7) if a.startswith("### ✅ Released")]
    assert len(summary) == 1
    assert f"`{HEAD[:7]}` as `{release.merge_sha[:7]}` (squash)" in summary[0] and "@alice" in summary[0]
    assert "ci/build" in summary[0]
    assert "Released" in scenario.sticky(7)["body"]
    assert scenario.fake.check_runs_for(REPO, HEAD)[-1]["conclusion"] == "success"
    # The calendar says so too.
    assert release.event_id is not None
    event = await scenario.store.get_calendar_event(release.lane, release.event_id)
    assert event is not None and event.summary.startswith(DONE_PREFIX)
    # Nothing happens twice: more passes of the worker merge and summarise nothing more.
    await at(scenario, T + timedelta(minutes=5))
    assert len(scenario.fake.calls("pulls/merge")) == 1
    assert len([a for a in scenario.answers(7) if a.startswith("### ✅ Released")]) == 1
    assert scenario.fake.violations == []


async def test_a_push_seen_at_the_slot_stops_the_merge(scenario: Scenario) -> None:
    await booked(scenario)
    scenario.fake.push_to_pull(REPO, 7, "b" * 40)  # its webhook never arrived
    await at(scenario, T)
    assert scenario.fake.calls("pulls/merge") == []
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.BLOCKED
    said = scenario.answers(7)
    assert said[-1].startswith("@alice the release at **Fri 27 Nov 15:00-15:30 Europe/Berlin (14:00 UTC)** did not go")
    # The T-minus check (late: it ran at T too) named the push; the release then waits for its checks.
    assert any(f"the head moved to bbbbbbb since {HEAD[:7]} was verified" in s for s in said)
    assert "waiting for ci/build" in said[-1]


async def test_github_refusing_the_pinned_merge_blocks_and_is_not_retried(scenario: Scenario) -> None:
    await booked(scenario)
    # The head moves between the bot's last read and the merge: only GitHub's 409 can tell.
    scenario.fake.fail_next(
        "PUT", r"/pulls/7/merge$", 409, body={"message": "Head branch was modified. Review and try the merge again."}
    )
    await at(scenario, T)
    assert len(scenario.fake.calls("pulls/merge")) == 1
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.BLOCKED
    assert "the head moved after" in release.blockers[0] and "(409)" in release.blockers[0]
    assert "was not merged" in scenario.answers(7)[-1]
    await at(scenario, T + timedelta(minutes=10))
    assert len(scenario.fake.calls("pulls/merge")) == 1  # never retried blindly


async def test_red_checks_at_the_slot_block_with_the_next_slot(scenario: Scenario) -> None:
    await booked(scenario)
    scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="failure")
    await at(scenario, T)
    assert scenario.fake.calls("pulls/merge") == []
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.BLOCKED
    said = scenario.answers(7)[-1]
    assert "ci/build is failing" in said and "`/ship 2026-11-27 15:30`" in said


async def test_a_pull_request_github_cannot_merge_is_not_tried(scenario: Scenario) -> None:
    await booked(scenario)
    scenario.fake._pull_state(REPO, 7).mergeable = False  # a conflict with the base appeared
    await at(scenario, T)
    assert scenario.fake.calls("pulls/merge") == []
    said = scenario.answers(7)[-1]
    assert "GitHub reports the pull request cannot be merged" in said


async def test_the_environment_lock_makes_a_release_wait_then_gives_up_and_says_so(scenario: Scenario) -> None:
    await booked(scenario)
    lane = f"{REPO} production"
    # Another release of the same environment is still running (it took the lock at 13:55).
    assert await scenario.store.acquire_lease(f"env:{lane}", "octo-org/widgets#6/1", now=T, seconds=3600)
    await at(scenario, T)
    for minute in range(1, 16):
        await at(scenario, T + timedelta(minutes=minute))
    assert scenario.fake.calls("pulls/merge") == []
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.BLOCKED
    assert "another release of octo-org/widgets production was still running" in scenario.answers(7)[-1]


async def test_the_environment_lock_freed_in_time_lets_it_merge(scenario: Scenario) -> None:
    await booked(scenario)
    lane = f"{REPO} production"
    assert await scenario.store.acquire_lease(f"env:{lane}", "octo-org/widgets#6/1", now=T, seconds=3600)
    await at(scenario, T)
    await scenario.store.release_lease(f"env:{lane}", "octo-org/widgets#6/1")
    await at(scenario, T + timedelta(minutes=1))
    assert len(scenario.fake.calls("pulls/merge")) == 1
    release = await scenario.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.RELEASED
    # And it gave the lock back.
    assert await scenario.store.acquire_lease(f"env:{lane}", "someone-else", now=T + timedelta(minutes=2), seconds=60)


async def test_a_merge_that_went_through_before_a_crash_is_not_sent_again(scenario: Scenario) -> None:
    await booked(scenario)
    # The worker sent the merge and died before it recorded GitHub's answer: the note says "started",
    # and the pull request is merged on GitHub.
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None
    scenario.fake.fail_next("PUT", r"/pulls/7/merge$", 502, body={"message": "Server Error"})
    await at(scenario, T)
    assert await scenario.store.get_value(f"merge:{release.key}") == f"started {HEAD}"
    pull = scenario.fake._pull_state(REPO, 7)
    pull.merged, pull.merge_commit_sha = True, "c" * 40  # as if that 502 had been a lost 200
    scenario.clock.advance(seconds=30)
    await scenario.settle()
    assert len(scenario.fake.calls("pulls/merge")) == 1  # the first, failed-looking one only
    done = await scenario.store.get_latest_release(REPO, 7)
    assert done is not None and done.state is State.RELEASED and done.merge_sha == "c" * 40


async def deploy_config(scenario: Scenario, extra: str) -> None:
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", CONFIG + extra)
    scenario.worker.service.read._configs.clear()  # the 30-second config cache, as if it had expired


async def test_a_workflow_deploy_is_dispatched_on_the_merge_and_followed_to_released(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  workflow: deploy.yml\n")
    await booked(scenario)
    await at(scenario, T)
    [dispatch] = scenario.fake.calls("actions/create-workflow-dispatch")
    assert dispatch.path.endswith("/actions/workflows/deploy.yml/dispatches")
    assert dispatch.json == {"ref": "main", "return_run_details": True}
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.RELEASING and release.merge_sha and release.deploy_id
    assert release.deploy_target == "workflow deploy.yml"
    run = int(release.deploy_id)  # GitHub named the run the dispatch created
    assert not [a for a in scenario.answers(7) if a.startswith("### ✅ Released")]  # not before the deploy

    merge_sha = release.merge_sha
    await scenario.deliver("workflow_run", workflow_run(run, merge_sha, workflow="deploy.yml", action="in_progress"))
    running = await scenario.store.get_active_release(REPO, 7)
    assert running is not None and running.deploy_url == f"https://github.com/{REPO}/actions/runs/{run}"
    body = scenario.sticky(7)["body"]  # the progress comment follows the deploy
    assert f"| **Merged as** | `{merge_sha[:7]}` |" in body
    log = f"https://github.com/{REPO}/actions/runs/{run}"
    assert f"| **Deploy** | workflow deploy.yml: running · [log]({log}) |" in body
    # A run of another workflow, on another commit, or another run of it (by hand) is not ours.
    await scenario.deliver("workflow_run", workflow_run(run + 1, merge_sha, workflow="tests.yml"))
    await scenario.deliver("workflow_run", workflow_run(run + 2, "f" * 40, workflow="deploy.yml"))
    await scenario.deliver("workflow_run", workflow_run(run + 3, merge_sha, workflow="deploy.yml"))
    assert (await scenario.store.get_active_release(REPO, 7)) is not None
    await scenario.deliver("workflow_run", workflow_run(run, merge_sha, workflow="deploy.yml"))
    done = await scenario.store.get_latest_release(REPO, 7)
    assert done is not None and done.state is State.RELEASED
    [summary] = [a for a in scenario.answers(7) if a.startswith("### ✅ Released")]
    assert f"([log](https://github.com/{REPO}/actions/runs/{run}))" in summary
    assert scenario.fake.violations == []


async def test_a_failed_workflow_deploy_fails_the_release_with_its_log(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  workflow: deploy.yml\n")
    await booked(scenario)
    await at(scenario, T)
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.merge_sha and release.deploy_id
    run = int(release.deploy_id)
    await scenario.deliver(
        "workflow_run", workflow_run(run, release.merge_sha, workflow="deploy.yml", conclusion="failure")
    )
    failed = await scenario.store.get_latest_release(REPO, 7)
    assert failed is not None and failed.state is State.FAILED
    said = scenario.answers(7)[-1]
    assert "was merged but its deploy (workflow deploy.yml) failed" in said
    assert f"https://github.com/{REPO}/actions/runs/{run}" in said
    event = await scenario.store.get_calendar_event(failed.lane, failed.event_id or "")
    assert event is not None and event.summary.startswith("❌ ")
    # The environment is free again for the next release.
    lane = f"{REPO} production"
    assert await scenario.store.acquire_lease(f"env:{lane}", "next", now=T + timedelta(minutes=1), seconds=60)


async def test_a_github_deployment_is_created_and_its_statuses_followed(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  environment: production\n  deployment: true\n")
    await booked(scenario)
    await at(scenario, T)
    [created] = scenario.fake.calls("repos/create-deployment")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.merge_sha and release.deploy_id
    assert created.json is not None and created.json["ref"] == release.merge_sha
    assert created.json["environment"] == "production" and created.json["required_contexts"] == []
    deployment = int(release.deploy_id)
    await scenario.deliver("deployment_status", deployment_status(deployment, release.merge_sha, state="in_progress"))
    assert (await scenario.store.get_active_release(REPO, 7)) is not None
    await scenario.deliver("deployment_status", deployment_status(deployment, release.merge_sha, state="success"))
    done = await scenario.store.get_latest_release(REPO, 7)
    assert done is not None and done.state is State.RELEASED
    assert scenario.fake.violations == []


async def test_a_deployment_whose_answer_was_lost_is_adopted_not_created_twice(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  environment: production\n  deployment: true\n")
    await booked(scenario)
    # GitHub creates the deployment, but its answer never reaches the bot (a 502 from a proxy).
    scenario.fake.fail_next("POST", r"/deployments$", 502, after_serving=True)
    await at(scenario, T)
    await at(scenario, T + timedelta(seconds=30))  # the deploy job's retry
    assert len(scenario.fake.calls("repos/create-deployment")) == 1
    assert len(scenario.fake.deployments) == 1
    [listed] = scenario.fake.calls("repos/list-deployments")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.merge_sha
    assert listed.query["sha"] == release.merge_sha and listed.query["environment"] == "production"
    [deployment_id] = scenario.fake.deployments
    assert release.deploy_id == str(deployment_id)
    await scenario.deliver("deployment_status", deployment_status(deployment_id, release.merge_sha, state="success"))
    done = await scenario.store.get_latest_release(REPO, 7)
    assert done is not None and done.state is State.RELEASED
    assert scenario.fake.violations == []


async def test_a_playbook_deploy_without_a_registered_dev_agent_is_not_merged(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  playbook: deploy-web\n")
    await booked(scenario)
    await at(scenario, T)
    assert scenario.fake.calls("pulls/merge") == []
    said = scenario.answers(7)[-1].replace("\\", "")
    assert "no dev agent is registered for octo-org/widgets" in said and "python -m bot agent add" in said


async def test_ship_now_inside_a_window_releases_right_away(scenario: Scenario) -> None:
    scenario.clock.now = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)  # Thursday 14:00 in Berlin: a window
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship now", sender="alice"))
    [merge] = scenario.fake.calls("pulls/merge")
    assert merge.json is not None and merge.json["sha"] == HEAD
    release = await scenario.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.RELEASED


async def test_ship_now_force_outside_the_windows_is_for_maintainers_and_is_recorded(scenario: Scenario) -> None:
    scenario.clock.now = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)  # Saturday: no window
    scenario.fake.set_permission(REPO, "mo", "maintain")
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship now", sender="alice"))
    assert "has no release window" in scenario.answers(7)[-1]
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship now --force", sender="alice"))
    refused = scenario.answers(7)[-1]
    assert "only people with **maintain** access (or more) to this repository can force a release" in refused
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship now --dry-run", sender="mo"))
    assert scenario.fake.calls("pulls/merge") == []
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship now --force", sender="mo"))
    [merge] = scenario.fake.calls("pulls/merge")
    assert merge.json is not None and merge.json["sha"] == HEAD
    release = await scenario.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.RELEASED
    assert "forced by mo (maintain) outside the windows" in release.audit[0].reason


async def test_the_reconcile_sweep_catches_what_webhooks_missed(scenario: Scenario) -> None:
    await booked(scenario)
    assert await scenario.worker.reconcile() == {}  # nothing changed: nothing to do
    scenario.fake.push_to_pull(REPO, 7, "b" * 40)  # the push's webhook never arrived
    assert await scenario.worker.reconcile() == {"pushed": 1}
    await scenario.settle()
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.head_sha == "b" * 40 and release.state is State.VERIFYING
    scenario.fake.add_check_run(REPO, "b" * 40, "ci/build", status="completed", conclusion="success")
    assert await scenario.worker.reconcile() == {"checks": 1}
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.SCHEDULED and release.verified_sha == "b" * 40


async def test_the_reconcile_sweep_finishes_a_deploy_whose_webhook_was_lost(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  workflow: deploy.yml\n")
    await booked(scenario)
    await at(scenario, T)
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.RELEASING and release.merge_sha and release.deploy_id
    run = scenario.fake.workflow_runs[int(release.deploy_id)]
    run.status, run.conclusion = "completed", "success"  # it finished; its webhook was lost
    assert await scenario.worker.reconcile() == {"deployed": 1}
    done = await scenario.store.get_latest_release(REPO, 7)
    assert done is not None and done.state is State.RELEASED


async def test_the_reconcile_sweep_notices_a_pr_closed_without_its_webhook(scenario: Scenario) -> None:
    await booked(scenario)
    scenario.fake._issue_state(REPO, 7).state = "closed"
    assert await scenario.worker.reconcile() == {"closed": 1}
    release = await scenario.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.CANCELLED


SECONDARY = {
    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
}


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (502, {}, {"message": "Server Error"}),
        (403, {"Retry-After": "1"}, SECONDARY),
        (429, {"Retry-After": "1"}, {"message": "Too many requests"}),
    ],
    ids=["502", "secondary-403", "429"],
)
async def test_github_faults_at_the_merge_are_retried_and_merge_once(
    scenario: Scenario, status: int, headers: dict[str, str], body: dict[str, str]
) -> None:
    await booked(scenario)
    scenario.fake.fail_next("PUT", r"/pulls/7/merge$", status, headers=headers, body=body)
    await at(scenario, T)
    scenario.clock.advance(seconds=90)  # past any backoff the worker chose
    await scenario.settle()
    statuses = [r.status for r in scenario.fake.calls("pulls/merge")]
    assert statuses[-1] == 200 and statuses.count(200) == 1 and status in statuses
    release = await scenario.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.RELEASED
    assert len([a for a in scenario.answers(7) if a.startswith("### ✅ Released")]) == 1


async def test_a_fault_while_reading_at_the_slot_is_retried(scenario: Scenario) -> None:
    await booked(scenario)
    scenario.fake.fail_next("GET", r"/pulls/7$", 502, body={"message": "Server Error"}, times=2)
    await at(scenario, T)
    scenario.clock.advance(seconds=90)
    await scenario.settle()
    release = await scenario.store.get_latest_release(REPO, 7)
    assert release is not None and release.state is State.RELEASED
    assert len(scenario.fake.calls("pulls/merge")) == 1


async def test_after_a_refused_merge_a_new_ship_of_the_same_sha_merges(scenario: Scenario) -> None:
    await booked(scenario)
    scenario.fake.fail_next("PUT", r"/pulls/7/merge$", 405, body={"message": "Review required"})
    await at(scenario, T)
    blocked = await scenario.store.get_active_release(REPO, 7)
    assert blocked is not None and blocked.state is State.BLOCKED
    # Someone approves; `/ship` again with no new commit: a new attempt, merged this time.
    scenario.clock.now = T + timedelta(minutes=2)
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship 15:30", sender="alice"))
    await at(scenario, datetime(2026, 11, 27, 14, 30, tzinfo=UTC))
    statuses = [r.status for r in scenario.fake.calls("pulls/merge")]
    assert statuses == [405, 200]
    done = await scenario.store.get_latest_release(REPO, 7)
    assert done is not None and done.state is State.RELEASED


async def test_a_deploy_github_refuses_to_start_fails_the_release_at_once(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  workflow: deploy.yml\n")
    await booked(scenario)
    scenario.fake.fail_next(
        "POST", r"/dispatches$", 422, body={"message": "Workflow does not have 'workflow_dispatch' trigger"}
    )
    await at(scenario, T)
    failed = await scenario.store.get_latest_release(REPO, 7)
    assert failed is not None and failed.state is State.FAILED and failed.merge_sha
    said = scenario.answers(7)[-1]
    assert "was merged but its deploy (workflow deploy.yml) failed" in said and "422" in said
    lane = f"{REPO} production"
    assert await scenario.store.acquire_lease(f"env:{lane}", "next", now=T + timedelta(minutes=1), seconds=60)


async def test_a_timer_that_fires_after_its_slot_is_over_does_not_merge(scenario: Scenario) -> None:
    await booked(scenario)
    await at(scenario, T + timedelta(hours=2))  # the workers were down from before T until 16:00
    assert scenario.fake.calls("pulls/merge") == []
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.BLOCKED
    said = scenario.answers(7)[-1]
    assert "while the bot was down" in said and "The next free slot is" in said


async def test_a_pr_closed_at_the_slot_frees_the_environment(scenario: Scenario) -> None:
    await booked(scenario)
    scenario.fake._issue_state(REPO, 7).state = "closed"  # closed; its webhook is late
    await at(scenario, T)
    assert scenario.fake.calls("pulls/merge") == []
    lane = f"{REPO} production"
    assert await scenario.store.acquire_lease(f"env:{lane}", "next", now=T + timedelta(minutes=1), seconds=60)


async def test_ship_rollback_runs_the_rollback_workflow_and_marks_the_release(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  rollback_workflow: rollback.yml\n")
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship rollback", sender="alice"))
    assert scenario.answers(7)[-1] == "@alice there is no merged release on this PR to roll back."
    await booked(scenario)
    await at(scenario, T)
    released = await scenario.store.get_latest_release(REPO, 7)
    assert released is not None and released.state is State.RELEASED
    scenario.fake.set_permission(REPO, "bob", "read")
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship rollback", sender="bob"))
    assert "can roll a release back" in scenario.answers(7)[-1]
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship rollback", sender="alice"))
    [dispatch] = scenario.fake.calls("actions/create-workflow-dispatch")
    assert dispatch.path.endswith("/workflows/rollback.yml/dispatches")
    rolling = await scenario.store.get_latest_release(REPO, 7)
    assert rolling is not None and rolling.rollback_id is not None
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship rollback", sender="alice"))
    assert "a rollback is already running or done" in scenario.answers(7)[-1]
    assert len(scenario.fake.calls("actions/create-workflow-dispatch")) == 1
    run = int(rolling.rollback_id)
    await scenario.deliver("workflow_run", workflow_run(run, HEAD, workflow="rollback.yml"))
    rolled = await scenario.store.get_latest_release(REPO, 7)
    assert rolled is not None and rolled.state is State.ROLLED_BACK
    assert "was rolled back" in scenario.answers(7)[-1]


async def test_ship_rollback_without_a_rollback_workflow_says_how_to_set_one(scenario: Scenario) -> None:
    await booked(scenario)
    await at(scenario, T)
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship rollback", sender="alice"))
    assert "set `deploy.rollback_workflow`" in scenario.answers(7)[-1]


async def test_a_deployment_that_never_reports_fails_after_its_timeout(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  deployment: true\n  timeout_minutes: 20\n")
    await booked(scenario)
    await at(scenario, T)
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.RELEASING and release.deploy_id
    await at(scenario, T + timedelta(minutes=19))
    assert (await scenario.store.get_active_release(REPO, 7)) is not None  # still waiting
    await at(scenario, T + timedelta(minutes=21))
    failed = await scenario.store.get_latest_release(REPO, 7)
    assert failed is not None and failed.state is State.FAILED
    assert "no result from deployment production after 20 minutes" in scenario.answers(7)[-1]
    lane = f"{REPO} production"
    assert await scenario.store.acquire_lease(f"env:{lane}", "next", now=T + timedelta(minutes=22), seconds=60)


async def test_commits_pushed_after_the_last_check_are_named_at_the_slot(scenario: Scenario) -> None:
    await booked(scenario)
    await at(scenario, T_MINUS_15)  # the last check passed
    scenario.fake.push_to_pull(REPO, 7, "b" * 40)  # pushed at 14:50; its webhook never arrived
    await at(scenario, T)
    assert scenario.fake.calls("pulls/merge") == []
    [compare] = scenario.fake.calls("repos/compare-commits-with-basehead") or scenario.fake.calls(
        "repos/compare-commits"
    )
    assert compare.path.endswith(f"/compare/{HEAD}...{'b' * 40}")
    said = scenario.answers(7)[-1].replace("\\", "")  # as Markdown shows it
    assert f"the head moved to bbbbbbb since {HEAD[:7]} was verified" in said and "1 new commit: bbbbbbb " in said
    assert "moves such a release to a new slot (new_commits: next_slot)" in said
    assert "`/ship 2026-11-27 15:30`" in said


NEW = "b" * 40
WAIT = "new_commits:\n  action: wait\n  wait_minutes: 20\n  test_workflow: ci.yml\n"


async def pushed_before_the_slot(scenario: Scenario) -> None:
    """A fix pushed after the T-15 check; its webhook never arrived, its checks run only on dispatch."""
    await deploy_config(scenario, WAIT)
    await booked(scenario)
    await at(scenario, T_MINUS_15)
    scenario.fake.push_to_pull(REPO, 7, NEW)
    scenario.fake.add_check_run(REPO, NEW, "ci/build", status="in_progress", conclusion=None)


async def test_new_commits_at_the_slot_wait_for_their_checks_and_then_release_the_new_head(
    scenario: Scenario,
) -> None:
    await pushed_before_the_slot(scenario)
    await at(scenario, T)
    assert scenario.fake.calls("pulls/merge") == []
    waiting = await scenario.store.get_active_release(REPO, 7)
    assert waiting is not None and waiting.state is State.VERIFYING and waiting.slot is not None
    said = scenario.answers(7)[-1]
    assert "waits: the head moved to bbbbbbb" in said and "until 15:20" in said, said
    # The test workflow runs on the PR's branch, once, however often the release looks again.
    assert scenario.fake.workflow_dispatches == [
        {"repo": REPO, "workflow_id": "ci.yml", "ref": "feature-7", "inputs": {}}
    ]
    await at(scenario, T + timedelta(minutes=3))
    assert len(scenario.fake.workflow_dispatches) == 1 and scenario.answers(7)[-1] == said
    assert "waiting for the checks until 15:20" in scenario.sticky(7)["body"]
    # The checks pass at 15:05: the release does not wait for its next look, it merges the new head.
    scenario.fake.add_check_run(REPO, NEW, "ci/build", status="completed", conclusion="success")
    scenario.clock.now = T + timedelta(minutes=5)
    await scenario.deliver("check_suite", suite_completed(NEW))
    [merge] = scenario.fake.calls("pulls/merge")
    assert merge.json is not None and merge.json["sha"] == NEW
    released = await scenario.store.get_latest_release(REPO, 7)
    assert released is not None and released.state is State.RELEASED
    reasons = [t.reason for t in released.audit]
    assert any("waiting for the checks until 15:20 (new_commits: wait)" in r for r in reasons), reasons
    assert any(r.startswith(f"merging {NEW[:7]}") for r in reasons), reasons


async def test_new_commits_whose_checks_do_not_finish_in_time_move_to_the_next_slot(scenario: Scenario) -> None:
    await pushed_before_the_slot(scenario)
    await at(scenario, T)
    await at(scenario, T + timedelta(minutes=10))
    assert (await scenario.store.get_active_release(REPO, 7)).state is State.VERIFYING  # type: ignore[union-attr]
    await at(scenario, T + timedelta(minutes=21))
    assert scenario.fake.calls("pulls/merge") == []
    blocked = await scenario.store.get_active_release(REPO, 7)
    assert blocked is not None and blocked.state is State.BLOCKED
    said = scenario.answers(7)[-1].replace("\\", "")  # as Markdown shows it
    assert "the bot waited until 15:20 for their checks, which did not pass in time (new_commits: wait)" in said
    assert "The next free slot is" in said


async def test_new_commits_whose_checks_fail_while_waiting_block_the_release(scenario: Scenario) -> None:
    await pushed_before_the_slot(scenario)
    await at(scenario, T)
    scenario.fake.add_check_run(REPO, NEW, "ci/build", status="completed", conclusion="failure")
    scenario.clock.now = T + timedelta(minutes=4)
    await scenario.deliver("check_suite", suite_completed(NEW, conclusion="failure"))
    await at(scenario, T + timedelta(minutes=5))
    assert scenario.fake.calls("pulls/merge") == []
    blocked = await scenario.store.get_active_release(REPO, 7)
    assert blocked is not None and blocked.state is State.BLOCKED
    assert "ci/build is failing" in scenario.sticky(7)["body"]


async def test_the_environment_lock_lasts_as_long_as_the_deploy_may(scenario: Scenario) -> None:
    await deploy_config(scenario, "deploy:\n  workflow: deploy.yml\n  timeout_minutes: 180\n")
    await booked(scenario)
    await at(scenario, T)
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.RELEASING
    lane = f"{REPO} production"
    # Two and a half hours into a three-hour deploy, the environment is still its.
    assert not await scenario.store.acquire_lease(
        f"env:{lane}", "octo-org/widgets#8/1", now=T + timedelta(minutes=150), seconds=60
    )


async def test_new_commits_already_green_at_the_slot_release_at_once_when_the_repo_waits(scenario: Scenario) -> None:
    await deploy_config(scenario, WAIT)
    await booked(scenario)
    await at(scenario, T_MINUS_15)
    scenario.fake.push_to_pull(REPO, 7, NEW)  # its webhook never arrived; its checks passed by 15:00
    scenario.fake.add_check_run(REPO, NEW, "ci/build", status="completed", conclusion="success")
    await at(scenario, T)
    [merge] = scenario.fake.calls("pulls/merge")
    assert merge.json is not None and merge.json["sha"] == NEW
    assert scenario.fake.workflow_dispatches == []  # nothing to wait for, no tests to start
    released = await scenario.store.get_latest_release(REPO, 7)
    assert released is not None and released.state is State.RELEASED
    assert any("whose checks passed (new_commits: wait)" in t.reason for t in released.audit)


@pytest.mark.parametrize("webhook", [False, True], ids=["push-unseen", "push-seen"])
async def test_new_commits_whose_checks_have_not_started_are_waited_for_when_nothing_is_required(
    scenario: Scenario, webhook: bool
) -> None:
    """No required checks anywhere (every reported check counts): a new head with no checks yet is not
    green; the checks the earlier head reported are expected on it, and the test workflow is started."""
    scenario.fake.remove_branch_protection(REPO, "main")
    await deploy_config(scenario, WAIT)
    await booked(scenario)
    await at(scenario, T_MINUS_15)
    scenario.fake.push_to_pull(REPO, 7, NEW)  # its tests run only when dispatched
    if webhook:
        await scenario.deliver("pull_request", synchronize(7, NEW, sender="alice"))
    await at(scenario, T)
    assert scenario.fake.calls("pulls/merge") == []
    waiting = await scenario.store.get_active_release(REPO, 7)
    assert waiting is not None and waiting.state is State.VERIFYING
    assert [d["workflow_id"] for d in scenario.fake.workflow_dispatches] == ["ci.yml"]
    scenario.fake.add_check_run(REPO, NEW, "ci/build", status="completed", conclusion="success")
    scenario.clock.now = T + timedelta(minutes=6)
    await scenario.deliver("check_suite", suite_completed(NEW))
    [merge] = scenario.fake.calls("pulls/merge")
    assert merge.json is not None and merge.json["sha"] == NEW
    reasons = [t.reason for t in (await scenario.store.get_latest_release(REPO, 7)).audit]  # type: ignore[union-attr]
    assert not any("late by" in r for r in reasons), reasons  # the wait's rechecks are not the workers being down


async def test_a_second_look_at_a_blocked_slot_says_nothing_twice(scenario: Scenario) -> None:
    await booked(scenario)
    await at(scenario, T_MINUS_15)  # all good then
    scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="failure")
    await at(scenario, T)
    said = scenario.answers(7)
    assert "did not go ahead" in said[-1]
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.BLOCKED and release.slot is not None
    # The release job runs again (its worker died after the save, before finishing the job).
    await scenario.worker.service.set_timer("release", release, release.slot.start, release.slot.start)
    await at(scenario, T + timedelta(minutes=1))
    after = await scenario.store.get_active_release(REPO, 7)
    assert scenario.answers(7) == said, (said, [(t.at, t.reason[:60]) for t in after.audit])  # type: ignore[union-attr]


async def test_a_deployment_created_before_a_crash_is_followed_by_its_id(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after noting the created deployment, before the release learnt its id."""
    await deploy_config(scenario, "deploy:\n  environment: production\n  deployment: true\n")
    await booked(scenario)
    service = scenario.worker.service
    real_apply = service.apply
    died = []

    async def dies_once(ref: Any, make_event: Any, **kwargs: Any) -> Any:
        release = await scenario.store.get_active_release(REPO, 7)
        if not died and release is not None and release.merge_sha and not release.deploy_id:
            died.append(True)
            raise ConnectionError("the worker died here")
        return await real_apply(ref, make_event, **kwargs)

    monkeypatch.setattr(service, "apply", dies_once)
    await at(scenario, T)
    await at(scenario, T + timedelta(minutes=1))  # the deploy job's retry
    monkeypatch.undo()
    assert died and len(scenario.fake.calls("repos/create-deployment")) == 1
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.deploy_id is not None
    merge_sha = release.merge_sha
    assert merge_sha is not None
    await scenario.deliver("deployment_status", deployment_status(int(release.deploy_id), merge_sha, state="success"))
    done = await scenario.store.get_latest_release(REPO, 7)
    assert done is not None and done.state is State.RELEASED
