"""Release calendars: where a release's slot is booked and where busy time comes from.

Two backends share one interface and one booking semantics:
- `EmbeddedCalendar` (the default): events in the bot's own store, one calendar per lane
  ("owner/repo production"), published as an iCalendar feed at `/calendar.ics`;
- `GoogleCalendar`: Google Calendar through google-api-python-client, with a service account (a shared
  deployments calendar) or a person's linked OAuth credentials (their own calendar).

Booking is idempotent by release: the event id is derived from the release key, so booking the same
release twice (a retried job, two workers) creates one event and then only brings it up to date.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# The least the bot needs: create and edit its own events, and read free/busy (never event details of
# other calendars). Freeze calendars and the requester's calendar are read through free/busy only.
SCOPES = (
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.freebusy",
)

DONE_PREFIX = "✅ "
FAILED_PREFIX = "❌ "
PRIORITY_TAGS = ("[freeze]", "[priority]")  # a person marks an event as outranking releases
PRIORITY_PROPERTY = "release-secretary-priority"  # or sets this shared extended property to "high"
RELEASE_PROPERTY = "release-secretary-release"  # extendedProperties.private: the release key
LANE_PROPERTY = "release-secretary-lane"


class Outcome(enum.StrEnum):
    BOOKED = "booked"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Booking:
    """What a release's event should say; `book` creates it or brings the event up to date."""

    release: str  # the release key, "owner/repo#12/1"
    summary: str  # "Deploy owner/repo#12"
    description: str
    start: datetime  # aware UTC
    end: datetime
    lane: str  # "owner/repo production": at most one release per lane at a time
    outcome: Outcome = Outcome.BOOKED

    @property
    def title(self) -> str:
        prefix = {Outcome.DONE: DONE_PREFIX, Outcome.FAILED: FAILED_PREFIX}.get(self.outcome, "")
        return prefix + self.summary


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    id: str
    calendar: str
    start: datetime  # aware UTC
    end: datetime
    summary: str
    description: str = ""
    cancelled: bool = False
    release: str | None = None  # set on events the bot booked
    lane: str | None = None
    outcome: Outcome | None = None
    priority: bool = False  # marked as outranking releases (a freeze, an incident)
    link: str | None = None  # where a person opens it
    updated: datetime | None = None


@dataclass(frozen=True, slots=True)
class FreeBusy:
    """Busy intervals per calendar; a calendar that could not be read is in `errors` with why."""

    busy: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class CalendarError(Exception):
    """A calendar call failed. `retry`: worth trying again later (rate limit, 5xx, network);
    otherwise people must act, and `advice` says what to do (share the calendar, re-link, ...)."""

    def __init__(self, message: str, *, advice: str = "", retry: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice
        self.retry = retry
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} {self.advice}".strip()


class Calendar(Protocol):
    """One calendar account: the embedded store, a service account, or one person's Google account."""

    @property
    def account(self) -> str:
        """Which credentials this is: "embedded", "google:service", "google:user:<login>"."""

    async def free_busy(self, calendars: Sequence[str], start: datetime, end: datetime) -> FreeBusy: ...

    async def events(
        self, calendar: str, start: datetime, end: datetime, *, include_free: bool = False
    ) -> list[CalendarEvent]:
        """Events overlapping [start, end), cancelled ones left out; "free" (transparent) ones too,
        unless marked as priority or `include_free`."""

    async def get(self, calendar: str, event_id: str) -> CalendarEvent | None:
        """The event, cancelled ones included (`cancelled=True`); None when it never existed."""

    async def book(self, calendar: str, booking: Booking) -> CalendarEvent:
        """Create the release's event, or bring it up to date (time, title, description, outcome);
        an event a person deleted is restored. Idempotent: the id is `event_id(booking.release)`."""

    async def cancel(self, calendar: str, event_id: str) -> None:
        """Cancel the event; one already gone is fine."""

    def link(self, calendar: str) -> str | None:
        """Where people see the calendar (a web page or a feed), if anywhere."""


def event_id(release_key: str) -> str:
    """A stable event id for a release, valid for Google (base32hex, lowercase, 5-1024 characters)."""
    digest = hashlib.sha256(release_key.encode("utf-8")).digest()
    return "rs" + base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()


def is_priority(summary: str, shared: dict[str, str] | None = None) -> bool:
    lowered = summary.lower()
    return any(tag in lowered for tag in PRIORITY_TAGS) or (shared or {}).get(PRIORITY_PROPERTY) == "high"
