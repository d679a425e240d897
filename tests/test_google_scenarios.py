"""Releases booked in Google Calendar, end to end: the real app and worker, signed webhooks, the fake
GitHub and the fake Google (the real google-api-python-client over HTTP on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import make_app
from bot.calendar import LANE_PROPERTY, RELEASE_PROPERTY, event_id
from bot.config import Settings
from bot.release import State
from tests.fakes.github import FakeGitHub
from tests.fakes.google_calendar import FakeGoogle, ServiceAccount
from tests.scenario import REPO, Clock, Scenario, synchronize

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
HEAD = "a" * 40
DEPLOYS = "deploys@group.calendar.google.com"
FREEZES = "freezes@group.calendar.google.com"
CONFIG = f"""\
timezone: Europe/Berlin
windows:
  - days: [mon-fri]
    hours: "10:00-16:00"
calendar:
  id: {DEPLOYS}
  freeze_calendars: [{FREEZES}]
"""


@pytest.fixture
async def google() -> AsyncIterator[FakeGoogle]:
    async with FakeGoogle() as fake:
        yield fake
        assert fake.violations == []


@pytest.fixture
def robot(google: FakeGoogle) -> ServiceAccount:
    account = google.add_service_account()
    google.add_calendar(DEPLOYS, acl={account.email: "writer"}, time_zone="Europe/Berlin")
    google.add_calendar(FREEZES, acl={account.email: "reader"}, time_zone="Europe/Berlin")
    return account


@pytest.fixture
async def scenario(
    aiohttp_client: ClientFactory,
    app_settings: Settings,
    fake_github: FakeGitHub,
    google: FakeGoogle,
    robot: ServiceAccount,
) -> Scenario:
    clock = Clock()  # Wed 25 Nov 2026 09:00 UTC
    fake_github.add_pull(REPO, 7, head_sha=HEAD, title="Faster widgets", user_login="alice")
    fake_github.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    fake_github.set_permission(REPO, "alice", "write")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    fake_github.set_file(REPO, ".github/release-secretary.yml", CONFIG)
    settings = app_settings.replace(
        sticky_debounce=0.0,
        google_calendar_api_url=google.url,
        google_service_account=robot.key_json,
    )
    client = await aiohttp_client(make_app(settings, clock=clock))
    return Scenario(client, settings, fake_github, clock)


async def ship(scenario: Scenario, text: str) -> None:
    await scenario.deliver("issue_comment", scenario.comment(7, text, sender="alice"))


def starts_at(google: FakeGoogle, event: str) -> datetime:
    return datetime.fromisoformat(google.calendars[DEPLOYS].events[event]["start"]["dateTime"])


def person_event(summary: str, start: str, end: str) -> dict[str, object]:
    return {"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}}


async def test_ship_books_in_google_after_reading_free_busy(scenario: Scenario, google: FakeGoogle) -> None:
    # Someone booked a manual deploy at Friday 10:00 Berlin; Friday is otherwise free.
    google.add_event(DEPLOYS, person_event("Manual deploy", "2026-11-27T10:00:00+01:00", "2026-11-27T10:30:00+01:00"))
    await ship(scenario, "/ship friday")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.SCHEDULED and release.slot is not None
    assert release.slot.start == datetime(2026, 11, 27, 9, 30, tzinfo=UTC)  # 10:30 Berlin, after the manual one

    [query] = google.calendar_calls("POST /freeBusy") or [c for c in google.requests if c.path.endswith("/freeBusy")]
    assert [item["id"] for item in query.json["items"]] == [DEPLOYS]
    assert query.json["timeMin"] == "2026-11-25T09:00:00Z"
    assert query.account == "release-bot@deploys.iam.gserviceaccount.com"

    [insert] = [w for w in google.writes() if w.method == "POST" and w.path.endswith("/events")]
    body = insert.json
    assert body["id"] == event_id(release.key) == release.event_id
    assert body["summary"] == f"Deploy {REPO}#7"
    assert body["start"] == {"dateTime": "2026-11-27T09:30:00Z"}
    assert body["end"] == {"dateTime": "2026-11-27T10:00:00Z"}
    assert body["extendedProperties"]["private"][RELEASE_PROPERTY] == release.key
    assert body["extendedProperties"]["private"][LANE_PROPERTY] == f"{REPO} production"
    assert f"https://github.com/{REPO}/pull/7" in body["description"] and HEAD in body["description"]
    assert insert.query.get("sendUpdates") == "none"
    assert release.calendar_account == "google:service" and release.calendar_id == DEPLOYS
    assert release.event_link is not None and release.event_link.startswith("http")
    assert f"[calendar]({release.event_link})" in scenario.sticky(7)["body"]
    [booked] = scenario.replies(7)
    assert booked.startswith(
        "@alice booked **Fri 27 Nov 10:30-11:00 Europe/Berlin (09:30 UTC)** · "
        "[calendar](https://calendar.google.com/calendar/r?cid=deploys%40group.calendar.google.com)"
    )


async def test_a_freeze_event_refuses_the_day_and_offers_the_next(scenario: Scenario, google: FakeGoogle) -> None:
    google.add_event(FREEZES, person_event("Black Friday", "2026-11-27T00:00:00+01:00", "2026-11-28T00:00:00+01:00"))
    await ship(scenario, "/ship friday 14:00")
    assert await scenario.store.get_active_release(REPO, 7) is None
    [reply] = scenario.answers(7)
    assert f"overlaps 'Black Friday' in the freeze calendar {FREEZES}" in reply
    assert "`/ship 2026-11-30 10:00`" in reply  # Monday
    assert google.writes() == []


async def test_an_all_day_freeze_shown_as_free_still_freezes(scenario: Scenario, google: FakeGoogle) -> None:
    # Google Calendar makes all-day events "free" by default: free/busy would not show it at all.
    google.add_event(
        FREEZES,
        {
            "summary": "Black Friday",
            "start": {"date": "2026-11-27"},
            "end": {"date": "2026-11-28"},
            "transparency": "transparent",
        },
    )
    await ship(scenario, "/ship friday")
    assert await scenario.store.get_active_release(REPO, 7) is None
    [reply] = scenario.answers(7)
    assert "Black Friday" in reply and "`/ship 2026-11-30 10:00`" in reply


async def test_a_freeze_calendar_shared_for_free_busy_only_is_reported(
    scenario: Scenario, google: FakeGoogle, robot: ServiceAccount
) -> None:
    google.calendars[FREEZES].acl[robot.email] = "freeBusyReader"
    await ship(scenario, "/ship friday")
    assert await scenario.store.get_active_release(REPO, 7) is None
    [reply] = scenario.answers(7)
    assert f"cannot read the freeze calendar `{FREEZES}`" in reply
    assert 'with "See all event details"' in reply


async def test_reschedule_patches_and_cancel_deletes(scenario: Scenario, google: FakeGoogle) -> None:
    await ship(scenario, "/ship friday")
    await ship(scenario, "/ship thursday 14:00")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.event_id is not None
    patches = [w for w in google.writes() if w.method == "PATCH"]
    assert len(patches) == 1
    assert patches[0].json["start"] == {"dateTime": "2026-11-26T13:00:00Z"}
    assert starts_at(google, release.event_id) == datetime(2026, 11, 26, 13, 0, tzinfo=UTC)

    await ship(scenario, "/ship cancel")
    deletes = [w for w in google.writes() if w.method == "DELETE"]
    assert len(deletes) == 1 and deletes[0].path.endswith(f"/events/{release.event_id}")
    assert google.calendars[DEPLOYS].events[release.event_id]["status"] == "cancelled"


async def test_an_event_moved_by_a_person_is_followed(scenario: Scenario, google: FakeGoogle) -> None:
    await ship(scenario, "/ship friday")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.event_id is not None
    event = google.calendars[DEPLOYS].events[release.event_id]
    event["start"] = {"dateTime": "2026-11-27T14:00:00+01:00"}
    event["end"] = {"dateTime": "2026-11-27T14:30:00+01:00"}
    assert await scenario.worker.watch_calendars() == 1
    await scenario.settle()
    moved = await scenario.store.get_active_release(REPO, 7)
    assert moved is not None and moved.slot is not None and moved.state is State.SCHEDULED
    assert moved.slot.start == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
    [reply] = scenario.answers(7)
    assert "moved to **Fri 27 Nov 14:00-14:30 Europe/Berlin (13:00 UTC)**; the release follows it" in reply
    # Nothing more to notice: the next pass changes nothing, and the bot did not move it back.
    assert await scenario.worker.watch_calendars() == 0
    assert [w for w in google.writes() if w.method == "PATCH"] == []


async def test_an_event_moved_outside_the_windows_asks(scenario: Scenario, google: FakeGoogle) -> None:
    await ship(scenario, "/ship friday")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.event_id is not None
    event = google.calendars[DEPLOYS].events[release.event_id]
    event["start"] = {"dateTime": "2026-11-28T11:00:00+01:00"}  # a Saturday
    event["end"] = {"dateTime": "2026-11-28T11:30:00+01:00"}
    assert await scenario.worker.watch_calendars() == 1
    await scenario.settle()
    blocked = await scenario.store.get_active_release(REPO, 7)
    assert blocked is not None and blocked.state is State.BLOCKED
    [reply] = scenario.answers(7)
    assert "moved to **Sat 28 Nov 11:00-11:30 Europe/Berlin (10:00 UTC)**, which can't be used" in reply
    assert "has no release window" in reply and "`/ship 2026-11-25 10:30`" in reply


async def test_an_event_deleted_by_a_person_stops_the_release_and_asks(scenario: Scenario, google: FakeGoogle) -> None:
    await ship(scenario, "/ship friday")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.event_id is not None
    google.delete_event(DEPLOYS, release.event_id)
    assert await scenario.worker.watch_calendars() == 1
    await scenario.settle()
    stopped = await scenario.store.get_active_release(REPO, 7)
    assert stopped is not None and stopped.state is State.BLOCKED and stopped.slot is None
    [reply] = scenario.answers(7)
    assert "deleted this release's calendar event" in reply and "`/ship <when>`" in reply
    # Booking again restores the same event.
    await ship(scenario, "/ship friday")
    again = await scenario.store.get_active_release(REPO, 7)
    assert again is not None and again.state is State.SCHEDULED and again.event_id == release.event_id
    assert google.calendars[DEPLOYS].events[release.event_id]["status"] == "confirmed"


async def test_a_calendar_the_bot_cannot_see_is_reported_with_what_to_do(
    scenario: Scenario, google: FakeGoogle
) -> None:
    google.calendars[DEPLOYS].acl.clear()
    await ship(scenario, "/ship friday")
    assert await scenario.store.get_active_release(REPO, 7) is None
    [reply] = scenario.answers(7)
    assert f"cannot read the calendar `{DEPLOYS}`" in reply
    assert "Share it with the bot's Google account" in reply


async def test_a_rate_limited_update_is_retried(scenario: Scenario, google: FakeGoogle) -> None:
    await ship(scenario, "/ship friday")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.event_id is not None
    # A push: the event's description must say the new head is not verified yet. Google refuses once.
    new_head = "c" * 40
    scenario.fake.push_to_pull(REPO, 7, new_head)
    google.fail_next(1, status=403, reason="rateLimitExceeded")
    await scenario.deliver("pull_request", synchronize(7, new_head, sender="alice"))
    # A description-only change waits a little (CI can flap): one write for a burst.
    assert [c for c in google.requests if c.method == "PATCH"] == []
    scenario.clock.advance(seconds=31)
    await scenario.settle()
    refused = [c for c in google.requests if c.status == 403]
    assert len(refused) == 1
    description = google.calendars[DEPLOYS].events[release.event_id]["description"]
    assert HEAD in description  # not updated yet
    scenario.clock.advance(seconds=30)
    await scenario.settle()
    description = google.calendars[DEPLOYS].events[release.event_id]["description"]
    assert "Verified SHA: not yet" in description and scenario.answers(7) == []


async def test_a_rate_limited_free_busy_read_is_reported_as_temporary(scenario: Scenario, google: FakeGoogle) -> None:
    google.fail_next(1, status=403, reason="rateLimitExceeded")
    await ship(scenario, "/ship friday")
    assert await scenario.store.get_active_release(REPO, 7) is None
    [reply] = scenario.answers(7)
    assert "I can't book a release slot" in reply and "comment the same command again in a minute" in reply


async def test_a_pending_reschedule_is_not_taken_for_a_persons_move(scenario: Scenario, google: FakeGoogle) -> None:
    await ship(scenario, "/ship friday")
    google.fail_next(1, status=403, reason="rateLimitExceeded", method_id="calendar.events.patch")
    await ship(scenario, "/ship thursday 14:00")
    # The event is still on Friday while the write waits for its retry: the watcher must not read
    # that as a person moving it back, nor move the release back.
    assert await scenario.worker.watch_calendars() == 0
    scenario.clock.advance(seconds=30)
    await scenario.settle()
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.slot is not None and release.event_id is not None
    assert release.slot.start == datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    assert starts_at(google, release.event_id) == release.slot.start
    assert scenario.answers(7) == []
    assert await scenario.worker.watch_calendars() == 0


async def test_a_persons_move_is_not_overwritten_by_the_next_update(scenario: Scenario, google: FakeGoogle) -> None:
    await ship(scenario, "/ship friday")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.event_id is not None
    event = google.calendars[DEPLOYS].events[release.event_id]
    event["start"] = {"dateTime": "2026-11-27T14:00:00+01:00"}
    event["end"] = {"dateTime": "2026-11-27T14:30:00+01:00"}
    # Before the watcher looks, a push makes the bot update the event's description.
    new_head = "c" * 40
    scenario.fake.push_to_pull(REPO, 7, new_head)
    await scenario.deliver("pull_request", synchronize(7, new_head, sender="alice"))
    scenario.clock.advance(seconds=31)
    await scenario.settle()
    moved = await scenario.store.get_active_release(REPO, 7)
    assert moved is not None and moved.slot is not None
    assert moved.slot.start == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)  # the release followed the person
    assert starts_at(google, release.event_id) == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)  # not put back
    assert "Verified SHA: not yet" in google.calendars[DEPLOYS].events[release.event_id]["description"]
    [reply] = scenario.answers(7)
    assert "the release follows it" in reply


async def test_a_freeze_title_cannot_mention_or_link_in_a_refusal(scenario: Scenario, google: FakeGoogle) -> None:
    title = "@octo-org/everyone [free prizes](https://evil.example) **now**"
    google.add_event(FREEZES, person_event(title, "2026-11-27T00:00:00+01:00", "2026-11-28T00:00:00+01:00"))
    await ship(scenario, "/ship friday 14:00")
    [reply] = scenario.answers(7)
    assert "@octo-org/everyone" not in reply and "@\u200bocto-org/everyone" in reply
    assert "[free prizes](https://evil.example)" not in reply and "\\[free prizes\\]" in reply
    assert "**now**" not in reply


async def test_losing_write_access_is_reported_to_the_requester_with_what_to_do(
    scenario: Scenario, google: FakeGoogle, robot: ServiceAccount
) -> None:
    await ship(scenario, "/ship friday")
    google.calendars[DEPLOYS].acl[robot.email] = "reader"  # someone downgraded the bot's sharing
    await ship(scenario, "/ship thursday 14:00")
    [reply] = scenario.answers(7)
    assert reply.startswith("@alice the release's calendar event could not be updated:")
    assert robot.email in reply and "Make changes to events" in reply
    # Reported once, not on every later change; the release itself still moved.
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.slot is not None
    assert release.slot.start == datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    scenario.clock.advance(minutes=5)
    await scenario.settle()
    assert len(scenario.answers(7)) == 1
