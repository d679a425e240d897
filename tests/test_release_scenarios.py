"""The PR thread as the release's UI, end to end: real app and worker, fake GitHub, signed webhooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import make_app
from bot.config import Settings
from bot.release import State
from bot.render import MARKER
from tests.fakes.github import FakeGitHub
from tests.scenario import REPO, Clock, Scenario, labeled, pr_comment, suite_completed, synchronize, unlabeled

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
HEAD = "a" * 40
CONFIG = """\
timezone: Europe/Berlin
windows:
  - days: [mon-fri]
    hours: "10:00-16:00"
"""


@pytest.fixture
async def scenario(aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub) -> Scenario:
    clock = Clock()
    fake_github.add_pull(REPO, 7, head_sha=HEAD, title="Faster widgets", user_login="alice")
    fake_github.set_permission(REPO, "alice", "write")
    fake_github.set_permission(REPO, "bob", "read")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    fake_github.add_check_run(REPO, HEAD, "ci/build", status="in_progress", conclusion=None)
    fake_github.set_file(REPO, ".github/release-secretary.yml", CONFIG)
    settings = app_settings.replace(sticky_debounce=2.0)
    client = await aiohttp_client(make_app(settings, clock=clock))
    return Scenario(client, settings, fake_github, clock)


async def test_label_creates_the_sticky_comment_and_check_run(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.VERIFYING
    sticky = scenario.sticky(7)
    assert "Verifying" in sticky["body"] and "ci/build" in sticky["body"]
    # Now is Wed 10:00 Berlin: with 15 minutes of lead time the next slot on the 30-minute grid is 10:30.
    assert "Wed 25 Nov 10:30-11:00 Europe/Berlin (09:30 UTC)" in sticky["body"]
    [run] = scenario.fake.check_runs_for(REPO, HEAD)[-1:]
    assert run["name"] == "Release" and run["conclusion"] == "neutral"
    assert scenario.fake.violations == []


async def test_read_user_is_refused_politely(scenario: Scenario) -> None:
    payload = scenario.comment(7, "/ship friday 3pm", sender="bob")
    await scenario.deliver("issue_comment", payload)
    assert await scenario.store.get_active_release(REPO, 7) is None
    [reply] = scenario.replies(7)
    assert "@bob" in reply and "**write**" in reply and "**read**" in reply
    assert [r["content"] for r in scenario.fake.reactions_on(payload["comment"]["id"])] == ["eyes"]
    assert scenario.fake.violations == []


async def test_ship_friday_3pm_is_scheduled_in_the_repo_zone_and_follows_the_checks(scenario: Scenario) -> None:
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.slot is not None
    assert release.slot.start.isoformat() == "2026-11-27T14:00:00+00:00"  # 15:00 Berlin is 14:00 UTC
    assert release.state is State.VERIFYING
    first = scenario.sticky(7)
    assert "Fri 27 Nov 15:00-15:30 Europe/Berlin (14:00 UTC)" in first["body"]
    assert "⏳" in first["body"]

    # CI finishes green: the same comment is edited (after the debounce), never a second one.
    scenario.clock.advance(seconds=30)
    scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    await scenario.deliver("check_suite", suite_completed(HEAD))
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.SCHEDULED and release.verified_sha == HEAD
    second = scenario.sticky(7)
    assert second["id"] == first["id"]
    assert "Scheduled" in second["body"] and "✅" in second["body"]

    # A push: back to verifying, the slot is kept, the people are told.
    scenario.clock.advance(seconds=30)
    new_head = "b" * 40
    scenario.fake.push_to_pull(REPO, 7, new_head)
    await scenario.deliver("pull_request", synchronize(7, new_head, sender="alice"))
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.VERIFYING
    assert release.head_sha == new_head and release.verified_sha is None
    assert release.slot is not None and release.slot.start.isoformat() == "2026-11-27T14:00:00+00:00"
    third = scenario.sticky(7)
    assert third["id"] == first["id"] and "new push bbbbbbb" in third["body"]

    # /ship cancel
    scenario.clock.advance(seconds=30)
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship cancel", sender="alice"))
    latest = await scenario.store.get_latest_release(REPO, 7)
    assert latest is not None and latest.state is State.CANCELLED
    assert [t.to_state for t in latest.audit] == [
        State.REQUESTED,
        State.VERIFYING,
        State.SCHEDULED,
        State.VERIFYING,
        State.CANCELLED,
    ]
    assert "Cancelled" in scenario.sticky(7)["body"]
    assert len([c for c in scenario.comments(7) if c["body"].startswith("<!--")]) == 1
    assert scenario.fake.violations == []


async def test_same_delivery_ten_times_gives_one_comment_and_one_reaction(scenario: Scenario) -> None:
    payload = scenario.comment(7, "/ship friday 3pm", sender="alice")
    statuses = [await scenario.send("issue_comment", payload, delivery="same-delivery") for _ in range(10)]
    assert statuses == [202] + [200] * 9
    await scenario.settle()
    # One progress comment and one answer to the command, however often it was delivered.
    assert len([c for c in scenario.comments(7) if c["user"]["type"] == "Bot"]) == 2
    [reply] = scenario.replies(7)
    assert reply.startswith("@alice booked **Fri 27 Nov 15:00-15:30 Europe/Berlin (14:00 UTC)**")
    assert len(scenario.fake.reactions_on(payload["comment"]["id"])) == 1
    assert len(scenario.fake.calls("reactions/create-for-issue-comment")) == 1


async def test_unknown_command_is_answered_with_the_closest_forms(scenario: Scenario) -> None:
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship cancle", sender="alice"))
    [reply] = scenario.replies(7)
    assert "/ship cancle" in reply and "/ship cancel" in reply
    assert await scenario.store.get_active_release(REPO, 7) is None


async def test_time_outside_the_windows_is_refused_with_the_next_slot(scenario: Scenario) -> None:
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship saturday", sender="alice"))
    [reply] = scenario.replies(7)
    assert "`saturday`" in reply and "Mon 30 Nov 10:00" in reply
    assert await scenario.store.get_active_release(REPO, 7) is None


async def test_dry_run_books_nothing(scenario: Scenario) -> None:
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday --dry-run", sender="alice"))
    [reply] = scenario.replies(7)
    assert "dry run" in reply and "Fri 27 Nov 10:00-10:30 Europe/Berlin (09:00 UTC)" in reply
    assert "ci/build" in reply
    assert await scenario.store.get_active_release(REPO, 7) is None
    assert scenario.fake.check_runs_for(REPO, HEAD)[-1]["name"] == "ci/build"


async def test_removing_the_label_cancels(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    scenario.clock.advance(seconds=5)
    await scenario.deliver("pull_request", unlabeled(7, HEAD, sender="alice"))
    latest = await scenario.store.get_latest_release(REPO, 7)
    assert latest is not None and latest.state is State.CANCELLED
    assert "label removed by alice" in latest.audit[-1].reason


async def test_other_labels_and_bots_are_ignored(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", labeled(7, HEAD, sender="alice", label="bug"))
    bot = pr_comment(7, "/ship now", sender="dependabot[bot]", comment_id=1)
    bot["sender"]["type"] = "Bot"
    await scenario.deliver("issue_comment", bot)
    assert await scenario.store.get_latest_release(REPO, 7) is None
    assert scenario.replies(7) == []


async def test_invalid_config_is_reported_and_defaults_stay_in_force(scenario: Scenario) -> None:
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", "timezone: Europe/Berln\nslot_minutes: 2\n")
    await scenario.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    body = scenario.sticky(7)["body"]
    assert "release-secretary.yml` is invalid" in body and "Europe/Berln" in body
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.timezone == "UTC"  # the defaults, as no good config was seen
    run = scenario.fake.check_runs_for(REPO, HEAD)[-1]
    assert run["conclusion"] == "failure" and "Invalid" in run["output"]["title"]


def sticky_creations(scenario: Scenario) -> list[object]:
    return [c for c in scenario.fake.calls("issues/create-comment") if c.json["body"].startswith(MARKER)]


async def test_a_burst_of_changes_is_one_edit_per_debounce_window(scenario: Scenario) -> None:
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship friday 3pm", sender="alice"))
    assert len(sticky_creations(scenario)) == 1
    for hour in ("10:00", "10:30", "11:00", "11:30", "12:00"):
        scenario.clock.advance(seconds=0.2)
        await scenario.deliver("issue_comment", scenario.comment(7, f"/ship monday {hour}", sender="alice"))
    # Inside the two-second window nothing was edited yet; the work is queued, not lost.
    assert scenario.fake.calls("issues/update-comment") == []
    scenario.clock.advance(seconds=2)
    await scenario.settle()
    [edit] = scenario.fake.calls("issues/update-comment")
    assert "Mon 30 Nov 12:00-12:30 Europe/Berlin (11:00 UTC)" in edit.json["body"]
    # Each command was answered on its own (six `/ship`s, six answers); the progress comment once.
    assert len(sticky_creations(scenario)) == 1


async def test_sticky_comment_is_found_by_its_marker_when_the_store_lost_its_id(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", labeled(7, HEAD, sender="alice"))
    first = scenario.sticky(7)
    record = await scenario.store.get_pull_record(REPO, 7)
    assert record is not None and record.comment_id == first["id"]
    from dataclasses import replace

    await scenario.store.save_pull_record(replace(record, comment_id=None, rendered=None))
    scenario.clock.advance(seconds=5)
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship hold", sender="alice"))
    assert scenario.sticky(7)["id"] == first["id"] and "On hold" in scenario.sticky(7)["body"]
    assert len(scenario.fake.calls("issues/create-comment")) == 1
    record = await scenario.store.get_pull_record(REPO, 7)
    assert record is not None and record.comment_id == first["id"]


async def test_label_from_a_reader_is_refused(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", labeled(7, HEAD, sender="bob"))
    assert await scenario.store.get_latest_release(REPO, 7) is None
    [reply] = scenario.replies(7)
    assert "@bob" in reply and "**write**" in reply


async def test_status_help_hold_unhold(scenario: Scenario) -> None:
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship status", sender="bob"))
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship help", sender="bob"))
    status, help_text = scenario.replies(7)
    assert "no release has been requested" in status
    assert "/ship cancel" in help_text and "/ship hold" in help_text
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship", sender="alice"))
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship hold", sender="alice"))
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.HELD
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship unhold", sender="alice"))
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.VERIFYING
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship status", sender="bob"))
    assert "**verifying**" in scenario.replies(7)[-1] and "waiting for ci/build" in scenario.replies(7)[-1]


async def test_ruleset_required_checks_count_too(scenario: Scenario) -> None:
    scenario.fake.remove_branch_protection(REPO, "main")
    scenario.fake.set_branch_rules(
        REPO,
        "main",
        [
            {
                "type": "required_status_checks",
                "parameters": {
                    "strict_required_status_checks_policy": False,
                    "required_status_checks": [{"context": "security/scan"}],
                },
            }
        ],
    )
    scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    await scenario.deliver("issue_comment", scenario.comment(7, "/ship", sender="alice"))
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.VERIFYING
    assert release.checks is not None and release.checks.missing == ["security/scan"]
    assert "security/scan" in scenario.sticky(7)["body"]
    assert scenario.fake.violations == []
