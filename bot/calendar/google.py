"""Google Calendar backend: the `Calendar` interface over google-api-python-client.

The client is synchronous and httplib2 is not thread-safe, so the service is built once (offline, from
the discovery document bundled with the library) and every request runs on a worker thread with its own
`Http`. Tokens come from google-auth credentials: a service account (a shared deployments calendar) or a
person's refresh token from `bot.calendar.oauth` (their own calendar).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, tzinfo
from http.client import HTTPException
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import google_auth_httplib2
import httplib2
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import Credentials
from google.oauth2 import credentials as user_oauth
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from ..config import DEFAULT_GOOGLE_CALENDAR_API_URL, Settings
from . import (
    DONE_PREFIX,
    FAILED_PREFIX,
    LANE_PROPERTY,
    RELEASE_PROPERTY,
    SCOPES,
    Booking,
    CalendarError,
    CalendarEvent,
    FreeBusy,
    Outcome,
    event_id,
    is_priority,
)

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = "google:service"
USER_ACCOUNT_PREFIX = "google:user:"
OUTCOME_PROPERTY = "release-secretary-outcome"  # extendedProperties.private, next to RELEASE_PROPERTY
# Event colours (Calendar's own palette ids): blueberry while booked, basil when done, tomato on failure.
COLORS = {Outcome.BOOKED: "9", Outcome.DONE: "10", Outcome.FAILED: "11"}
REQUEST_TIMEOUT = 30.0  # seconds, per HTTP request (token refreshes included)

_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
_FREEBUSY_REASONS = {
    "notFound": "not found, or not shared with this account",
    "groupTooBig": "a group with too many members to expand",
    "tooManyCalendarsRequested": "too many calendars in one request",
    "internalError": "Google could not compute its free/busy time",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_T = TypeVar("_T")


def service_account_credentials(info_json: str) -> Credentials:
    """Credentials from a service account key file's JSON; its `token_uri` says where tokens come from."""
    info = json.loads(info_json)
    credentials: Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        info, scopes=list(SCOPES)
    )
    return credentials


def user_credentials(refresh_token: str, settings: Settings) -> Credentials:
    """A person's credentials from the refresh token they granted through the bot's OAuth client."""
    if not settings.google_client_id or not settings.google_client_secret:
        raise ValueError("GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET are needed to use a linked Google calendar")
    return user_oauth.Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token=refresh_token,
        token_uri=settings.google_token_url,
        client_id=settings.google_client_id,
        client_secret=settings.google_client_secret,
        scopes=list(SCOPES),
    )


