"""Booking in the embedded calendar, the .ics feed, one release per lane and slot, and the T-minus
check: the real app and worker, the fake GitHub, signed webhooks; the feed is parsed back with icalendar."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import icalendar
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import make_app
from bot.calendar import event_id
from bot.config import Settings
from bot.release import State
from tests.fakes.github import FakeGitHub
from tests.scenario import REPO, Clock, Scenario, suite_completed

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
HEAD = "a" * 40
OTHER_HEAD = "b" * 40
CONFIG = """\
timezone: Europe/Berlin
windows:
  - days: [mon-fri]
    hours: "10:00-16:00"
"""


@pytest.fixture
async def scenario(aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub) -> Scenario:
    clock = Clock()  # Wed 25 Nov 2026 09:00 UTC
    for pr, head, author in ((7, HEAD, "alice"), (8, OTHER_HEAD, "carol")):
        fake_github.add_pull(REPO, pr, head_sha=head, title=f"Change {pr}", user_login=author)
        fake_github.add_check_run(REPO, head, "ci/build", status="completed", conclusion="success")
    for login in ("alice", "carol"):
        fake_github.set_permission(REPO, login, "write")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    fake_github.set_file(REPO, ".github/release-secretary.yml", CONFIG)
    settings = app_settings.replace(sticky_debounce=0.0, public_url="https://bot.example.test")
    client = await aiohttp_client(make_app(settings, clock=clock))
    return Scenario(client, settings, fake_github, clock)


async def ship(scenario: Scenario, pr: int, text: str, *, sender: str = "alice") -> None:
    await scenario.deliver("issue_comment", scenario.comment(pr, text, sender=sender))


async def feed(scenario: Scenario, link: str) -> icalendar.Calendar:
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}" == "https://bot.example.test"
    response = await scenario.client.get(parts.path, params={k: v[0] for k, v in parse_qs(parts.query).items()})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/calendar; charset=utf-8"
    return icalendar.Calendar.from_ical(await response.read())


def vevents(calendar: icalendar.Calendar) -> list[icalendar.Event]:
    return list(calendar.walk("VEVENT"))


async def test_ship_friday_books_the_embedded_calendar_and_the_feed_shows_it_until_cancelled(
    scenario: Scenario,
) -> None:
    await ship(scenario, 7, "/ship friday")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.SCHEDULED and release.slot is not None
    # Friday's first window slot: 10:00 Berlin = 09:00 UTC.
    assert release.slot.start == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert release.lane == f"{REPO} production"
    assert release.event_id == event_id(release.key)
    assert release.calendar_account == "embedded"
    stored = await scenario.store.get_calendar_event(release.lane, release.event_id)
    assert stored is not None and stored.summary == f"Deploy {REPO}#7" and not stored.cancelled
    assert f"https://github.com/{REPO}/pull/7" in stored.description and HEAD in stored.description

    # The sticky comment states the slot in the repo zone and UTC, with the feed link.
    body = scenario.sticky(7)["body"]
    assert "Fri 27 Nov 10:00-10:30 Europe/Berlin (09:00 UTC)" in body
    assert release.event_link is not None and f"[calendar]({release.event_link})" in body

    # The person who asked is answered with the slot, UTC and the calendar (the repository's feed).
    [booked] = scenario.replies(7)
    assert booked.startswith("@alice booked **Fri 27 Nov 10:00-10:30 Europe/Berlin (09:00 UTC)** · [calendar](")
    assert f"[calendar]({release.event_link})" in booked

    [event] = vevents(await feed(scenario, release.event_link))
    assert str(event["summary"]) == f"Deploy {REPO}#7"
    assert event.decoded("dtstart") == release.slot.start
    assert event.decoded("dtend") == release.slot.end
    assert str(event["uid"]) == f"{release.event_id}@release-secretary"

    await ship(scenario, 7, "/ship cancel")
    assert vevents(await feed(scenario, release.event_link)) == []
    cancelled = await scenario.store.get_calendar_event(release.lane, release.event_id)
    assert cancelled is not None and cancelled.cancelled
    assert scenario.fake.violations == []


async def test_the_feed_wants_the_right_token_for_the_right_repository(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.event_link is not None
    token = parse_qs(urlsplit(release.event_link).query)["token"][0]
    for params in (
        {"repo": REPO},
        {"repo": REPO, "token": ("y" if token[0] == "x" else "x") + token[1:]},  # one character off
        {"repo": "octo-org/other", "token": token},  # a token is good for its own repository only
        {"token": token},  # nor for every repository
    ):
        response = await scenario.client.get("/calendar.ics", params=params)
        assert response.status == 404, params
        assert (await response.json()) == {"error": "no such calendar feed"}


async def test_two_prs_asking_for_the_same_slot_get_one_each(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday")
    await ship(scenario, 8, "/ship friday", sender="carol")
    first = await scenario.store.get_active_release(REPO, 7)
    second = await scenario.store.get_active_release(REPO, 8)
    assert first is not None and first.slot is not None and second is not None and second.slot is not None
    # Friday's first slot (10:00 Berlin) went to #7; #8 gets the next one, 10:30.
    assert first.slot.start == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert second.slot.start == datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    assert first.event_id != second.event_id

    # An exact time that is taken is refused, saying by what, with the next free slot to take.
    await ship(scenario, 8, "/ship friday 10:00", sender="carol")
    reply = scenario.answers(8)[-1]
    assert "@carol" in reply and "overlaps the release of octo-org/widgets#7" in reply
    assert "`/ship 2026-11-27 10:30`" in reply  # #8's own slot is free for #8
    unchanged = await scenario.store.get_active_release(REPO, 8)
    assert unchanged is not None and unchanged.slot == second.slot


async def test_another_environment_is_another_lane(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday")
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", CONFIG + "deploy:\n  environment: staging\n")
    scenario.worker.service.read._configs.clear()  # the 30-second config cache, as if it had expired
    await ship(scenario, 8, "/ship friday", sender="carol")
    second = await scenario.store.get_active_release(REPO, 8)
    assert second is not None and second.slot is not None and second.lane == f"{REPO} staging"
    assert second.slot.start == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


async def test_rescheduling_moves_the_same_event(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday")
    before = await scenario.store.get_active_release(REPO, 7)
    assert before is not None and before.event_id is not None
    await ship(scenario, 7, "/ship thursday 14:00")
    after = await scenario.store.get_active_release(REPO, 7)
    assert after is not None and after.slot is not None and after.event_id == before.event_id
    events = await scenario.store.list_calendar_events(
        after.lane, start=datetime(2026, 11, 1, tzinfo=UTC), end=datetime(2026, 12, 31, tzinfo=UTC)
    )
    assert [(e.id, e.start) for e in events] == [(before.event_id, datetime(2026, 11, 26, 13, 0, tzinfo=UTC))]


async def test_tminus_check_passes_quietly_when_all_is_well(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday 3pm")
    scenario.clock.now = datetime(2026, 11, 27, 13, 45, tzinfo=UTC)  # T-15
    await scenario.settle()
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.SCHEDULED
    assert release.audit[-1].reason == "pre-release check passed"
    assert release.prechecked_for == release.slot.start if release.slot else False
    assert scenario.answers(7) == []
    # The check ran once: settling again does nothing more.
    assert await scenario.settle() == 0


async def test_tminus_check_finds_red_checks_pings_the_requester_and_offers_the_next_slot(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday 3pm")
    # CI went red and its webhook never arrived: the T-minus check reads the checks itself.
    scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="failure")
    scenario.clock.now = datetime(2026, 11, 27, 13, 45, tzinfo=UTC)
    await scenario.settle()
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.BLOCKED
    [reply] = scenario.answers(7)
    assert reply.startswith("@alice the release at **Fri 27 Nov 15:00-15:30 Europe/Berlin (14:00 UTC)**")
    assert "ci/build is failing" in reply
    assert "`/ship 2026-11-27 15:30`" in reply
    body = scenario.sticky(7)["body"]
    assert "Blocked" in body and "**Next free slot**: Fri 27 Nov 15:30-16:00" in body

    # Taking the offer books the new slot and clears the offer.
    scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    await scenario.deliver("check_suite", suite_completed(HEAD))
    await ship(scenario, 7, "/ship 2026-11-27 15:30")
    moved = await scenario.store.get_active_release(REPO, 7)
    assert moved is not None and moved.state is State.SCHEDULED and moved.proposal is None
    assert moved.slot is not None and moved.slot.start == datetime(2026, 11, 27, 14, 30, tzinfo=UTC)


async def test_tminus_check_sees_a_freeze_added_after_booking(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday 3pm")
    scenario.fake.set_file(
        REPO,
        ".github/release-secretary.yml",
        CONFIG + "freezes:\n  - from: 2026-11-27\n    reason: Black Friday\n",
    )
    scenario.clock.now = datetime(2026, 11, 27, 13, 45, tzinfo=UTC)
    await scenario.settle()
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.BLOCKED
    assert any("Black Friday" in b for b in release.blockers)
    [reply] = scenario.answers(7)
    assert "Black Friday" in reply and "@alice" in reply
    assert "`/ship 2026-11-30 10:00`" in reply  # Monday's first slot, after the frozen Friday


async def test_a_late_timer_says_it_was_late(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday 3pm")
    scenario.clock.now = datetime(2026, 11, 27, 13, 55, tzinfo=UTC)  # the workers were down at 13:45
    await scenario.settle()
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None
    assert release.audit[-1].reason.startswith("pre-release check passed (late by 10 min")


async def test_a_requester_zone_named_once_is_used_for_them(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday 9am America/New_York")
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.slot is not None
    assert release.slot.start == datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    body = scenario.sticky(7)["body"]
    assert "Fri 27 Nov 15:00-15:30 Europe/Berlin (14:00 UTC); Fri 09:00 for alice (America/New_York)" in body
    [booked] = scenario.replies(7)
    assert booked.startswith(
        "@alice booked **Fri 27 Nov 15:00-15:30 Europe/Berlin (14:00 UTC)**, Fri 27 Nov 09:00 your time "
        "(America/New_York) · [calendar](https://bot.example.test/calendar.ics?repo=octo-org%2Fwidgets&token="
    )
    # Later requests without a zone still show alice's own time.
    await ship(scenario, 7, "/ship thursday 11:00")
    assert "Thu 05:00 for alice (America/New_York)" in scenario.sticky(7)["body"]


async def test_ship_calendar_says_where_and_links(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship calendar")
    [reply] = scenario.answers(7)
    assert reply.startswith("@alice releases of this repository are booked in the bot's built-in release calendar")
    assert "https://bot.example.test/calendar.ics?repo=octo-org%2Fwidgets&token=" in reply
    assert "`/ship calendar link`" in reply

    await ship(scenario, 7, "/ship calendar link")
    assert scenario.answers(7)[-1] == (
        "@alice calendar linking is not set up on this bot yet: linking Google calendars needs "
        "GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET"
    )
    await ship(scenario, 7, "/ship calendar unlink")
    assert scenario.answers(7)[-1] == "@alice no Google calendar was linked to your GitHub account."
    await ship(scenario, 7, "/ship calendar sync")
    assert "`/ship calendar` takes `link`, `unlink` or nothing" in scenario.answers(7)[-1]


async def test_ship_calendar_link_gives_a_one_time_url_to_people_who_may_ship(
    aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub
) -> None:
    fake_github.add_pull(REPO, 7, head_sha=HEAD, title="Change 7", user_login="alice")
    fake_github.set_permission(REPO, "alice", "write")
    fake_github.set_permission(REPO, "bob", "read")
    settings = app_settings.replace(
        public_url="https://bot.example.test",
        google_client_id="id.apps.googleusercontent.com",
        google_client_secret="google-secret",
        github_client_id="Iv1.0123456789abcdef",
        github_client_secret="github-secret",
    )
    clock = Clock()
    scenario = Scenario(await aiohttp_client(make_app(settings, clock=clock)), settings, fake_github, clock)
    await ship(scenario, 7, "/ship calendar link")
    [reply] = scenario.answers(7)
    assert reply.startswith("@alice open https://bot.example.test/oauth/google/start?state=")
    assert "works once and only for you" in reply
    # The link leads to GitHub first, to confirm it is alice who opened it.
    start = urlsplit(reply.split()[2])
    response = await scenario.client.get(start.path + "?" + start.query, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith(f"{settings.github_url}/login/oauth/authorize?")

    await ship(scenario, 7, "/ship calendar link", sender="bob")
    assert "only people with **write** access (or more) can link a calendar here" in scenario.answers(7)[-1]


async def test_a_blocked_release_is_checked_again_and_goes_ahead_once_the_conflict_is_gone(
    scenario: Scenario,
) -> None:
    await ship(scenario, 7, "/ship friday 3pm")
    frozen = CONFIG + "freezes:\n  - from: 2026-11-27\n    reason: Black Friday\n"
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", frozen)
    scenario.clock.now = datetime(2026, 11, 27, 13, 45, tzinfo=UTC)
    await scenario.settle()
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.BLOCKED
    # Still frozen five minutes later: still blocked, and nobody is pinged twice.
    scenario.clock.advance(minutes=5)
    await scenario.settle()
    assert len(scenario.answers(7)) == 1
    # The freeze is lifted: the next look finds nothing against the slot.
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", CONFIG)
    scenario.clock.advance(minutes=5)
    await scenario.settle()
    cleared = await scenario.store.get_active_release(REPO, 7)
    assert cleared is not None and cleared.state is State.SCHEDULED and cleared.conflicts == ()
    assert cleared.audit[-1].reason == "pre-release check passed"
    assert len(scenario.answers(7)) == 1


async def test_two_prs_asking_at_the_same_moment_still_get_one_slot_each(scenario: Scenario) -> None:
    # Both comments are stored, then one worker pass runs them concurrently.
    for pr, sender in ((7, "alice"), (8, "carol")):
        assert await scenario.send("issue_comment", scenario.comment(pr, "/ship friday", sender=sender)) == 202
    await scenario.settle()
    slots = {
        pr: release.slot.start
        for pr in (7, 8)
        if (release := await scenario.store.get_active_release(REPO, pr)) is not None and release.slot is not None
    }
    assert sorted(slots.values()) == [
        datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
        datetime(2026, 11, 27, 9, 30, tzinfo=UTC),
    ]


async def test_hold_and_unhold_after_a_blocked_check_looks_again(scenario: Scenario) -> None:
    await ship(scenario, 7, "/ship friday 3pm")
    frozen = CONFIG + "freezes:\n  - from: 2026-11-27\n    reason: Black Friday\n"
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", frozen)
    scenario.clock.now = datetime(2026, 11, 27, 13, 45, tzinfo=UTC)
    await scenario.settle()
    await ship(scenario, 7, "/ship hold")
    scenario.fake.set_file(REPO, ".github/release-secretary.yml", CONFIG)  # the freeze is lifted
    scenario.clock.advance(minutes=6)
    await scenario.settle()
    await ship(scenario, 7, "/ship unhold")
    scenario.clock.advance(seconds=1)
    await scenario.settle()
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.state is State.SCHEDULED and release.conflicts == ()
    assert release.audit[-1].reason == "pre-release check passed"
