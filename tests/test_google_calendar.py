"""GoogleCalendar: the real google-api-python-client and google-auth, over HTTP, against the fake Google."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import google.oauth2.credentials
import pytest
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from bot.calendar import (
    LANE_PROPERTY,
    RELEASE_PROPERTY,
    SCOPES,
    Booking,
    CalendarError,
    Outcome,
    event_id,
)
from bot.calendar.google import (
    OUTCOME_PROPERTY,
    GoogleCalendar,
    service_account_credentials,
    user_credentials,
)
from bot.config import Settings
from tests.fakes.google_calendar import FakeGoogle, ServiceAccount

DEPLOYS = "deploys@group.calendar.google.com"
T0 = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
CLIENT_ID = "1234-bot.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-not-a-real-secret"


@pytest.fixture
async def fake_google() -> AsyncIterator[FakeGoogle]:
    async with FakeGoogle() as fake:
        yield fake
        assert fake.violations == []


@pytest.fixture
def service_account(fake_google: FakeGoogle) -> ServiceAccount:
    account = fake_google.add_service_account()
    fake_google.add_calendar(DEPLOYS, acl={account.email: "writer"}, time_zone="Europe/Berlin")
    return account


@pytest.fixture
def settings(fake_google: FakeGoogle, service_account: ServiceAccount) -> Settings:
    return Settings(
        google_calendar_api_url=fake_google.url,
        google_service_account=service_account.key_json,
        google_client_id=CLIENT_ID,
        google_client_secret=CLIENT_SECRET,
        google_auth_url=fake_google.auth_url,
        google_token_url=fake_google.token_url,
    )


@pytest.fixture
def calendar(settings: Settings) -> GoogleCalendar:
    return GoogleCalendar.for_service_account(settings)


def booking(start: datetime = T0, *, minutes: int = 30, outcome: Outcome = Outcome.BOOKED) -> Booking:
    return Booking(
        release="octo-org/widgets#12/1",
        summary="Deploy octo-org/widgets#12",
        description="https://github.com/octo-org/widgets/pull/12",
        start=start,
        end=start + timedelta(minutes=minutes),
        lane="octo-org/widgets production",
        outcome=outcome,
    )


RELEASE_ID = event_id("octo-org/widgets#12/1")


async def test_book_inserts_the_event_with_its_release_id(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    event = await calendar.book(DEPLOYS, booking())

    [insert] = fake_google.writes()
    assert (insert.method, insert.path) == ("POST", f"/calendar/v3/calendars/{DEPLOYS}/events")
    assert insert.query == {"sendUpdates": "none", "alt": "json"}
    assert insert.account == "release-bot@deploys.iam.gserviceaccount.com"
    assert insert.json == {
        "id": RELEASE_ID,
        "summary": "Deploy octo-org/widgets#12",
        "description": "https://github.com/octo-org/widgets/pull/12",
        "start": {"dateTime": "2026-11-27T13:00:00Z"},
        "end": {"dateTime": "2026-11-27T13:30:00Z"},
        "extendedProperties": {
            "private": {
                RELEASE_PROPERTY: "octo-org/widgets#12/1",
                LANE_PROPERTY: "octo-org/widgets production",
                OUTCOME_PROPERTY: "booked",
            }
        },
        "colorId": "9",
        "transparency": "opaque",
    }
    assert event.id == RELEASE_ID
    assert (event.start, event.end) == (T0, T0 + timedelta(minutes=30))  # Google answered in Berlin time
    assert (event.release, event.lane, event.outcome) == (
        "octo-org/widgets#12/1",
        "octo-org/widgets production",
        Outcome.BOOKED,
    )
    assert event.link is not None and event.link.startswith("https://www.google.com/calendar/event?eid=")
    assert not event.cancelled and not event.priority


async def test_booking_again_writes_nothing(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    first = await calendar.book(DEPLOYS, booking())
    again = await calendar.book(DEPLOYS, booking())

    # The second insert meets the id (409), reads the event, finds it up to date and stops there.
    assert [(r.method, r.status) for r in fake_google.calendar_calls()] == [("POST", 200), ("POST", 409), ("GET", 200)]
    assert again == first


async def test_rescheduling_patches_only_what_changed(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    await calendar.book(DEPLOYS, booking())
    moved = await calendar.book(DEPLOYS, booking(T0 + timedelta(hours=2), minutes=45))

    patch = fake_google.calendar_calls("PATCH")[-1]
    assert patch.path == f"/calendar/v3/calendars/{DEPLOYS}/events/{RELEASE_ID}"
    assert patch.query == {"sendUpdates": "none", "alt": "json"}
    assert patch.json == {
        "start": {"dateTime": "2026-11-27T15:00:00Z"},
        "end": {"dateTime": "2026-11-27T15:45:00Z"},
        "status": "confirmed",
    }
    assert (moved.start, moved.end) == (T0 + timedelta(hours=2), T0 + timedelta(hours=2, minutes=45))


async def test_an_outcome_retitles_and_recolours_the_event(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    await calendar.book(DEPLOYS, booking())
    done = await calendar.book(DEPLOYS, booking(outcome=Outcome.DONE))

    patch = fake_google.calendar_calls("PATCH")[-1]
    assert patch.json == {
        "summary": "✅ Deploy octo-org/widgets#12",
        "extendedProperties": {
            "private": {
                RELEASE_PROPERTY: "octo-org/widgets#12/1",
                LANE_PROPERTY: "octo-org/widgets production",
                OUTCOME_PROPERTY: "done",
            }
        },
        "colorId": "10",
        "status": "confirmed",
    }
    assert (done.summary, done.outcome) == ("✅ Deploy octo-org/widgets#12", Outcome.DONE)


async def test_booking_restores_an_event_a_person_deleted(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    await calendar.book(DEPLOYS, booking())
    fake_google.delete_event(DEPLOYS, RELEASE_ID)
    gone = await calendar.get(DEPLOYS, RELEASE_ID)
    assert gone is not None and gone.cancelled

    restored = await calendar.book(DEPLOYS, booking())

    assert fake_google.calendar_calls("PATCH")[-1].json == {"status": "confirmed"}
    assert not restored.cancelled
    assert fake_google.calendars[DEPLOYS].events[RELEASE_ID]["status"] == "confirmed"


async def test_get_tells_cancelled_from_never_booked(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    await calendar.book(DEPLOYS, booking())
    await calendar.cancel(DEPLOYS, RELEASE_ID)

    cancelled = await calendar.get(DEPLOYS, RELEASE_ID)
    assert cancelled is not None and cancelled.cancelled and cancelled.release == "octo-org/widgets#12/1"
    assert await calendar.get(DEPLOYS, event_id("octo-org/widgets#99/1")) is None


async def test_cancel_is_fine_with_an_event_already_gone(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    await calendar.book(DEPLOYS, booking())
    await calendar.cancel(DEPLOYS, RELEASE_ID)
    await calendar.cancel(DEPLOYS, RELEASE_ID)
    await calendar.cancel(DEPLOYS, event_id("never booked"))

    deletes = fake_google.calendar_calls("DELETE")
    assert [(r.query, r.status) for r in deletes] == [({"sendUpdates": "none"}, status) for status in (204, 410, 404)]


async def test_free_busy_asks_once_and_says_which_calendars_it_cannot_read(
    fake_google: FakeGoogle, calendar: GoogleCalendar, service_account: ServiceAccount
) -> None:
    fake_google.add_calendar(
        "ada@example.com", acl={"ada@example.com": "owner", service_account.email: "freeBusyReader"}
    )
    fake_google.add_calendar("private@example.com", acl={"private@example.com": "owner"})
    fake_google.add_event(
        "ada@example.com",
        {
            "summary": "1:1",
            "start": {"dateTime": "2026-11-27T14:00:00+01:00"},
            "end": {"dateTime": "2026-11-27T15:00:00+01:00"},
        },
    )
    fake_google.add_event(
        "ada@example.com",
        {
            "summary": "Focus (shown as free)",
            "transparency": "transparent",
            "start": {"dateTime": "2026-11-27T16:00:00Z"},
            "end": {"dateTime": "2026-11-27T17:00:00Z"},
        },
    )
    await calendar.book(DEPLOYS, booking(T0 + timedelta(hours=1)))

    result = await calendar.free_busy([DEPLOYS, "ada@example.com", "private@example.com"], T0, T0 + timedelta(hours=8))

    [query] = [r for r in fake_google.calendar_calls("POST") if r.path.endswith("/freeBusy")]
    assert query.json == {
        "timeMin": "2026-11-27T13:00:00Z",
        "timeMax": "2026-11-27T21:00:00Z",
        "items": [{"id": DEPLOYS}, {"id": "ada@example.com"}, {"id": "private@example.com"}],
    }
    assert result.busy == {
        DEPLOYS: [(T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=30))],
        "ada@example.com": [(T0, T0 + timedelta(hours=1))],
    }
    assert result.errors == {
        "private@example.com": "cannot read its free/busy time: not found, or not shared with this account"
    }


async def test_free_busy_of_nothing_asks_nothing(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    assert (await calendar.free_busy([], T0, T0 + timedelta(hours=1))).busy == {}
    assert fake_google.requests == []


async def test_events_pages_through_and_keeps_only_what_blocks(
    fake_google: FakeGoogle, calendar: GoogleCalendar
) -> None:
    fake_google.page_size = 2
    await calendar.book(DEPLOYS, booking())
    fake_google.add_event(
        DEPLOYS,
        {
            "summary": "[freeze] Black Friday",  # all-day, and all-day events are "free" by default
            "transparency": "transparent",
            "start": {"date": "2026-11-27"},
            "end": {"date": "2026-11-28"},
        },
    )
    fake_google.add_event(
        DEPLOYS,
        {
            "summary": "Lunch (free)",
            "transparency": "transparent",
            "start": {"dateTime": "2026-11-27T11:00:00Z"},
            "end": {"dateTime": "2026-11-27T12:00:00Z"},
        },
    )
    incident = fake_google.add_event(
        DEPLOYS,
        {
            "summary": "DB maintenance",
            "extendedProperties": {"shared": {"release-secretary-priority": "high"}},
            "start": {"dateTime": "2026-11-27T18:00:00+01:00"},
            "end": {"dateTime": "2026-11-27T19:00:00+01:00"},
        },
    )
    old = fake_google.add_event(
        DEPLOYS,
        {"summary": "Old", "start": {"dateTime": "2026-11-27T09:00:00Z"}, "end": {"dateTime": "2026-11-27T10:00:00Z"}},
    )
    fake_google.delete_event(DEPLOYS, old["id"])

    events = await calendar.events(DEPLOYS, T0 - timedelta(hours=13), T0 + timedelta(hours=11))

    lists = fake_google.calendar_calls("GET")
    assert len(lists) == 2 and "pageToken" in lists[1].query
    assert {k: v for k, v in lists[0].query.items()} == {
        "timeMin": "2026-11-27T00:00:00Z",
        "timeMax": "2026-11-28T00:00:00Z",
        "singleEvents": "true",
        "orderBy": "startTime",
        "showDeleted": "false",
        "alt": "json",
    }
    freeze, release, maintenance = events
    # All-day means the calendar's day: midnight in Berlin is 23:00 UTC the day before.
    assert (freeze.start, freeze.end) == (
        datetime(2026, 11, 26, 23, tzinfo=UTC),
        datetime(2026, 11, 27, 23, tzinfo=UTC),
    )
    assert freeze.priority and freeze.release is None and freeze.outcome is None
    assert (release.id, release.release, release.outcome, release.priority) == (
        RELEASE_ID,
        "octo-org/widgets#12/1",
        Outcome.BOOKED,
        False,
    )
    assert (maintenance.id, maintenance.priority) == (incident["id"], True)
    assert maintenance.start == datetime(2026, 11, 27, 17, tzinfo=UTC)


async def test_rate_limits_and_outages_are_worth_retrying(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    for status, reason in ((403, "rateLimitExceeded"), (429, "rateLimitExceeded"), (500, "backendError")):
        fake_google.fail_next(status=status, reason=reason)
        with pytest.raises(CalendarError) as caught:
            await calendar.book(DEPLOYS, booking())
        assert (caught.value.retry, caught.value.status) == (True, status)
    await calendar.book(DEPLOYS, booking())  # and then it works
    assert fake_google.calendars[DEPLOYS].events[RELEASE_ID]["status"] == "confirmed"


async def test_a_calendar_not_shared_says_with_whom_to_share_it(
    fake_google: FakeGoogle, calendar: GoogleCalendar, service_account: ServiceAccount
) -> None:
    fake_google.add_calendar("team@example.com", acl={"lead@example.com": "owner"})

    with pytest.raises(CalendarError) as caught:
        await calendar.book("team@example.com", booking())

    error = caught.value
    assert (error.retry, error.status) == (False, 404)
    assert "team@example.com" in error.message
    assert service_account.email in error.advice and "Make changes to events" in error.advice
    with pytest.raises(CalendarError) as unseen:
        await calendar.get("team@example.com", RELEASE_ID)  # a missing calendar is not a missing event
    assert service_account.email in unseen.value.advice


async def test_a_read_only_calendar_needs_write_access(
    fake_google: FakeGoogle, calendar: GoogleCalendar, service_account: ServiceAccount
) -> None:
    fake_google.add_calendar("readonly@example.com", acl={service_account.email: "reader"})

    with pytest.raises(CalendarError) as caught:
        await calendar.book("readonly@example.com", booking())

    assert (caught.value.retry, caught.value.status) == (False, 403)
    assert "writer access" in caught.value.message
    assert service_account.email in caught.value.advice and "Make changes to events" in caught.value.advice
    assert await calendar.events("readonly@example.com", T0, T0 + timedelta(hours=1)) == []


async def test_a_disabled_service_account_key_says_to_check_it(
    fake_google: FakeGoogle, calendar: GoogleCalendar, service_account: ServiceAccount
) -> None:
    service_account.disabled = True

    with pytest.raises(CalendarError) as caught:
        await calendar.free_busy([DEPLOYS], T0, T0 + timedelta(hours=1))

    assert not caught.value.retry
    assert "invalid_grant" in caught.value.message
    assert "service account key" in caught.value.advice


async def test_a_revoked_link_says_to_relink(fake_google: FakeGoogle, settings: Settings) -> None:
    fake_google.add_oauth_client(CLIENT_ID, CLIENT_SECRET, "https://bot.example/oauth/google/callback")
    fake_google.add_calendar("ada@example.com", acl={"ada@example.com": "owner"})
    refresh_token = fake_google.grant_refresh_token("ada@example.com", CLIENT_ID, SCOPES)
    ada = GoogleCalendar(
        user_credentials(refresh_token, settings), "google:user:ada", api_url=settings.google_calendar_api_url
    )
    await ada.book("primary", booking())
    assert RELEASE_ID in fake_google.calendars["ada@example.com"].events

    fake_google.revoke(refresh_token)  # her access token dies with it: 401, refresh, invalid_grant
    with pytest.raises(CalendarError) as caught:
        await ada.events("primary", T0, T0 + timedelta(hours=1))

    assert not caught.value.retry
    assert "/ship calendar link" in caught.value.advice
    assert refresh_token not in str(caught.value)
    assert [r.status for r in fake_google.requests if r.path == "/token"] == [200, 400]


async def test_a_linked_person_cannot_see_a_calendar_not_shared_with_them(
    fake_google: FakeGoogle, settings: Settings
) -> None:
    fake_google.add_oauth_client(CLIENT_ID, CLIENT_SECRET, "https://bot.example/oauth/google/callback")
    fake_google.add_calendar("ada@example.com", acl={"ada@example.com": "owner"})
    refresh_token = fake_google.grant_refresh_token("ada@example.com", CLIENT_ID, SCOPES)
    ada = GoogleCalendar(
        user_credentials(refresh_token, settings), "google:user:ada", api_url=settings.google_calendar_api_url
    )

    busy = await ada.free_busy([DEPLOYS], T0, T0 + timedelta(hours=1))
    assert busy.errors == {DEPLOYS: "cannot read its free/busy time: not found, or not shared with this account"}
    with pytest.raises(CalendarError) as caught:
        await ada.events(DEPLOYS, T0, T0 + timedelta(hours=1))
    assert caught.value.status == 404
    assert "the Google account @ada linked" in caught.value.advice


def test_link_opens_the_calendar_in_google(calendar: GoogleCalendar) -> None:
    assert calendar.link(DEPLOYS) == "https://calendar.google.com/calendar/r?cid=deploys%40group.calendar.google.com"
    assert calendar.account == "google:service"
    assert calendar.email == "release-bot@deploys.iam.gserviceaccount.com"


async def test_the_fake_refuses_what_the_discovery_document_does_not_describe(
    fake_google: FakeGoogle, settings: Settings, service_account: ServiceAccount
) -> None:
    """The fake is only worth its strictness: an unknown Event property is a 400 and a violation."""
    import asyncio

    import google_auth_httplib2
    import httplib2

    credentials = service_account_credentials(service_account.key_json)
    service = build(
        "calendar",
        "v3",
        http=httplib2.Http(),
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": f"{fake_google.url}/calendar/v3/"},
    )
    body = {
        "summary": "x",
        "colour": "red",
        "start": {"dateTime": "2026-11-27T13:00:00Z"},
        "end": {"dateTime": "2026-11-27T14:00:00Z"},
    }
    http = httplib2.Http()
    try:
        request = service.events().insert(calendarId=DEPLOYS, body=body)
        with pytest.raises(HttpError) as caught:
            await asyncio.to_thread(request.execute, http=google_auth_httplib2.AuthorizedHttp(credentials, http=http))
    finally:
        http.close()
    assert caught.value.status_code == 400
    assert fake_google.violations == ["calendar.events.insert: unknown property body.colour"]
    fake_google.violations.clear()


async def test_an_event_made_all_day_gets_its_time_back(fake_google: FakeGoogle, calendar: GoogleCalendar) -> None:
    await calendar.book(DEPLOYS, booking())
    stored = fake_google.calendars[DEPLOYS].events[RELEASE_ID]
    stored["start"], stored["end"] = {"date": "2026-11-27"}, {"date": "2026-11-28"}

    event = await calendar.book(DEPLOYS, booking())

    assert fake_google.calendar_calls("PATCH")[-1].json == {
        "start": {"dateTime": "2026-11-27T13:00:00Z", "date": None},
        "end": {"dateTime": "2026-11-27T13:30:00Z", "date": None},
        "status": "confirmed",
    }
    assert (event.start, event.end) == (T0, T0 + timedelta(minutes=30))


async def test_a_link_without_calendar_access_says_to_relink(fake_google: FakeGoogle, settings: Settings) -> None:
    fake_google.add_oauth_client(CLIENT_ID, CLIENT_SECRET, "https://bot.example/oauth/google/callback")
    fake_google.add_calendar("ada@example.com", acl={"ada@example.com": "owner"})
    busy_only = ["https://www.googleapis.com/auth/calendar.freebusy"]
    refresh_token = fake_google.grant_refresh_token("ada@example.com", CLIENT_ID, busy_only)

    # google-auth asks for all SCOPES on refresh: Google refuses a grant with fewer (invalid_scope).
    ada = GoogleCalendar(
        user_credentials(refresh_token, settings), "google:user:ada", api_url=settings.google_calendar_api_url
    )
    with pytest.raises(CalendarError) as refused:
        await ada.book("primary", booking())
    assert "invalid_scope" in refused.value.message and "/ship calendar link" in refused.value.advice

    # Credentials that ask for no scope get the grant's own, and the API says what is missing.
    unscoped = google.oauth2.credentials.Credentials(
        None,
        refresh_token=refresh_token,
        token_uri=fake_google.token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    ada = GoogleCalendar(unscoped, "google:user:ada", api_url=settings.google_calendar_api_url)
    assert (await ada.free_busy(["primary"], T0, T0 + timedelta(hours=1))).errors == {}
    with pytest.raises(CalendarError) as lacking:
        await ada.book("primary", booking())
    assert lacking.value.status == 403 and "lack calendar access" in lacking.value.message
    assert "allow both calendar permissions" in lacking.value.advice