class GoogleCalendar:
    """One Google account's view of Google Calendar. Safe to share between tasks."""

    def __init__(
        self, credentials: Credentials, account: str, *, api_url: str = DEFAULT_GOOGLE_CALENDAR_API_URL
    ) -> None:
        self._credentials = credentials
        self._account = account
        # The Http given to build() is never used for requests: execute() gets a fresh one each time.
        self._service = build(
            "calendar",
            "v3",
            http=httplib2.Http(),
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": f"{api_url.rstrip('/')}/calendar/v3/"},
        )
        # One refresh at a time: concurrent calls that find the token expired would each fetch one.
        self._refresh_lock = asyncio.Lock()

    @classmethod
    def for_service_account(cls, settings: Settings) -> GoogleCalendar:
        """The shared account from GOOGLE_SERVICE_ACCOUNT_JSON / _FILE."""
        if settings.google_service_account is None:
            raise ValueError("no Google service account is configured (GOOGLE_SERVICE_ACCOUNT_JSON)")
        return cls(
            service_account_credentials(settings.google_service_account),
            SERVICE_ACCOUNT,
            api_url=settings.google_calendar_api_url,
        )

    @property
    def account(self) -> str:
        return self._account

    @property
    def email(self) -> str | None:
        """The service account's address, the one calendars must be shared with; None for a person."""
        value = getattr(self._credentials, "service_account_email", None)
        return value if isinstance(value, str) else None

    # The Calendar interface.

    async def free_busy(self, calendars: Sequence[str], start: datetime, end: datetime) -> FreeBusy:
        if not calendars:
            return FreeBusy()
        body = {"timeMin": _rfc3339(start), "timeMax": _rfc3339(end), "items": [{"id": c} for c in calendars]}
        answer = await self._execute(self._service.freebusy().query(body=body), "read free/busy time")
        result = FreeBusy()
        found = answer.get("calendars", {})
        for calendar in calendars:
            entry = found.get(calendar)
            if entry is None:
                result.errors[calendar] = "Google did not answer for this calendar"
            elif entry.get("errors"):
                reasons = [
                    _FREEBUSY_REASONS.get(e.get("reason", ""), e.get("reason", "unknown")) for e in entry["errors"]
                ]
                result.errors[calendar] = f"cannot read its free/busy time: {'; '.join(reasons)}"
            else:
                result.busy[calendar] = [
                    (_parse_time(p["start"]), _parse_time(p["end"])) for p in entry.get("busy", [])
                ]
        return result

    async def events(
        self, calendar: str, start: datetime, end: datetime, *, include_free: bool = False
    ) -> list[CalendarEvent]:
        """Events overlapping [start, end) that block time: cancelled and "free" ones left out, except
        a priority event (a marked freeze), which counts however it is shown, and everything when
        `include_free` (a freeze calendar, where every event is a freeze)."""
        events = self._service.events()
        request = events.list(
            calendarId=calendar,
            timeMin=_rfc3339(start),
            timeMax=_rfc3339(end),
            singleEvents=True,
            orderBy="startTime",
            showDeleted=False,
        )
        found: list[CalendarEvent] = []
        while request is not None:
            page = await self._execute(request, "list events", calendar=calendar)
            zone = _zone(page.get("timeZone"))
            for item in page.get("items", []):
                event = _to_event(calendar, item, zone)
                # Google makes all-day events "free" by default, and a freeze is usually all-day.
                free = item.get("transparency") == "transparent" and not event.priority and not include_free
                if event.cancelled or free:
                    continue
                found.append(event)
            request = events.list_next(request, page)
        return found

    async def get(self, calendar: str, event_id: str) -> CalendarEvent | None:
        try:
            item = await self._execute(
                self._service.events().get(calendarId=calendar, eventId=event_id), "read an event", calendar=calendar
            )
        except CalendarError as exc:
            if exc.status != 404:
                raise
            # Google answers 404 both for a missing event and for a calendar this account cannot
            # see; only the second needs people to act, so ask the calendar itself.
            await self._execute(
                self._service.events().list(calendarId=calendar, maxResults=1), "open the calendar", calendar=calendar
            )
            return None
        return _to_event(calendar, item, UTC)

    async def book(self, calendar: str, booking: Booking) -> CalendarEvent:
        events = self._service.events()
        wanted = _event_body(booking)
        the_id = event_id(booking.release)
        try:
            item = await self._execute(
                events.insert(calendarId=calendar, body={"id": the_id, **wanted}, sendUpdates="none"),
                "book the release",
                calendar=calendar,
            )
        except CalendarError as exc:
            if exc.status != 409:
                raise
            # The id exists: an earlier attempt booked it, or a person deleted the event (deleted
            # events keep their id). Bring it up to date with only what differs.
            current = await self._execute(
                events.get(calendarId=calendar, eventId=the_id), "read the booked event", calendar=calendar
            )
            changes = _changes(current, wanted)
            if not changes and current.get("status") != "cancelled":
                return _to_event(calendar, current, UTC)
            item = await self._execute(
                events.patch(
                    calendarId=calendar, eventId=the_id, body={**changes, "status": "confirmed"}, sendUpdates="none"
                ),
                "update the booked event",
                calendar=calendar,
            )
        return _to_event(calendar, item, UTC)

    async def cancel(self, calendar: str, event_id: str) -> None:
        try:
            await self._execute(
                self._service.events().delete(calendarId=calendar, eventId=event_id, sendUpdates="none"),
                "cancel the event",
                calendar=calendar,
            )
        except CalendarError as exc:
            if exc.status not in (404, 410):  # never there, or already deleted
                raise

    def link(self, calendar: str) -> str | None:
        # Opens the calendar in Google Calendar (and offers to add it) for anyone it is shared with.
        return f"https://calendar.google.com/calendar/r?cid={quote(calendar, safe='')}"

    # Transport and errors.

    async def _execute(self, request: Any, what: str, *, calendar: str | None = None) -> Any:
        """Run one API request on a worker thread; every failure becomes a CalendarError."""
        try:
            await self._ensure_token()
            return await asyncio.to_thread(_with_http, lambda http: request.execute(http=self._authorized(http)))
        except HttpError as exc:
            raise self._http_error(exc, what, calendar) from exc
        except auth_exceptions.RefreshError as exc:
            raise self._refresh_error(exc, what) from exc
        except (auth_exceptions.TransportError, httplib2.HttpLib2Error, HTTPException, OSError) as exc:
            raise CalendarError(
                f"Could not reach Google Calendar to {what} ({type(exc).__name__}).", retry=True
            ) from exc

    async def sign_in(self) -> None:
        """Get an access token now (the doctor's check); google-auth's own errors pass through."""
        await self._ensure_token()

    async def _ensure_token(self) -> None:
        if self._credentials.valid:
            return
        async with self._refresh_lock:
            if not self._credentials.valid:
                await asyncio.to_thread(_with_http, self._refresh)

    def _refresh(self, http: httplib2.Http) -> None:
        self._credentials.refresh(google_auth_httplib2.Request(http))  # type: ignore[no-untyped-call]

    def _authorized(self, http: httplib2.Http) -> Any:
        # Adds the bearer token, and on a 401 refreshes it once and retries (a token revoked early).
        return google_auth_httplib2.AuthorizedHttp(self._credentials, http=http)

    def _who(self) -> str:
        if self.email:
            return self.email
        if self._account.startswith(USER_ACCOUNT_PREFIX):
            return f"the Google account @{self._account.removeprefix(USER_ACCOUNT_PREFIX)} linked"
        return "the bot's Google account"

    def _share_advice(self, calendar: str | None) -> str:
        which = calendar or "the calendar"
        if self._account.startswith(USER_ACCOUNT_PREFIX):
            return (
                f'Share {which} with {self._who()} with the permission "Make changes to events", or use a '
                "calendar that account owns."
            )
        return (
            f"In Google Calendar open {which}: Settings and sharing > Share with specific people > add "
            f'{self._who()} with the permission "Make changes to events".'
        )

    def _credentials_advice(self) -> str:
        if self._account.startswith(USER_ACCOUNT_PREFIX):
            return "The Google link was revoked or has expired; re-link with `/ship calendar link`."
        return (
            "Check the service account key (GOOGLE_SERVICE_ACCOUNT_JSON or GOOGLE_SERVICE_ACCOUNT_FILE): "
            "it may have been deleted or disabled in Google Cloud."
        )

    def _http_error(self, exc: HttpError, what: str, calendar: str | None) -> CalendarError:
        status = int(exc.status_code)
        reason, message = _error_reason(exc)
        where = f" on {calendar}" if calendar else ""
        log.info("google calendar: %s%s failed: HTTP %s %s", what, where, status, reason or "")
        if status == 429 or status >= 500 or (status == 403 and reason in _RATE_LIMIT_REASONS):
            busy = "is rate limiting the bot" if status in (403, 429) else f"failed (HTTP {status})"
            return CalendarError(f"Google Calendar {busy} while trying to {what}{where}.", retry=True, status=status)
        if status == 403 and reason == "insufficientPermissions":
            return CalendarError(
                f"Could not {what}{where}: the Google credentials lack calendar access.",
                advice=(
                    "Re-link with `/ship calendar link` and allow both calendar permissions."
                    if self._account.startswith(USER_ACCOUNT_PREFIX)
                    else self._credentials_advice()
                ),
                status=status,
            )
        if status == 401:
            return CalendarError(
                f"Google refused the bot's credentials while trying to {what}{where}.",
                advice=self._credentials_advice(),
                status=status,
            )
        if status == 404:
            return CalendarError(
                f"Could not {what}: {calendar or 'the calendar'} was not found or is not shared with {self._who()}.",
                advice=self._share_advice(calendar),
                status=status,
            )
        if status == 403:
            return CalendarError(
                f"Could not {what}{where}: {self._who()} lacks the permission ({message or reason}).",
                advice=self._share_advice(calendar),
                status=status,
            )
        if status in (409, 410):  # callers that expect these look at `status`
            return CalendarError(f"Could not {what}{where}: {message or reason}.", status=status)
        return CalendarError(
            f"Google Calendar refused to {what}{where} (HTTP {status}: {message or reason}).",
            advice="This looks like a bug in the bot; please report it with this message.",
            status=status,
        )

    def _refresh_error(self, exc: auth_exceptions.RefreshError, what: str) -> CalendarError:
        # google-auth raises RefreshError(description, response_data); the data is the token endpoint's
        # JSON error ({"error": "invalid_grant", ...}): never tokens, but keep to the error code anyway.
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        code = str(data.get("error", "")) or "refresh failed"
        log.info("google calendar: token refresh for %s failed: %s", self._account, code)
        if exc.retryable:
            return CalendarError(f"Google's sign-in service failed while trying to {what} ({code}).", retry=True)
        return CalendarError(
            f"Google refused the bot's credentials while trying to {what} ({code}).",
            advice=self._credentials_advice(),
        )


