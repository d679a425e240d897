"""Release windows, freezes and the reading of "when" text: pure rules, with "now" always an argument."""

from __future__ import annotations

import contextlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from datetime import timezone as FixedOffset
from functools import cache, lru_cache
from itertools import accumulate
from typing import Final, Literal
from zoneinfo import ZoneInfo, available_timezones

from dateparser.date import DateDataParser

ALL_DAYS: Final = frozenset(range(7))
DEFAULT_SLOT: Final = timedelta(minutes=30)
DEFAULT_LEAD_TIME: Final = timedelta(minutes=15)
# next_slot looks this far ahead; a policy with nothing free for two months needs a person, not a bot.
SEARCH_DAYS: Final = 60
# Booking further ahead than this is almost always a typo ("2062" for "2026") or a parser guess.
MAX_AHEAD: Final = timedelta(days=366)
# Long enough for "2026-12-01 14:00 America/Argentina/Buenos_Aires"; short enough to keep dateparser quick.
MAX_TEXT: Final = 100

_DAY_ABBR: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_NAME: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAME: Final = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)
_MONTH_ABBR: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UTC_KEYS: Final = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"})


@dataclass(frozen=True, slots=True)
class Window:
    """Release hours on some weekdays (0 = Monday), as wall-clock times in the policy's zone."""

    days: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        # Config hands us lists; store a frozenset so windows stay hashable and comparable.
        object.__setattr__(self, "days", frozenset(self.days))
        if not self.days or not self.days <= ALL_DAYS:
            raise ValueError(f"window days must be a non-empty subset of 0-6 (Monday-Sunday), got {self.days}")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("window times are wall-clock times in the policy's zone and carry no tzinfo")
        if self.end <= self.start:
            raise ValueError(
                f"window end {self.end:%H:%M} must be after its start {self.start:%H:%M} (no overnight windows)"
            )


@dataclass(frozen=True, slots=True)
class Freeze:
    """No releases on these local dates, both ends included."""

    start: date
    end: date
    reason: str = ""

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"freeze ends ({self.end}) before it starts ({self.start})")

    def __contains__(self, day: object) -> bool:
        if isinstance(day, datetime):  # a datetime is a date, but does not compare with one
            day = day.date()
        return isinstance(day, date) and self.start <= day <= self.end


# Mon-Thu 10:00-16:00: no Friday releases, and nobody on call at dawn or dusk.
DEFAULT_WINDOWS: Final = (Window(frozenset({0, 1, 2, 3}), time(10), time(16)),)


