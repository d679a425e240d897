"""The embedded calendar, the iCalendar feed and the planner's bookkeeping, on a real SQLite store."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import icalendar
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import make_app
from bot.calendar import DONE_PREFIX, FAILED_PREFIX, Booking, Outcome, event_id, is_priority
from bot.calendar.embedded import EmbeddedCalendar
from bot.calendar.feed import ALL, FeedTokens, render_feed
from bot.calendar.planner import Calendars, _subtract
from bot.config import Settings
from bot.policy import Slot, Window
from bot.release import Release, State
from bot.repo_config import RepoConfig
from bot.secrets import SecretBox, Vault, generate_key
from bot.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
LANE = "octo-org/widgets production"
ClientFactory = Callable[[web.Application], Awaitable[TestClient]]


class Tick:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    sqlite = SqliteStore(tmp_path / "store.db")
    await sqlite.open()
    yield sqlite
    await sqlite.close()


def booking(**changes: object) -> Booking:
    base = Booking(
        release="octo-org/widgets#7/1",
        summary="Deploy octo-org/widgets#7",
        description="Pull request: https://github.com/octo-org/widgets/pull/7",
        start=T0,
        end=T0 + timedelta(minutes=30),
        lane=LANE,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_event_ids_are_stable_and_valid_for_google() -> None:
    first = event_id("octo-org/widgets#7/1")
    assert first == event_id("octo-org/widgets#7/1") != event_id("octo-org/widgets#7/2")
    # Google: base32hex characters (a-v, 0-9), 5 to 1024 of them.
    assert 5 <= len(first) <= 1024 and set(first) <= set("0123456789abcdefghijklmnopqrstuv")


def test_priority_marks() -> None:
    assert is_priority("Payments migration [FREEZE]")
    assert is_priority("DB failover", {"release-secretary-priority": "high"})
    assert not is_priority("Team lunch", {"release-secretary-priority": "low"})


async def test_booking_is_idempotent_and_edits_in_place(store: SqliteStore) -> None:
    calendar = EmbeddedCalendar(store, Tick())
    first = await calendar.book(LANE, booking())
    again = await calendar.book(LANE, booking())
    assert again == first  # nothing changed: no write, the same `updated`
    moved = await calendar.book(LANE, booking(start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=1, minutes=30)))
    assert moved.id == first.id and moved.updated is not None and first.updated is not None
    assert moved.updated > first.updated
    assert [e.start for e in await calendar.events(LANE, T0 - timedelta(days=1), T0 + timedelta(days=1))] == [
        T0 + timedelta(hours=1)
    ]
    busy = await calendar.free_busy([LANE, "elsewhere"], T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert busy.busy == {LANE: [(moved.start, moved.end)], "elsewhere": []} and busy.errors == {}


async def test_cancel_then_book_again_restores_the_event(store: SqliteStore) -> None:
    calendar = EmbeddedCalendar(store, Tick())
    event = await calendar.book(LANE, booking())
    await calendar.cancel(LANE, event.id)
    await calendar.cancel(LANE, event.id)  # already cancelled: fine
    await calendar.cancel(LANE, "never-existed")
    gone = await calendar.get(LANE, event.id)
    assert gone is not None and gone.cancelled
    assert await calendar.events(LANE, T0 - timedelta(days=1), T0 + timedelta(days=1)) == []
    back = await calendar.book(LANE, booking())
    assert back.id == event.id and not back.cancelled


@pytest.mark.parametrize(("outcome", "prefix"), [(Outcome.DONE, DONE_PREFIX), (Outcome.FAILED, FAILED_PREFIX)])
async def test_outcomes_mark_the_title(store: SqliteStore, outcome: Outcome, prefix: str) -> None:
    event = await EmbeddedCalendar(store, Tick()).book(LANE, booking(outcome=outcome))
    assert event.summary == prefix + "Deploy octo-org/widgets#7" and event.outcome is outcome


def _release(state: State, **changes: object) -> Release:
    base = Release(
        repo="octo-org/widgets",
        pr=7,
        number=1,
        installation_id=99,
        state=state,
        title="Faster widgets",
        base="main",
        head_sha="a" * 40,
        requested_by="alice",
        requested_at=T0 - timedelta(days=2),
        slot=Slot(T0, T0 + timedelta(minutes=30)),
        verified_sha="a" * 40,
        lane=LANE,
        calendar_account="embedded",
        calendar_id=LANE,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "title"),
    [
        (State.SCHEDULED, "Deploy octo-org/widgets#7"),
        (State.RELEASED, "✅ Deploy octo-org/widgets#7"),
        (State.FAILED, "❌ Deploy octo-org/widgets#7"),
    ],
)
async def test_sync_follows_the_release(store: SqliteStore, state: State, title: str) -> None:
    calendars = Calendars(store, Settings(), Tick())
    event = await calendars.sync(_release(state))
    assert event is not None and event.summary == title
    assert "Verified SHA: " + "a" * 40 in event.description and "Requested by: @alice" in event.description
    assert await calendars.sync(_release(State.CANCELLED)) is None
    stored = await store.get_calendar_event(LANE, event.id)
    assert stored is not None and stored.cancelled


async def test_conflicts_name_priority_events_and_other_releases(store: SqliteStore) -> None:
    weekdays = RepoConfig(windows=(Window(frozenset(range(5)), time(10), time(16)),))
    calendars = Calendars(store, Settings(), Tick())
    release = _release(State.SCHEDULED)
    await calendars.sync(release)
    assert await calendars.conflicts(release, weekdays) == []
    assert await calendars.conflicts(release, RepoConfig()) == [
        "Friday 27 Nov has no release window; windows are Mon-Thu 10:00-16:00 UTC"
    ]
    await calendars.embedded.book(LANE, booking(release="octo-org/widgets#8/1", summary="Deploy octo-org/widgets#8"))
    freeze = await store.get_calendar_event(LANE, event_id("octo-org/widgets#8/1"))
    assert freeze is not None
    await store.save_calendar_event(replace(freeze, id="manual", release=None, summary="DB failover", priority=True))
    found = await calendars.conflicts(release, weekdays)
    assert sorted(found) == [
        "'DB failover' is marked as taking priority and overlaps the slot",
        "another release (Deploy octo-org/widgets#8) is booked over the slot",
    ]


def test_subtract_removes_only_the_own_interval() -> None:
    h = [T0 + timedelta(hours=i) for i in range(6)]
    assert _subtract([(h[0], h[3])], h[1], h[2]) == [(h[0], h[1]), (h[2], h[3])]
    assert _subtract([(h[0], h[1]), (h[4], h[5])], h[1], h[4]) == [(h[0], h[1]), (h[4], h[5])]
    assert _subtract([(h[1], h[2])], h[0], h[3]) == []


async def test_feed_tokens_are_per_scope_and_survive_a_restart(store: SqliteStore) -> None:
    box = SecretBox((generate_key(),))
    tokens = FeedTokens(Vault(store, box), Tick())
    token = await tokens.token("octo-org/widgets")
    assert await tokens.verify("octo-org/widgets", token)
    assert not await tokens.verify("octo-org/other", token)
    assert not await tokens.verify(ALL, token)
    assert not await tokens.verify("octo-org/widgets", token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not await tokens.verify("octo-org/widgets", "ünïcode")
    # A new process reads the same secret back from the store: links stay valid.
    assert await FeedTokens(Vault(store, box), Tick()).token("octo-org/widgets") == token
    # The secret is stored encrypted.
    raw = await store.get_secret("calendar:feed-secret")
    assert raw is not None and token.encode() not in raw
    # Until a rotation the HMAC input is what it was before versions existed: posted links still work.
    secret = await Vault(store, box).get("calendar:feed-secret")
    assert secret is not None
    mac = hmac.new(secret.encode(), b"calendar-feed:octo-org/widgets", hashlib.sha256).digest()
    assert token == base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")
    url = await tokens.url("https://bot.example.test/", "octo-org/widgets")
    assert url == f"https://bot.example.test/calendar.ics?repo=octo-org%2Fwidgets&token={token}"


async def test_rotating_a_scope_revokes_its_links_and_only_its_links(store: SqliteStore) -> None:
    box = SecretBox((generate_key(),))
    tokens = FeedTokens(Vault(store, box), Tick())
    widgets, other, everything = [await tokens.token(s) for s in ("octo-org/widgets", "octo-org/other", ALL)]
    assert await tokens.version("octo-org/widgets") == 0
    assert await tokens.rotate("octo-org/widgets") == 1
    new = await tokens.token("octo-org/widgets")
    assert new != widgets
    assert not await tokens.verify("octo-org/widgets", widgets)  # the leaked link is dead
    assert await tokens.verify("octo-org/widgets", new)
    assert await tokens.verify("octo-org/other", other) and await tokens.verify(ALL, everything)
    # Another process (the CLI) rotating is seen at once by this one: versions are not cached.
    await FeedTokens(Vault(store, box), Tick(), values=store).rotate("octo-org/widgets")
    assert await store.get_value("calendar:feed-version:octo-org/widgets") == "2"
    assert not await tokens.verify("octo-org/widgets", new)
    newest = await tokens.token("octo-org/widgets")
    assert newest not in (widgets, new) and await tokens.verify("octo-org/widgets", newest)
    # A later version's token is no token for a look-alike scope at version 0.
    for lookalike in ("octo-org/widgets:2", '["calendar-feed", "octo-org/widgets", 2]'):
        assert not await tokens.verify(lookalike, newest)


async def test_a_repository_feed_shows_its_own_lanes_and_dies_when_rotated(
    store: SqliteStore, settings: Settings, aiohttp_client: ClientFactory
) -> None:
    clock = Tick()
    calendar = EmbeddedCalendar(store, clock)
    # A repository whose name only starts like this one's: its release must not show.
    await calendar.book("octo-org/widgets-v2 production", booking(release="octo-org/widgets-v2#1/1"))
    await calendar.book(LANE, booking())
    client = await aiohttp_client(make_app(settings, store=store, clock=clock))
    tokens = FeedTokens(Vault(store, SecretBox(settings.secrets_keys)), clock)
    link = await tokens.url("https://bot.example.test", "octo-org/widgets")
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}

    response = await client.get("/calendar.ics", params=query)
    assert response.status == 200
    [vevent] = icalendar.Calendar.from_ical(await response.read()).walk("VEVENT")
    assert str(vevent["summary"]) == "Deploy octo-org/widgets#7"

    await tokens.rotate("octo-org/widgets")
    response = await client.get("/calendar.ics", params=query)
    assert response.status == 404 and (await response.json()) == {"error": "no such calendar feed"}
    fresh = {k: v[0] for k, v in parse_qs(urlsplit(await tokens.url("https://x", "octo-org/widgets")).query).items()}
    assert (await client.get("/calendar.ics", params=fresh)).status == 200


async def test_feed_leaves_cancelled_events_out_and_raises_sequence_on_edits(store: SqliteStore) -> None:
    calendar = EmbeddedCalendar(store, Tick())
    first = await calendar.book(LANE, booking())
    other = await calendar.book(LANE, booking(release="x#1/1", summary="Deploy x#1"))
    await calendar.cancel(LANE, other.id)
    events = await store.list_calendar_events(None, start=T0 - timedelta(days=1), end=T0 + timedelta(days=1))
    now = datetime(2026, 11, 26, tzinfo=UTC)
    parsed = icalendar.Calendar.from_ical(render_feed([*events, replace(other, cancelled=True)], name="R", now=now))
    [vevent] = parsed.walk("VEVENT")
    assert str(vevent["summary"]) == "Deploy octo-org/widgets#7"
    assert str(parsed["x-wr-calname"]) == "R"
    moved = await calendar.book(LANE, booking(start=T0 + timedelta(days=1), end=T0 + timedelta(days=1, minutes=30)))
    [again] = icalendar.Calendar.from_ical(render_feed([moved], name="R", now=now)).walk("VEVENT")
    assert int(again["sequence"]) > int(vevent["sequence"])
    assert again.decoded("dtstart") == T0 + timedelta(days=1) and first.id == moved.id