def _with_http(call: Callable[[httplib2.Http], _T]) -> _T:
    """Run `call` with a fresh Http (httplib2 is not thread-safe) and close its sockets after."""
    http = httplib2.Http(timeout=REQUEST_TIMEOUT)
    try:
        return call(http)
    finally:
        http.close()


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("calendar times must be aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _zone(name: object) -> tzinfo:
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return UTC


def _when(value: dict[str, Any] | None, zone: tzinfo) -> datetime | None:
    """An EventDateTime as aware UTC. An all-day date starts at midnight in `zone`, the calendar's
    time zone when the caller knows it (a list answer says it), otherwise UTC: a simplification that
    can shift an all-day event by the zone's offset on `get`, which only reads the bot's own events."""
    if not value:
        return None
    if "dateTime" in value:
        moment = datetime.fromisoformat(value["dateTime"])
        if moment.tzinfo is None:  # Google gives an offset; a bare time would be in the event's zone
            moment = moment.replace(tzinfo=_zone(value.get("timeZone")) if "timeZone" in value else zone)
        return moment.astimezone(UTC)
    if "date" in value:
        return datetime.combine(date.fromisoformat(value["date"]), time(), zone).astimezone(UTC)
    return None


def _to_event(calendar: str, item: dict[str, Any], zone: tzinfo) -> CalendarEvent:
    cancelled = item.get("status") == "cancelled"
    start = _when(item.get("start"), zone)
    end = _when(item.get("end"), zone)
    if start is None or end is None:
        # Only a cancelled event may come back bare (the instance of a recurring event, say).
        start = end = _EPOCH
    summary = item.get("summary", "")
    properties = item.get("extendedProperties", {})
    private: dict[str, str] = properties.get("private", {})
    release = private.get(RELEASE_PROPERTY)
    return CalendarEvent(
        id=item["id"],
        calendar=calendar,
        start=start,
        end=end,
        summary=summary,
        description=item.get("description", ""),
        cancelled=cancelled,
        release=release,
        lane=private.get(LANE_PROPERTY),
        outcome=_outcome(summary, private.get(OUTCOME_PROPERTY), booked=release is not None),
        priority=is_priority(summary, properties.get("shared")),
        link=item.get("htmlLink"),
        updated=_parse_time(item["updated"]) if "updated" in item else None,
    )


def _outcome(summary: str, stored: str | None, *, booked: bool) -> Outcome | None:
    if stored in {o.value for o in Outcome}:
        return Outcome(stored)
    if summary.startswith(DONE_PREFIX):
        return Outcome.DONE
    if summary.startswith(FAILED_PREFIX):
        return Outcome.FAILED
    return Outcome.BOOKED if booked else None


def _event_body(booking: Booking) -> dict[str, Any]:
    """Everything the bot owns on a release's event (the id aside)."""
    return {
        "summary": booking.title,
        "description": booking.description,
        "start": {"dateTime": _rfc3339(booking.start)},
        "end": {"dateTime": _rfc3339(booking.end)},
        "extendedProperties": {
            "private": {
                RELEASE_PROPERTY: booking.release,
                LANE_PROPERTY: booking.lane,
                OUTCOME_PROPERTY: booking.outcome.value,
            }
        },
        "colorId": COLORS[booking.outcome],
        "transparency": "opaque",
    }


def _changes(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields of `wanted` that `current` does not already have. Times are compared as
    instants: Google answers in the calendar's time zone, not in the UTC we sent."""
    changes: dict[str, Any] = {}
    for key, value in wanted.items():
        have = current.get(key)
        if key in ("start", "end"):
            same = have is not None and _when(have, UTC) == _when(value, UTC) and "date" not in have
        elif key == "extendedProperties":
            mine = value["private"]
            theirs = (have or {}).get("private", {})
            same = all(theirs.get(k) == v for k, v in mine.items())
        elif key == "description":
            same = (have or "") == value  # Google leaves out an empty description
        elif key == "transparency":
            same = (have or "opaque") == value
        else:
            same = have == value
        if not same:
            # Patch merges objects: sending our private properties keeps anyone else's, and an event
            # someone made all-day needs its date cleared (null) for the dateTime to take.
            changes[key] = {**value, "date": None} if key in ("start", "end") and "date" in (have or {}) else value
    return changes


def _error_reason(exc: HttpError) -> tuple[str, str]:
    """(reason, message) from Google's JSON error body, e.g. ("rateLimitExceeded", "Rate Limit Exceeded")."""
    try:
        error = json.loads(exc.content.decode("utf-8"))["error"]
        message = str(error.get("message", ""))
        details = error.get("errors") or [{}]
        return str(details[0].get("reason", "")), message
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return "", str(exc.reason or "")