@dataclass(frozen=True, slots=True)
class Policy:
    """When a repository may release: windows, freezes, slot length and lead time, in one zone."""

    timezone: ZoneInfo
    windows: tuple[Window, ...] = DEFAULT_WINDOWS
    freezes: tuple[Freeze, ...] = ()
    slot: timedelta = DEFAULT_SLOT
    lead_time: timedelta = DEFAULT_LEAD_TIME

    def __post_init__(self) -> None:
        if not isinstance(self.timezone, ZoneInfo):
            raise ValueError(f"the policy zone must be a ZoneInfo, got {self.timezone!r}")
        # "No windows configured" means the documented default, not "never release".
        object.__setattr__(self, "windows", tuple(self.windows) or DEFAULT_WINDOWS)
        object.__setattr__(self, "freezes", tuple(self.freezes))
        if self.slot <= timedelta(0) or self.slot % timedelta(minutes=1):
            raise ValueError(f"the slot must be a positive whole number of minutes, got {self.slot}")
        if self.lead_time < timedelta(0):
            raise ValueError(f"the lead time cannot be negative, got {self.lead_time}")
        if all(_minutes(w.end) - _minutes(w.start) < self.slot // timedelta(minutes=1) for w in self.windows):
            raise ValueError(f"a {_duration_text(self.slot)} slot does not fit in any release window")


@dataclass(frozen=True, slots=True)
class Slot:
    """A booked or proposed release time, [start, end) as aware UTC datetimes."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _as_utc(self.start, "slot start"))
        object.__setattr__(self, "end", _as_utc(self.end, "slot end"))
        if self.end <= self.start:
            raise ValueError(f"slot end {self.end} is not after its start {self.start}")


@dataclass(frozen=True, slots=True)
class Busy:
    """Time, [start, end) as aware UTC datetimes, in which no release may start or run.

    Another release in the same environment, or a freeze event from a calendar. `blocks=False` marks
    time worth showing but not refusing (a tentative event): the slot search ignores it.
    """

    start: datetime
    end: datetime
    reason: str = ""
    blocks: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _as_utc(self.start, "busy start"))
        object.__setattr__(self, "end", _as_utc(self.end, "busy end"))
        if self.end <= self.start:
            raise ValueError(f"busy end {self.end} is not after its start {self.start}")


@dataclass(frozen=True, slots=True)
class WhenError:
    """Why a "when" was refused, the next slot that would work, and forms the parser understands."""

    text: str
    reason: str
    suggestion: Slot | None
    examples: tuple[str, ...]


# --- formatting ---------------------------------------------------------------------------------------


def format_slot(slot: Slot, tz: ZoneInfo) -> str:
    """'Fri 27 Nov 14:00-14:30 Europe/Berlin (13:00 UTC)', or 'Fri 27 Nov 13:00-13:30 UTC' in UTC repos."""
    start = slot.start.astimezone(tz)
    end = slot.end.astimezone(tz)
    local = f"{_day_label(start.date())} {start:%H:%M}-{end:%H:%M}"
    if tz.key in _UTC_KEYS:
        return f"{local} UTC"
    utc = slot.start.astimezone(UTC)
    # Far-east and far-west zones cross midnight; then the UTC time alone would name the wrong day.
    utc_day = "" if utc.date() == start.date() else f"{_day_label(utc.date())} "
    return f"{local} {tz.key} ({utc_day}{utc:%H:%M} UTC)"


def describe_windows(policy: Policy) -> str:
    """'Mon-Thu 10:00-16:00 Europe/Berlin'; windows sharing days are listed together."""
    by_days: dict[frozenset[int], list[Window]] = {}
    for window in policy.windows:
        by_days.setdefault(window.days, []).append(window)
    parts = []
    for days, windows in by_days.items():
        hours = ", ".join(f"{w.start:%H:%M}-{w.end:%H:%M}" for w in sorted(windows, key=lambda w: w.start))
        parts.append(f"{_describe_days(days)} {hours}")
    return f"{'; '.join(parts)} {policy.timezone.key}"


def _describe_days(days: frozenset[int]) -> str:
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(
        _DAY_ABBR[run[0]] if len(run) == 1 else f"{_DAY_ABBR[run[0]]}-{_DAY_ABBR[run[-1]]}" for run in runs
    )


def _day_label(day: date, *, with_year: bool = False) -> str:
    year = f" {day.year}" if with_year else ""
    return f"{_DAY_ABBR[day.weekday()]} {day.day} {_MONTH_ABBR[day.month - 1]}{year}"


def _short_date(day: date) -> str:
    return f"{day.day} {_MONTH_ABBR[day.month - 1]}"


def _freeze_label(freeze: Freeze) -> str:
    span = (
        _short_date(freeze.start)
        if freeze.start == freeze.end
        else f"{_short_date(freeze.start)} - {_short_date(freeze.end)}"
    )
    return f"the freeze '{freeze.reason}' ({span})" if freeze.reason else f"a release freeze ({span})"


def _busy_label(busy: Busy, day: date, tz: ZoneInfo) -> str:
    """'Deploy octo-org/api#12 (15:00-15:30 Europe/Berlin)'; days are named when it is not all on `day`."""
    start = busy.start.astimezone(tz)
    end = busy.end.astimezone(tz)
    if start.date() == end.date() == day:
        span = f"{start:%H:%M}-{end:%H:%M}"
    elif start.date() == end.date():
        span = f"{_day_label(start.date())} {start:%H:%M}-{end:%H:%M}"
    else:
        span = f"{_day_label(start.date())} {start:%H:%M} - {_day_label(end.date())} {end:%H:%M}"
    return f"{busy.reason or 'busy time'} ({span} {tz.key})"


def _duration_text(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return "less than a minute"
    hours, minutes = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    if minutes:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    return " ".join(parts)


def _zone_label(zone: tzinfo) -> str:
    if isinstance(zone, ZoneInfo):
        return zone.key
    return zone.tzname(None) or "UTC"


# --- slots and freezes --------------------------------------------------------------------------------


def in_freeze(day: date, policy: Policy) -> Freeze | None:
    """The freeze covering this local date (a datetime is first moved to the policy's zone), if any.

    When freezes overlap, the one that starts first.
    """
    if isinstance(day, datetime):
        day = day.astimezone(policy.timezone).date() if day.tzinfo is not None else day.date()
    return _freeze_index(policy.freezes).covering(day)


class _FreezeIndex:
    """Freezes sorted by start, with the latest end seen so far: one bisect finds a covering freeze."""

    __slots__ = ("_freezes", "_reach", "_starts")

    def __init__(self, freezes: Sequence[Freeze]) -> None:
        self._freezes = sorted(freezes, key=lambda f: (f.start, f.end))
        self._starts = [f.start for f in self._freezes]
        self._reach = list(accumulate((f.end for f in self._freezes), max))

    def covering(self, day: date) -> Freeze | None:
        # Every freeze before i ends before `day`; freeze i ends on or after it (it set the reach).
        i = bisect_left(self._reach, day)
        if i < len(self._freezes) and self._starts[i] <= day:
            return self._freezes[i]
        return None


@lru_cache(maxsize=64)
def _freeze_index(freezes: tuple[Freeze, ...]) -> _FreezeIndex:
    return _FreezeIndex(freezes)


class _BusyIndex:
    """Blocking busy intervals sorted once by start, with a running maximum of their ends.

    Every interval before the first index whose running maximum passes `start` ends at or before
    `start`; the interval at that index ends after it. So one bisect finds the earliest-starting
    interval overlapping [start, end), in O(log n) however many intervals there are.
    """

    __slots__ = ("_busy", "_reach", "_starts")

    def __init__(self, busy: Sequence[Busy]) -> None:
        self._busy = sorted((b for b in busy if b.blocks), key=lambda b: (b.start, b.end))
        self._starts = [b.start for b in self._busy]
        self._reach = list(accumulate((b.end for b in self._busy), max))

    @classmethod
    def of(cls, busy: Sequence[Busy] | _BusyIndex) -> _BusyIndex:
        return busy if isinstance(busy, _BusyIndex) else cls(busy)

    def __len__(self) -> int:
        return len(self._busy)

    def overlapping(self, start: datetime, end: datetime) -> Busy | None:
        i = bisect_right(self._reach, start)
        if i < len(self._busy) and self._starts[i] < end:
            return self._busy[i]
        return None


_NOT_BUSY: Final = _BusyIndex(())


def next_slot(after: datetime, policy: Policy, *, busy: Sequence[Busy] = ()) -> Slot | None:
    """The earliest bookable slot starting at or after `after`, within SEARCH_DAYS; None when all is full.

    Candidate starts step by the slot length from each window's start (10:00, 10:30, ...), so proposals
    land on a tidy grid; explicit requests are not held to that grid. A slot overlapping blocking
    `busy` time is skipped.
    """
    return _next_slot(_as_utc(after, "after"), policy, _BusyIndex.of(busy))


def _next_slot(after: datetime, policy: Policy, busy: _BusyIndex) -> Slot | None:
    freezes = _freeze_index(policy.freezes)
    first_day = after.astimezone(policy.timezone).date()
    for offset in range(SEARCH_DAYS + 1):
        day = first_day + timedelta(days=offset)
        if freezes.covering(day) is not None:
            continue
        starts = _day_candidates(day, policy.timezone, policy.windows, policy.slot)
        i = bisect_left(starts, after)
        while i < len(starts):
            start = starts[i]
            blocker = busy.overlapping(start, start + policy.slot)
            if blocker is None:
                return Slot(start, start + policy.slot)
            # Every later start before the blocker's end still overlaps it: jump past them at once.
            i = bisect_left(starts, blocker.end, i + 1)
    return None


@lru_cache(maxsize=4096)
def _day_candidates(day: date, zone: ZoneInfo, windows: tuple[Window, ...], slot: timedelta) -> tuple[datetime, ...]:
    """Grid starts on one local day that fit a window, as sorted UTC instants.

    Built from wall-clock times plus ZoneInfo, so DST days come out right: a start the clocks skip is
    dropped, and a repeated hour yields both of its instants. Cached: every search walks the same days.
    """
    step = slot // timedelta(minutes=1)
    starts: set[datetime] = set()
    for window in windows:
        if day.weekday() not in window.days:
            continue
        for minute in range(_minutes(window.start), _minutes(window.end) - step + 1, step):
            wall = time(minute // 60, minute % 60)
            for fold in (0, 1):
                local = datetime.combine(day, wall, tzinfo=zone).replace(fold=fold)
                instant = local.astimezone(UTC)
                if _exists(local) and _window_holding(instant, zone, windows, slot) is not None:
                    starts.add(instant)
    return tuple(sorted(starts))


def window_end(start: datetime, policy: Policy) -> datetime:
    """When the release window holding a slot that starts at `start` closes (the slot's end when no window
    holds it, as for a forced slot): "postpone to the next window" looks from there."""
    window = _fitting_window(start, policy)
    if window is None:
        return start + policy.slot
    local = start.astimezone(policy.timezone)
    return datetime.combine(local.date(), window.end, tzinfo=policy.timezone).astimezone(UTC)


def _fitting_window(start: datetime, policy: Policy) -> Window | None:
    """The window holding the whole slot [start, start + slot] on one local day, if there is one."""
    return _window_holding(start, policy.timezone, policy.windows, policy.slot)


def _window_holding(start: datetime, zone: ZoneInfo, windows: tuple[Window, ...], slot: timedelta) -> Window | None:
    local_start = start.astimezone(zone)
    # Real elapsed time, then back to wall-clock: a slot across a DST change keeps its true length.
    local_end = (start + slot).astimezone(zone)
    if local_end.date() != local_start.date():
        return None
    for window in windows:
        if (
            local_start.weekday() in window.days
            and window.start <= local_start.time()
            and local_end.time() <= window.end
        ):
            return window
    return None


def slot_problems(start: datetime, policy: Policy, now: datetime, *, busy: Sequence[Busy] = ()) -> list[str]:
    """Why a slot starting at `start` cannot be booked at `now`, most fundamental first; empty if it can."""
    start = _as_utc(start, "start")
    local = start.astimezone(policy.timezone)
    label = f"{_day_label(local.date())} {local:%H:%M}"
    return _problems(start, policy, _as_utc(now, "now"), label, own_zone=True, busy=_BusyIndex.of(busy))


def _problems(
    start: datetime, policy: Policy, now: datetime, label: str, *, own_zone: bool, busy: _BusyIndex
) -> list[str]:
    problems = []
    local = start.astimezone(policy.timezone)
    day = local.date()
    windows = describe_windows(policy)
    if start < now:
        problems.append(f"{label} is in the past")
    freeze = in_freeze(day, policy)
    if freeze is not None:
        problems.append(f"{_day_label(day)} is inside {_freeze_label(freeze)}")
    if _fitting_window(start, policy) is None:
        todays = [w for w in policy.windows if day.weekday() in w.days]
        inside = [w for w in todays if w.start <= local.time() < w.end]
        if inside:
            problems.append(
                f"{label} is too late: the window closes at {inside[0].end:%H:%M}, less than the "
                f"{_duration_text(policy.slot)} a release needs ({windows})"
            )
        elif todays or not own_zone:
            problems.append(f"{label} is outside the release windows ({windows})")
        else:
            problems.append(
                f"{_DAY_NAME[day.weekday()]} {_short_date(day)} has no release window; windows are {windows}"
            )
    blocker = busy.overlapping(start, start + policy.slot)
    if blocker is not None:
        problems.append(f"{label} overlaps {_busy_label(blocker, local.date(), policy.timezone)}")
    if now <= start < now + policy.lead_time:
        problems.append(
            f"too soon: the lead time is {_duration_text(policy.lead_time)}, "
            f"and {label} is {_duration_text(start - now)} from now"
        )
    return problems


# --- reading "when" text ------------------------------------------------------------------------------


class _Refusal(Exception):
    """Internal: the text cannot become a slot; `after` is where to start looking for a suggestion."""

    def __init__(self, reason: str, after: datetime | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after


@dataclass(frozen=True, slots=True)
class _Day:
    """A local date asked for; `may_roll` when it is today's weekday name and may mean next week."""

    day: date
    may_roll: bool = False


_PartOfDay = Literal["morning", "afternoon", "evening"]
# Where each part of the day starts and ends (None: midnight). Slots must start inside the part.
_PARTS: Final[Mapping[str, tuple[time, time | None]]] = {
    "morning": (time(9), time(13)),
    "afternoon": (time(13), time(17)),
    "evening": (time(17), None),
}


def _offset(name: str, hours: int, minutes: int = 0) -> FixedOffset:
    return FixedOffset(timedelta(hours=hours, minutes=minutes), name)


# Abbreviations name an offset, not a place: "PST" in July still means UTC-8. IST is India (the most
# common reading on engineering teams); CST is US Central.
_ZONE_ABBREVIATIONS: Final[Mapping[str, tzinfo]] = {
    "utc": UTC,
    "gmt": UTC,
    "z": UTC,
    "pst": _offset("PST", -8),
    "pdt": _offset("PDT", -7),
    "mst": _offset("MST", -7),
    "mdt": _offset("MDT", -6),
    "cst": _offset("CST", -6),
    "cdt": _offset("CDT", -5),
    "est": _offset("EST", -5),
    "edt": _offset("EDT", -4),
    "cet": _offset("CET", 1),
    "cest": _offset("CEST", 2),
    "bst": _offset("BST", 1),
    "ist": _offset("IST", 5, 30),
    "jst": _offset("JST", 9),
    "aest": _offset("AEST", 10),
    "aedt": _offset("AEDT", 11),
    "awst": _offset("AWST", 8),
    "nzst": _offset("NZST", 12),
    "nzdt": _offset("NZDT", 13),
    "hst": _offset("HST", -10),
    "akst": _offset("AKST", -9),
    "akdt": _offset("AKDT", -8),
    "wet": _offset("WET", 0),
    "west": _offset("WEST", 1),
    "eet": _offset("EET", 2),
    "eest": _offset("EEST", 3),
    "msk": _offset("MSK", 3),
    "sgt": _offset("SGT", 8),
    "hkt": _offset("HKT", 8),
    "kst": _offset("KST", 9),
}
# Zone names without a daylight-saving letter follow the place's clocks all year.
_ZONE_NAMES: Final[Mapping[str, str]] = {
    "pt": "America/Los_Angeles",
    "mt": "America/Denver",
    "ct": "America/Chicago",
    "et": "America/New_York",
}

_WEEKDAYS: Final[Mapping[str, int]] = {
    **{name.lower(): i for i, name in enumerate(_DAY_NAME)},
    **{abbr.lower(): i for i, abbr in enumerate(_DAY_ABBR)},
    "tues": 1,
    "weds": 2,
    "thur": 3,
    "thurs": 3,
}
_MONTHS: Final[Mapping[str, int]] = {
    **{abbr.lower(): i for i, abbr in enumerate(_MONTH_ABBR, start=1)},
    **{name.lower(): i for i, name in enumerate(_MONTH_NAME, start=1)},
    "sept": 9,
}
_NUMBER_WORDS: Final[Mapping[str, int]] = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}

_FLAGS = re.ASCII | re.VERBOSE
_CLOCK = re.compile(
    r"""
    (?:\bat\s+)?
    (?:
        (?<![0-9:./-])(?P<h12>[0-9]{1,2})(?::(?P<m12>[0-9]{2}))?\s*(?P<ampm>[ap])\.?m\.?(?![a-z])
      | (?<![0-9:./-])(?P<h24>[0-9]{1,2}):(?P<m24>[0-9]{2})(?![0-9:])
      | (?<![0-9:./-])(?P<hh>[0-9]{1,2})h(?P<mh>[0-9]{2})?(?![a-z0-9])
      | (?<=at\s)(?P<hat>[0-9]{1,2})(?![0-9:./a-z-])
      | \b(?P<word>noon|midday|midnight)\b
    )
    """,
    _FLAGS,
)
_PART = re.compile(r"(?:\b(?:in\s+the|this)\s+)?\b(?P<part>morning|afternoon|evening|tonight)\b", _FLAGS)
_DURATION = re.compile(
    r"(?:in\s+)?(?:(?:(?:[0-9]{1,4}|an?|one|two|three|four|half\s+an?)\s*"
    r"(?:hours?|hrs?|h|minutes?|mins?|m)\s*(?:and\s+)?)+)",
    re.ASCII,
)
_DURATION_PART = re.compile(
    r"(?P<n>[0-9]{1,4}|an?|one|two|three|four|half\s+an?)\s*(?P<unit>hours?|hrs?|h|minutes?|mins?|m)", re.ASCII
)
_WEEKDAY_DAY = re.compile(r"(?:(?P<mod>this|next|coming|on)\s+)?(?P<name>[a-z]+)", re.ASCII)
_DAYS_AHEAD = re.compile(r"in\s+(?P<n>[0-9]{1,3}|an?|one|two|three|four)\s+(?P<unit>days?|weeks?)", re.ASCII)
_ISO_DATE = re.compile(r"(?P<y>[0-9]{4})-(?P<m>[0-9]{1,2})-(?P<d>[0-9]{1,2})", re.ASCII)
_NUMERIC_DATE = re.compile(r"(?P<a>[0-9]{1,2})[/.](?P<b>[0-9]{1,2})(?:[/.](?P<y>[0-9]{4}|[0-9]{2}))?", re.ASCII)
_DAY_NUMBER = re.compile(r"[0-9]{1,2}(?:st|nd|rd|th)?", re.ASCII)
_YEAR = re.compile(r"[0-9]{4}", re.ASCII)
_VAGUE = re.compile(r"(?:(?:this|next|coming)\s+)?(?:week|month|year|weekend)", re.ASCII)
_ASAP: Final = frozenset({"asap", "next slot", "next free slot", "earliest", "first slot", "soon", "soonest"})


def resolve_when(text: str | None, *, now: datetime, policy: Policy, busy: Sequence[Busy] = ()) -> Slot | WhenError:
    """Turn what a person typed after /ship into a bookable slot, or say exactly why not.

    Nothing typed means the next free slot. Slots overlapping blocking `busy` time are neither returned
    nor suggested. Never raises for any text (a naive `now` is a caller bug and raises ValueError).
    """
    now = _as_utc(now, "now")
    earliest = now + policy.lead_time
    index = _BusyIndex.of(busy)  # sorted once for the whole call, however many searches it makes
    if text is None or not text.strip():
        slot = _next_slot(earliest, policy, index)
        if slot is not None:
            return slot
        reason = f"there is no free release slot in the next {SEARCH_DAYS} days; windows are "
        return WhenError(text or "", reason + describe_windows(policy), None, _examples(None, policy))
    try:
        return _resolve(text.strip(), now, policy, index)
    except _Refusal as refusal:
        after = max(refusal.after or earliest, earliest)
        suggestion = _next_slot(after, policy, index)
        return WhenError(text, refusal.reason, suggestion, _examples(suggestion, policy))


def _examples(suggestion: Slot | None, policy: Policy) -> tuple[str, ...]:
    """Forms the parser reads; the first one, when there is a suggestion, books exactly that slot."""
    forms = ("tomorrow", "next tuesday afternoon", "friday 14:00", "in 2 hours", "dec 1 2pm")
    if suggestion is None:
        return forms
    local = suggestion.start.astimezone(policy.timezone)
    return (f"{local:%Y-%m-%d %H:%M}", *forms)


def _resolve(raw: str, now: datetime, policy: Policy, busy: _BusyIndex) -> Slot:
    if len(raw) > MAX_TEXT:
        raise _Refusal(f"'{raw[:40]}…' is too long to be a time ({len(raw)} characters, at most {MAX_TEXT})")
    text = _normalize(raw)
    if not text:
        raise _Refusal(f"couldn't understand '{raw}' as a time")
    text, zone = _split_zone(text, policy.timezone)
    if not text:
        raise _Refusal(f"'{raw}' names a time zone but no day or time")
    own_zone = isinstance(zone, ZoneInfo) and zone.key == policy.timezone.key
    local_now = now.astimezone(zone)

    if text in _ASAP:
        return _first_slot(now, policy, busy)
    if text == "now":
        return _exact(now, now, policy, zone, own_zone, busy)
    duration = _read_duration(text)
    if duration is not None:
        if duration > MAX_AHEAD:
            raise _Refusal(f"'{raw}' is more than a year ahead")
        start = _ceil_minute(now + duration)
        return _exact(start, now, policy, zone, own_zone, busy)

    clock, text = _take_clock(text, raw)
    part, tonight, text = _take_part(text)
    when = _read_day(text, raw, local_now.date(), local_now.replace(tzinfo=None))
    if tonight:
        if when is not None and when.day != local_now.date():
            raise _Refusal(f"couldn't understand '{raw}' as a time: 'tonight' and another day")
        when, part = _Day(local_now.date()), "evening"

    if clock is not None:
        # A time with no day, or with today's weekday name, means its next occurrence.
        day = local_now.date() if when is None else when.day
        roll = 1 if when is None else 7 if when.may_roll else 0
        start = _wall_clock(day, clock, zone)
        if roll and start <= now:
            start = _wall_clock(day + timedelta(days=roll), clock, zone)
        return _exact(start, now, policy, zone, own_zone, busy)

    if when is None:
        if part is None:
            raise _Refusal(f"couldn't understand '{raw}' as a time")
        when = _Day(local_now.date(), may_roll=True)
        roll_days = 1
    else:
        roll_days = 7
    try:
        return _day_slot(when.day, part, zone, own_zone, now, policy, busy)
    except _Refusal:
        if not when.may_roll:
            raise
    # Today's weekday name (or a bare part of the day) with nothing left today: the next one.
    return _day_slot(when.day + timedelta(days=roll_days), part, zone, own_zone, now, policy, busy)


def _normalize(raw: str) -> str:
    text = " ".join(raw.lower().split())
    # Chat apps turn straight quotes into curly ones; strip both kinds, and trailing punctuation.
    text = text.strip("\"'`\u2018\u2019\u201c\u201d.,!?;: ")
    # ISO 8601 "2026-12-01T14:00" reads as a date and a time.
    return re.sub(r"(?<=[0-9]{4}-[0-9]{2}-[0-9]{2})t(?=[0-9])", " ", text, flags=re.ASCII)


def _split_zone(text: str, default: ZoneInfo) -> tuple[str, tzinfo]:
    """A trailing IANA zone or common abbreviation overrides the repo's zone for reading the text."""
    head, _, last = text.rpartition(" ")
    zone = _ZONE_ABBREVIATIONS.get(last) or _iana_zones().get(_ZONE_NAMES.get(last, last).lower())
    if zone is None:
        return text, default
    return head.strip(), zone


def zone_named(text: str | None) -> str | None:
    """The IANA zone a "when" text ends with ("friday 3pm America/New_York"), if it names one."""
    if not text:
        return None
    _, zone = _split_zone(_normalize(text), ZoneInfo("UTC"))
    return zone.key if isinstance(zone, ZoneInfo) and zone.key != "UTC" else None


@cache
def _iana_zones() -> dict[str, ZoneInfo]:
    """Lower-cased IANA keys; only "Area/City" names, so legacy keys like "EST" defer to our table."""
    return {key.lower(): ZoneInfo(key) for key in available_timezones() if "/" in key}


def _read_duration(text: str) -> timedelta | None:
    if _DURATION.fullmatch(text) is None:
        return None
    total = timedelta(0)
    for match in _DURATION_PART.finditer(text):
        count_text = match["n"]
        amount = 0.5 if count_text.startswith("half") else float(_NUMBER_WORDS.get(count_text) or int(count_text))
        hours = match["unit"].startswith("h")
        total += timedelta(hours=amount) if hours else timedelta(minutes=amount)
    return total


def _take_clock(text: str, raw: str) -> tuple[time | None, str]:
    matches = list(_CLOCK.finditer(text))
    if not matches:
        return None, text
    if len(matches) > 1:
        raise _Refusal(f"couldn't understand '{raw}' as a time: it names more than one time of day")
    match = matches[0]
    rest = " ".join((text[: match.start()] + " " + text[match.end() :]).split())
    if match["word"] is not None:
        return (time(0) if match["word"] == "midnight" else time(12)), rest
    if match["h12"] is not None:
        hour, minute = int(match["h12"]), int(match["m12"] or 0)
        if not 1 <= hour <= 12 or minute > 59:
            raise _Refusal(f"'{match[0].strip()}' in '{raw}' is not a time of day")
        return time(hour % 12 + (12 if match["ampm"] == "p" else 0), minute), rest
    hour_text = match["h24"] or match["hh"] or match["hat"]
    hour, minute = int(hour_text), int(match["m24"] or match["mh"] or 0)
    if hour > 23 or minute > 59:
        raise _Refusal(f"'{match[0].strip()}' in '{raw}' is not a time of day")
    return time(hour, minute), rest


def _take_part(text: str) -> tuple[_PartOfDay | None, bool, str]:
    matches = list(_PART.finditer(text))
    if len(matches) != 1:
        # Zero: none given. Several ("morning evening"): leave them for the day reader to refuse.
        return None, False, text
    match = matches[0]
    rest = " ".join((text[: match.start()] + " " + text[match.end() :]).split())
    word = match["part"]
    if word == "tonight":
        return "evening", True, rest
    if match[0].startswith("this"):
        # "this afternoon" names today as surely as "today afternoon" does.
        rest = f"today {rest}".strip()
    part: _PartOfDay = "morning" if word == "morning" else "afternoon" if word == "afternoon" else "evening"
    return part, False, rest


def _read_day(text: str, raw: str, today: date, base: datetime) -> _Day | None:
    """The local date named by `text` (no time of day left in it), or None when it names none.

    Relative words are ours (they are few, and dateparser carries the current time into them);
    dateparser reads only month-name dates, and its answer is checked against the words typed.
    """
    text = re.sub(r"^(?:on|at)\s+|\s+(?:at|on)$", "", text).strip(" ,")
    if not text:
        return None
    if text in ("today", "tdy"):
        return _Day(today)
    if text in ("tomorrow", "tmrw", "tmr", "tomorow", "tommorow", "tommorrow"):
        return _Day(today + timedelta(days=1))
    if text in ("day after tomorrow", "the day after tomorrow", "overmorrow"):
        return _Day(today + timedelta(days=2))
    if text == "yesterday":
        return _Day(today - timedelta(days=1))
    if _VAGUE.fullmatch(text):
        raise _Refusal(f"'{raw}' is too vague: name a day, like 'dec 1' or 'next tuesday'")

    weekday = _WEEKDAY_DAY.fullmatch(text)
    if weekday is not None and weekday["name"] in _WEEKDAYS:
        ahead = (_WEEKDAYS[weekday["name"]] - today.weekday()) % 7
        if weekday["mod"] == "next":
            # "next tuesday" is the coming Tuesday, never today (on a Tuesday it is a week away).
            return _Day(today + timedelta(days=ahead or 7))
        return _Day(today, may_roll=True) if ahead == 0 else _Day(today + timedelta(days=ahead))

    ahead_match = _DAYS_AHEAD.fullmatch(text)
    if ahead_match is not None:
        count = _NUMBER_WORDS.get(ahead_match["n"]) or int(ahead_match["n"])
        days = count * (7 if ahead_match["unit"].startswith("week") else 1)
        return _Day(_within_reach(today + timedelta(days=days), today, raw))

    iso = _ISO_DATE.fullmatch(text)
    if iso is not None:
        # dateparser "repairs" 2026-13-01 into 13 Jan; an impossible date should be refused instead.
        return _Day(_within_reach(_make_date(iso["y"], iso["m"], iso["d"], raw), today, raw))

    numeric = _NUMERIC_DATE.fullmatch(text)
    if numeric is not None:
        return _Day(_numeric_date(numeric, raw, today))

    return _Day(_month_name_date(text, raw, today, base))


def _make_date(year: str | int, month: str | int, day: str | int, raw: str) -> date:
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        raise _Refusal(f"couldn't understand '{raw}' as a time: there is no such date") from None


def _numeric_date(match: re.Match[str], raw: str, today: date) -> date:
    """1/12 is 1 Dec in Berlin and 12 Jan in Boston: only dates that read one way are accepted."""
    first, second = int(match["a"]), int(match["b"])
    if first > 12 >= second:
        day, month = first, second
    elif second > 12 >= first or first == second:
        month, day = first, second
    else:
        raise _Refusal(f"'{raw}' could be read two ways (day/month or month/day): write it like 'dec 1' or 2026-12-01")
    if match["y"] is not None:
        year = int(match["y"]) + (2000 if len(match["y"]) == 2 else 0)
        return _within_reach(_make_date(year, month, day, raw), today, raw)
    _make_date(2000, month, day, raw)  # a leap year: refuses 30 Feb and 31 Apr, allows 29 Feb
    # Without a year, the next such date on or after today.
    for year in range(today.year, today.year + 2):
        with contextlib.suppress(ValueError):
            if (found := date(year, month, day)) >= today:
                return _within_reach(found, today, raw)
    raise _Refusal(f"'{raw}' is more than a year ahead")


def _month_name_date(text: str, raw: str, today: date, base: datetime) -> date:
    """'dec 1', '1 december 2026', 'tue, 1st of dec': dateparser reads it, and we check every word."""
    not_understood = _Refusal(f"couldn't understand '{raw}' as a time")
    words = [word for word in re.split(r"[\s,.]+", text) if word and word not in ("of", "the")]
    months = [_MONTHS[word] for word in words if word in _MONTHS]
    weekdays = [_WEEKDAYS[word] for word in words if word in _WEEKDAYS]
    days = [int(word.rstrip("stndrh")) for word in words if _DAY_NUMBER.fullmatch(word)]
    years = [int(word) for word in words if _YEAR.fullmatch(word)]
    if len(months) + len(weekdays) + len(days) + len(years) != len(words) or len(months) != 1:
        raise not_understood
    if len(days) != 1 or len(weekdays) > 1 or len(years) > 1:
        raise _Refusal(f"'{raw}' is too vague: name a day, like 'dec 1' or 'next tuesday'")
    parsed = _dateparser(text, base)
    if parsed is None or parsed.date_obj is None or parsed.period != "day":
        raise not_understood
    # Only the wall-clock matters; the zone was ours to choose (see _dateparser).
    wall = parsed.date_obj.replace(tzinfo=None)
    found = wall.date()
    # dateparser skips words it cannot place and "repairs" others: "friday at 15" came back as the
    # 15th, a Sunday. Every word typed must agree with the date that came back.
    if (
        found.month != months[0]
        or found.day != days[0]
        or (years and found.year != years[0])
        or (weekdays and found.weekday() != weekdays[0])
        or wall.time() not in (time(0), base.time())
    ):
        raise not_understood
    return _within_reach(found, today, raw)


def _dateparser(text: str, base: datetime) -> _ParsedDate | None:
    """Thin wrapper around dateparser: English only, future-leaning, relative to `base`.

    `base` is naive wall-clock time in the zone the person meant, and dateparser is told that zone is
    UTC, so it does plain calendar arithmetic and never converts; we rebuild the instant with zoneinfo.
    """
    settings = {
        "PREFER_DATES_FROM": "future",
        "RETURN_AS_TIMEZONE_AWARE": True,
        "RELATIVE_BASE": base,
        "TIMEZONE": "UTC",
    }
    try:
        data = DateDataParser(languages=["en"], settings=settings).get_date_data(text)
    except Exception:  # noqa: BLE001 - a heuristic parser fed user text; any crash there means "not a date"
        return None
    return _ParsedDate(data.date_obj, data.period)


@dataclass(frozen=True, slots=True)
class _ParsedDate:
    date_obj: datetime | None
    period: str | None


def _within_reach(day: date, today: date, raw: str) -> date:
    """Refuse dates beyond a year either way early: they are typos, and far dates overflow arithmetic."""
    if day - today > MAX_AHEAD:
        raise _Refusal(f"'{raw}' is more than a year ahead ({_day_label(day, with_year=True)})")
    if today - day > MAX_AHEAD:
        raise _Refusal(f"{_day_label(day, with_year=True)} is in the past")
    return day


def _wall_clock(day: date, clock: time, zone: tzinfo) -> datetime:
    """The UTC instant of a wall-clock time; the earlier one when clocks repeat, refused when they skip."""
    local = datetime.combine(day, clock, tzinfo=zone)
    if not _exists(local):
        raise _Refusal(
            f"{_day_label(day)} {clock:%H:%M} does not exist in {_zone_label(zone)}: the clocks skip that hour",
            after=local.astimezone(UTC),
        )
    return local.astimezone(UTC)


def _exact(start: datetime, now: datetime, policy: Policy, zone: tzinfo, own_zone: bool, busy: _BusyIndex) -> Slot:
    """An explicit start must itself be bookable; otherwise refuse with the first problem."""
    asked = start.astimezone(zone)
    label = f"{_day_label(asked.date())} {asked:%H:%M}"
    if not own_zone:
        local = start.astimezone(policy.timezone)
        label += f" {_zone_label(zone)} ({_day_label(local.date())} {local:%H:%M} {policy.timezone.key})"
    problems = _problems(start, policy, now, label, own_zone=own_zone, busy=busy)
    if problems:
        raise _Refusal(problems[0], after=start)
    return Slot(start, start + policy.slot)


def _day_range(day: date, part: _PartOfDay | None, zone: tzinfo) -> tuple[datetime, datetime]:
    first, last = _PARTS[part] if part is not None else (time(0), None)
    start = datetime.combine(day, first, tzinfo=zone).astimezone(UTC)
    if last is None:
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    else:
        end = datetime.combine(day, last, tzinfo=zone).astimezone(UTC)
    return start, end


def _first_slot(now: datetime, policy: Policy, busy: _BusyIndex) -> Slot:
    slot = _next_slot(now + policy.lead_time, policy, busy)
    if slot is None:
        raise _Refusal(
            f"there is no free release slot in the next {SEARCH_DAYS} days; windows are {describe_windows(policy)}"
        )
    return slot


def _day_slot(
    day: date, part: _PartOfDay | None, zone: tzinfo, own_zone: bool, now: datetime, policy: Policy, busy: _BusyIndex
) -> Slot:
    """The earliest free slot on a local day (or part of it): a bare day means its first window."""
    start, end = _day_range(day, part, zone)
    after = max(start, now + policy.lead_time)
    slot = _next_slot(after, policy, busy)
    if slot is not None and slot.start < end:
        return slot
    if busy:
        # Would the day have had a slot but for busy time? Then that, not the windows, is the reason.
        unbusy = _next_slot(after, policy, _NOT_BUSY)
        if unbusy is not None and unbusy.start < end:
            blocker = busy.overlapping(unbusy.start, unbusy.end)
            label = _day_label(day) + ("" if own_zone else f" ({_zone_label(zone)})")
            where = f"{label} {part}" if part else label
            taken = f"; the first overlaps {_busy_label(blocker, day, policy.timezone)}" if blocker else ""
            raise _Refusal(f"every release slot left {where} is busy{taken}", after=start)
    raise _Refusal(_why_no_slot(day, part, zone, own_zone, now, policy, start, end), after=start)


def _why_no_slot(
    day: date,
    part: _PartOfDay | None,
    zone: tzinfo,
    own_zone: bool,
    now: datetime,
    policy: Policy,
    start: datetime,
    end: datetime,
) -> str:
    windows = describe_windows(policy)
    label = _day_label(day) + ("" if own_zone else f" ({_zone_label(zone)})")
    where = f"{label} {part}" if part else label
    if end <= now:
        return f"{where} is in the past"
    if own_zone:
        freeze = in_freeze(day, policy)
        if freeze is not None:
            return f"{label} is inside {_freeze_label(freeze)}"
        if not any(day.weekday() in w.days for w in policy.windows):
            return f"{_DAY_NAME[day.weekday()]} {_short_date(day)} has no release window; windows are {windows}"
    if start <= now + policy.lead_time:
        today = f"this {part}" if part else "today"
        return (
            f"no release slot is left {today} ({label}): windows are {windows}, "
            f"and the lead time is {_duration_text(policy.lead_time)}"
        )
    if part:
        return f"{label} has no release slot in the {part}; windows are {windows}"
    return f"{label} has no free release slot; windows are {windows}"


# --- small helpers ------------------------------------------------------------------------------------


def _as_utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {moment}")
    return moment.astimezone(UTC)


def _exists(local: datetime) -> bool:
    """False for wall-clock times inside a spring-forward gap (they do not survive a round trip)."""
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None, fold=0) == local.replace(tzinfo=None, fold=0)


def _ceil_minute(moment: datetime) -> datetime:
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


def _minutes(clock: time) -> int:
    return clock.hour * 60 + clock.minute
