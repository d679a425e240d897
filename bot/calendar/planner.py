"""Which calendar a repository books in, what is busy, and keeping a release's event in line with it.

The release machine stays pure: this module reads calendars into `Busy` intervals and conflict
sentences before a decision, and afterwards brings the calendar event in line with the release
(book, move, mark done or failed, cancel). Every write is idempotent by release, so a retried job
or a second worker never books twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import cachetools

from ..checks import escape_markdown
from ..policy import Busy, Policy, Slot, format_slot, next_slot, slot_problems
from ..release import OPEN, Release, State
from ..repo_config import RepoConfig
from ..secrets import Vault
from ..store import Store
from . import Booking, Calendar, CalendarError, CalendarEvent, Outcome, event_id
from .embedded import EmbeddedCalendar
from .feed import FeedTokens

if TYPE_CHECKING:
    from ..config import Settings
    from .oauth import GoogleLinks

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
SERVICE = "google:service"
USER_PREFIX = "google:user:"
# Busy time is read this far ahead: the slot search looks no further (policy.SEARCH_DAYS).
HORIZON = timedelta(days=61)
USER_TTL = 300.0
SERVICE_ACCOUNT_SECRET = "google:service-account"  # noqa: S105 - the name it is stored under


@dataclass(frozen=True)
class Target:
    """Where a release is booked: an account and a calendar id in it."""

    calendar: Calendar
    calendar_id: str

    @property
    def account(self) -> str:
        return self.calendar.account


class Calendars:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Callable[[], datetime],
        *,
        feed: FeedTokens | None = None,
        links: GoogleLinks | None = None,
        vault: Vault | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.feed = feed
        self.links = links
        self.vault = vault
        self.embedded = EmbeddedCalendar(store, clock)
        self._service: Calendar | None = None
        self._service_key: str | None = None
        # A cached calendar keeps its access token; an unlink elsewhere is seen within USER_TTL.
        self._users: cachetools.TTLCache[str, Calendar] = cachetools.TTLCache(maxsize=1000, ttl=USER_TTL)

    # Accounts -------------------------------------------------------------------------------------

    async def service_account(self) -> Calendar | None:
        """The shared Google account: GOOGLE_SERVICE_ACCOUNT_* from the environment wins; otherwise
        the key stored (encrypted) with `python -m bot google-service-account FILE`."""
        key_json = self.settings.google_service_account
        if key_json is None and self.vault is not None:
            key_json = await self.vault.get(SERVICE_ACCOUNT_SECRET)
        if key_json is None:
            self._service = None
            return None
        if self._service is None or self._service_key != key_json:
            from .google import GoogleCalendar, service_account_credentials

            credentials = service_account_credentials(key_json)
            self._service = GoogleCalendar(credentials, SERVICE, api_url=self.settings.google_calendar_api_url)
            self._service_key = key_json
        return self._service

    async def user_account(self, login: str) -> Calendar | None:
        """The person's linked Google calendar; kept a few minutes, so its access token is reused."""
        if self.links is None or not login:
            return None
        key = login.lower()
        cached = self._users.get(key)
        if cached is not None:
            return cached
        credentials = await self.links.credentials_for(login)
        if credentials is None:
            return None
        from .google import GoogleCalendar

        calendar = GoogleCalendar(credentials, USER_PREFIX + login, api_url=self.settings.google_calendar_api_url)
        self._users[key] = calendar
        return calendar

    def forget(self, login: str) -> None:
        """Drop a person's cached calendar (they unlinked it)."""
        self._users.pop(login.lower(), None)

    async def account(self, name: str | None) -> Calendar | None:
        if name is None or name == EMBEDDED:
            return self.embedded
        if name == SERVICE:
            return await self.service_account()
        if name.startswith(USER_PREFIX):
            return await self.user_account(name.removeprefix(USER_PREFIX))
        return None

    async def google_reader(self, requester: str) -> Calendar | None:
        """Who reads Google free/busy (freeze calendars): the service account, else the requester."""
        return await self.service_account() or await self.user_account(requester)

    async def target(self, config: RepoConfig, repo: str, requester: str) -> Target:
        if config.calendar.id is None:
            return Target(self.embedded, config.lane(repo))
        google = await self.google_reader(requester)
        if google is None:
            raise CalendarError(
                f"the repository books releases in the Google calendar `{config.calendar.id}`, but the bot "
                "has no Google credentials for it.",
                advice="An operator sets GOOGLE_SERVICE_ACCOUNT_FILE (and shares the calendar with that "
                "account), or you link your own calendar with `/ship calendar link`; or remove "
                "`calendar.id` from .github/release-secretary.yml to use the built-in calendar.",
            )
        return Target(google, config.calendar.id)

    async def feed_link(self, repo: str) -> str | None:
        if self.feed is None or not self.settings.public_url:
            return None
        return await self.feed.url(self.settings.public_url, repo)

    async def link_for(self, target: Target, repo: str) -> str | None:
        if target.account == EMBEDDED:
            return await self.feed_link(repo)
        return target.calendar.link(target.calendar_id)

    # Busy time -------------------------------------------------------------------------------------

    async def busy(
        self,
        config: RepoConfig,
        repo: str,
        requester: str,
        target: Target,
        *,
        start: datetime,
        end: datetime,
        own: Release | None = None,
        own_event: Slot | None = None,
    ) -> list[Busy]:
        """Everything a slot must not overlap: other releases (in the lane, or in the whole shared
        Google calendar), bookings people made there, freeze calendar events, and the requester's own
        busy time when linked."""
        busy = [b for _, b in await self._other_releases(config, repo, target, own)]
        if target.account != EMBEDDED:
            fb = await target.calendar.free_busy([target.calendar_id], start, end)
            self._raise_unreadable(fb.errors, [target.calendar_id], "calendar")
            booked = fb.busy.get(target.calendar_id, [])
            # The release's own event is not busy time for itself (wherever a person moved it).
            if own is not None and own.slot is not None and own.event_id is not None:
                booked = _subtract(booked, own.slot.start, own.slot.end)
            if own_event is not None:
                booked = _subtract(booked, own_event.start, own_event.end)
            busy += [Busy(s, e, "another booking in the release calendar") for s, e in booked if e > s]
        busy += [
            # A busy reason is quoted in `/ship` refusals as is: a title from a calendar must not
            # format, link or @mention there.
            Busy(e.start, e.end, f"'{escape_markdown(e.summary)}' in the freeze calendar {cal}")
            for cal, e in await self._freeze_events(config, requester, start, end)
            if e.end > e.start
        ]
        if config.calendar.requester_busy:
            mine = await self.user_account(requester)
            if mine is not None:
                try:
                    personal = await mine.free_busy(["primary"], start, end)
                except CalendarError as exc:  # their calendar is advice, not a gate: say so in the log
                    log.warning("cannot read %s's calendar: %s", requester, exc.message)
                else:
                    busy += _intervals(personal.busy, ["primary"], f"@{requester}'s own calendar (busy)")
        return busy

    async def _other_releases(
        self, config: RepoConfig, repo: str, target: Target, own: Release | None
    ) -> list[tuple[str, Busy]]:
        """Releases the store knows, before their events reach any calendar: the same lane, or (for a
        shared Google calendar) any repository's release booked in that calendar."""
        lane = config.lane(repo)
        shared = target.account != EMBEDDED
        found: list[tuple[str, Busy]] = []
        for other in await self.store.find_releases(repo=None if shared else repo, limit=10_000):
            if other.slot is None or (own is not None and other.key == own.key):
                continue
            if not (other.state in OPEN or other.state == State.RELEASING):
                continue
            if other.lane == lane or (shared and other.calendar_id == target.calendar_id):
                busy = Busy(other.slot.start, other.slot.end, f"the release of {other.repo}#{other.pr}")
                found.append((other.key, busy))
        return found

    async def _freeze_events(
        self, config: RepoConfig, requester: str, start: datetime, end: datetime
    ) -> list[tuple[str, CalendarEvent]]:
        """Every event in the freeze calendars, "free" ones included: Google makes all-day events free
        by default, and a freeze is usually all-day. Needs "See all event details" on them."""
        freezes = list(config.calendar.freeze_calendars)
        if not freezes:
            return []
        google = await self.google_reader(requester)
        if google is None:
            raise CalendarError(
                "the repository lists freeze calendars, but the bot has no Google credentials to read them.",
                advice="An operator sets GOOGLE_SERVICE_ACCOUNT_FILE, or you link your calendar with "
                "`/ship calendar link`; or remove `calendar.freeze_calendars`.",
            )
        found: list[tuple[str, CalendarEvent]] = []
        for cal in freezes:
            try:
                found += [(cal, e) for e in await google.events(cal, start, end, include_free=True)]
            except CalendarError as exc:
                if exc.retry:
                    raise
                raise CalendarError(
                    f"cannot read the freeze calendar `{cal}`: {exc.message}",
                    advice='Share it with the bot\'s Google account with "See all event details" '
                    "(see `python -m bot doctor`).",
                    status=exc.status,
                ) from exc
        return found

    def _raise_unreadable(self, errors: dict[str, str], calendars: Sequence[str], what: str) -> None:
        for calendar in calendars:
            if calendar in errors:
                raise CalendarError(
                    f"cannot read the {what} `{calendar}`: {errors[calendar]}.",
                    advice="Share it with the bot's Google account (see `python -m bot doctor`).",
                )

    async def next_free(
        self, config: RepoConfig, repo: str, requester: str, *, after: datetime, own: Release | None
    ) -> Slot | None:
        """The next slot nothing stands against (a proposal); None when the calendars cannot be read."""
        try:
            target = await self.target(config, repo, requester)
            busy = await self.busy(config, repo, requester, target, start=after, end=after + HORIZON, own=own)
        except CalendarError as exc:
            log.warning("no proposal for %s: %s", repo, exc.message)
            return None
        if own is not None and own.slot is not None:
            busy.append(Busy(own.slot.start, own.slot.end, "this slot"))  # a proposal is another slot
        return next_slot(after, config.policy(), busy=busy)

    # The T-minus check -----------------------------------------------------------------------------

    async def conflicts(self, release: Release, config: RepoConfig) -> list[str]:
        """What stands against the release's slot now: the windows and freezes of the config, freeze
        events, higher-priority events, and anything else booked over it in the release calendar.

        The booking rules (`busy`) but for the requester's own meetings: those gave way when the slot
        was chosen and do not outrank a release about to start."""
        assert release.slot is not None
        slot = release.slot
        policy: Policy = config.policy()
        # Judged as of booking time: "too soon" and "in the past" are not objections any more. A forced
        # release (`/ship now --force`) waived the windows and the config's freezes on purpose.
        found = [
            p
            for p in slot_problems(slot.start, policy, slot.start - policy.lead_time - timedelta(seconds=1))
            if "too soon" not in p and "in the past" not in p and not release.forced
        ]
        calendar = await self.account(release.calendar_account)
        calendar_id = release.calendar_id or release.lane
        reported: set[str] = set()  # releases already named through their calendar event
        if calendar is not None and calendar_id:
            for event in await calendar.events(calendar_id, slot.start, slot.end):
                if event.release == release.key or event.id == release.event_id:
                    continue
                if event.release is not None:
                    reported.add(event.release)
                if event.priority:
                    found.append(f"'{event.summary}' is marked as taking priority and overlaps the slot")
                elif event.release is not None:
                    found.append(f"another release ({event.summary}) is booked over the slot")
                else:
                    found.append(f"'{event.summary}' is booked over the slot in the release calendar")
        target = Target(calendar or self.embedded, calendar_id)
        for key, other in await self._other_releases(config, release.repo, target, release):
            if key not in reported and other.start < slot.end and slot.start < other.end:
                found.append(f"{other.reason} is booked over the slot")
        for cal, event in await self._freeze_events(config, release.requested_by, slot.start, slot.end):
            found.append(f"'{event.summary}' in the freeze calendar {cal} overlaps the slot")
        return found

    # Keeping the event in line with the release ----------------------------------------------------

    def booking(self, release: Release) -> Booking | None:
        if release.slot is None:
            return None
        outcome = {State.RELEASED: Outcome.DONE, State.FAILED: Outcome.FAILED, State.ROLLED_BACK: Outcome.FAILED}
        pr_url = f"{self.settings.github_url}/{release.repo}/pull/{release.pr}"
        lines = [
            f"{release.title}",
            f"Pull request: {pr_url}",
            f"Requested by: @{release.requested_by}",
            f"Verified SHA: {release.verified_sha or 'not yet (waiting for checks)'}",
            f"State: {release.state.value}",
            "",
            "Booked by Release Secretary; change the release with /ship commands on the pull request.",
        ]
        return Booking(
            release=release.key,
            summary=f"Deploy {release.repo}#{release.pr}",
            description="\n".join(lines),
            start=release.slot.start,
            end=release.slot.end,
            lane=release.lane,
            outcome=outcome.get(release.state, Outcome.BOOKED),
        )

    def wanted(self, release: Release) -> str:
        """What the calendar should show for the release, as a short digest ("cancelled": nothing)."""
        if release.state == State.CANCELLED:
            return "cancelled"
        return self.digest(self.booking(release))

    @staticmethod
    def digest(booking: Booking | None) -> str:
        if booking is None:
            return "none"
        raw = "\n".join((booking.title, booking.description, booking.start.isoformat(), booking.end.isoformat()))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    async def sync(self, release: Release) -> CalendarEvent | None:
        """Book, update or cancel the release's event; the event (None when there is none now)."""
        calendar = await self.account(release.calendar_account)
        calendar_id = release.calendar_id or release.lane
        if calendar is None:
            raise CalendarError(
                f"the release was booked with {release.calendar_account}, which the bot can no longer use.",
                advice="Link your calendar again with `/ship calendar link`, or ask an operator to check "
                "the Google settings with `python -m bot doctor`.",
            )
        booking = self.booking(release)
        if release.state == State.CANCELLED or booking is None:
            known = release.event_id or event_id(release.key)
            await calendar.cancel(calendar_id, known)
            return None
        return await calendar.book(calendar_id, booking)

    async def observe(self, release: Release, written: Slot | None) -> CalendarEvent | bool | None:
        """The release's event against what the bot last wrote (`written`, else the release's slot):
        True when nobody changed it, None when it is gone, the event when a person moved it."""
        if release.event_id is None or release.slot is None:
            return True
        calendar = await self.account(release.calendar_account)
        if calendar is None:
            return True
        event = await calendar.get(release.calendar_id or release.lane, release.event_id)
        if event is None or event.cancelled:
            return None
        # As last written, or as the release has it (a write that landed but whose answer was lost).
        for expected in (written, release.slot):
            if expected is not None and event.start == expected.start and event.end == expected.end:
                return True
        return event


def _intervals(busy: dict[str, list[tuple[datetime, datetime]]], calendars: Sequence[str], reason: str) -> list[Busy]:
    return [Busy(s, e, reason.format(cal=cal)) for cal in calendars for s, e in busy.get(cal, []) if e > s]


def _subtract(
    intervals: list[tuple[datetime, datetime]], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The intervals minus [start, end): the release's own event is not busy time for itself."""
    out: list[tuple[datetime, datetime]] = []
    for s, e in intervals:
        if e <= start or s >= end:
            out.append((s, e))
            continue
        if s < start:
            out.append((s, start))
        if e > end:
            out.append((end, e))
    return out


def describe_booking(slot: Slot, tz_name: str, requester_zone: str | None, link: str | None) -> str:
    """'Fri 27 Nov 14:00-14:30 Europe/Berlin (13:00 UTC; 08:00 for you, America/New_York)'."""
    from zoneinfo import ZoneInfo

    text = format_slot(slot, ZoneInfo(tz_name))
    if requester_zone and requester_zone != tz_name:
        mine = slot.start.astimezone(ZoneInfo(requester_zone))
        text += f", {mine:%a %H:%M} your time ({requester_zone})"
    if link:
        text += f" · [calendar]({link})"
    return text
