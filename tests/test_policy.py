"""Release windows, freezes and "when" parsing: fixed clocks, three zones, DST days, and a fuzzer."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.policy import (
    DEFAULT_WINDOWS,
    SEARCH_DAYS,
    Busy,
    Freeze,
    Policy,
    Slot,
    WhenError,
    Window,
    describe_windows,
    format_slot,
    in_freeze,
    next_slot,
    resolve_when,
    slot_problems,
)

BERLIN = ZoneInfo("Europe/Berlin")
LA = ZoneInfo("America/Los_Angeles")
ZULU = ZoneInfo("UTC")
TOKYO = ZoneInfo("Asia/Tokyo")
# Wednesday 25 Nov 2026: 10:00 in Berlin, 09:00 UTC, 01:00 in Los Angeles.
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
MON_FRI = (Window(frozenset(range(5)), time(10), time(16)),)
EVERY_DAY = frozenset(range(7))
HOLIDAYS = Freeze(date(2026, 12, 20), date(2027, 1, 3), "Holidays")
ZONES = {"berlin": BERLIN, "utc": ZULU, "la": LA}


def at(zone: ZoneInfo, month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


def slot_at(zone: ZoneInfo, month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> Slot:
    start = at(zone, month, day, hour, minute, year)
    return Slot(start, start + timedelta(minutes=30))


def resolved(text: str | None, policy: Policy, now: datetime = NOW) -> Slot:
    result = resolve_when(text, now=now, policy=policy)
    assert isinstance(result, Slot), result
    return result


def refused(text: str | None, policy: Policy, now: datetime = NOW) -> WhenError:
    result = resolve_when(text, now=now, policy=policy)
    assert isinstance(result, WhenError), result
    return result


def day_slots(day: date, policy: Policy) -> list[datetime]:
    """Every bookable start on one local day, by walking next_slot."""
    start = datetime.combine(day, time(0), tzinfo=policy.timezone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=policy.timezone)
    starts = []
    slot = next_slot(start, policy)
    while slot is not None and slot.start < end:
        starts.append(slot.start)
        slot = next_slot(slot.start + timedelta(microseconds=1), policy)
    return starts


# --- the forms people type ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        # Nothing typed: the next grid slot after now + 15 minutes' lead time.
        (None, "berlin", (11, 25, 10, 30)),
        ("", "berlin", (11, 25, 10, 30)),
        ("   ", "berlin", (11, 25, 10, 30)),
        ("friday", "berlin", (11, 27, 10, 0)),
        ("fri", "berlin", (11, 27, 10, 0)),
        ("Friday", "berlin", (11, 27, 10, 0)),
        ("on friday", "berlin", (11, 27, 10, 0)),
        ("this friday", "berlin", (11, 27, 10, 0)),
        ("friday 3pm", "berlin", (11, 27, 15, 0)),
        ("friday 3 pm", "berlin", (11, 27, 15, 0)),
        ("friday 15:00", "berlin", (11, 27, 15, 0)),
        ("friday at 15:00", "berlin", (11, 27, 15, 0)),
        ("friday at 15", "berlin", (11, 27, 15, 0)),
        ("friday 15h", "berlin", (11, 27, 15, 0)),
        ("friday noon", "berlin", (11, 27, 12, 0)),
        ("tomorrow 10:00", "berlin", (11, 26, 10, 0)),
        ("tomorrow", "berlin", (11, 26, 10, 0)),
        ("tomorrow morning", "berlin", (11, 26, 10, 0)),
        ("today", "berlin", (11, 25, 10, 30)),
        ("next tuesday", "berlin", (12, 1, 10, 0)),
        ("next tuesday morning", "berlin", (12, 1, 10, 0)),
        ("next tuesday afternoon", "berlin", (12, 1, 13, 0)),
        ("next tuesday in the afternoon", "berlin", (12, 1, 13, 0)),
        ("this afternoon", "berlin", (11, 25, 13, 0)),
        ("afternoon", "berlin", (11, 25, 13, 0)),
        ("in 2 hours", "berlin", (11, 25, 12, 0)),
        ("in 90 minutes", "berlin", (11, 25, 11, 30)),
        ("in 1h 30m", "berlin", (11, 25, 11, 30)),
        ("in an hour", "berlin", (11, 25, 11, 0)),
        ("in 2 days", "berlin", (11, 27, 10, 0)),
        ("in 1 week", "berlin", (12, 2, 10, 0)),
        ("2026-12-01 14:00 Europe/Berlin", "berlin", (12, 1, 14, 0)),
        ("2026-12-01 14:00 europe/berlin", "berlin", (12, 1, 14, 0)),
        ("2026-12-01 14:00", "berlin", (12, 1, 14, 0)),
        ("2026-12-01T14:00", "berlin", (12, 1, 14, 0)),
        ("2026-12-01", "berlin", (12, 1, 10, 0)),
        ("dec 1 2pm", "berlin", (12, 1, 14, 0)),
        ("dec 1", "berlin", (12, 1, 10, 0)),
        ("1 december 2026", "berlin", (12, 1, 10, 0)),
        ("tue, 1st of dec", "berlin", (12, 1, 10, 0)),
        ("25/12", "berlin", (12, 25, 10, 0)),
        ("12/25 11:00", "berlin", (12, 25, 11, 0)),
        ("3pm", "berlin", (11, 25, 15, 0)),
        ("noon", "berlin", (11, 25, 12, 0)),
        ("monday 10:00 UTC", "berlin", (11, 30, 11, 0)),
        ("friday 14:00 CET", "berlin", (11, 27, 14, 0)),
        ("asap", "berlin", (11, 25, 10, 30)),
        ("'friday'", "berlin", (11, 27, 10, 0)),
        # UTC repo: now is 09:00, the lead time ends 09:15, the first window opens at 10:00.
        (None, "utc", (11, 25, 10, 0)),
        ("friday", "utc", (11, 27, 10, 0)),
        ("in 2 hours", "utc", (11, 25, 11, 0)),
        ("2026-12-01 14:00 Europe/Berlin", "utc", (12, 1, 13, 0)),
        ("tomorrow 3pm", "utc", (11, 26, 15, 0)),
        # Los Angeles: now is 01:00 on Wednesday.
        (None, "la", (11, 25, 10, 0)),
        ("fri 15:00 PST", "la", (11, 27, 15, 0)),
        ("fri 15:00 pt", "la", (11, 27, 15, 0)),
        ("friday 3pm EST", "la", (11, 27, 12, 0)),
        ("tomorrow", "la", (11, 26, 10, 0)),
        ("2026-12-01 14:00", "la", (12, 1, 14, 0)),
        ("wednesday", "la", (11, 25, 10, 0)),
    ],
)
def test_forms_resolve_to_slots(text: str | None, zone: str, expected: tuple[int, int, int, int]) -> None:
    tz = ZONES[zone]
    policy = Policy(tz, MON_FRI)
    assert resolved(text, policy) == slot_at(tz, *expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "saturday",
            "Saturday 28 Nov has no release window; windows are Mon-Thu 10:00-16:00 Europe/Berlin",
        ),
        ("friday", "Friday 27 Nov has no release window; windows are Mon-Thu 10:00-16:00 Europe/Berlin"),
        ("2026-11-20 14:00", "Fri 20 Nov 14:00 is in the past"),
        ("yesterday", "Tue 24 Nov is in the past"),
        ("2025-11-20", "Thu 20 Nov 2025 is in the past"),
        ("blorp", "couldn't understand 'blorp' as a time"),
        ("friday blorp", "couldn't understand 'friday blorp' as a time"),
        ("dec 1 blorp", "couldn't understand 'dec 1 blorp' as a time"),
        ("2 tomorrow", "couldn't understand '2 tomorrow' as a time"),
        ("in 5 minutes", "too soon: the lead time is 15 minutes, and Wed 25 Nov 10:05 is 5 minutes from now"),
        ("now", "too soon: the lead time is 15 minutes, and Wed 25 Nov 10:00 is less than a minute from now"),
        (
            "tomorrow 15:45",
            "Thu 26 Nov 15:45 is too late: the window closes at 16:00, less than the 30 minutes a release "
            "needs (Mon-Thu 10:00-16:00 Europe/Berlin)",
        ),
        ("tomorrow 9am", "Thu 26 Nov 09:00 is outside the release windows (Mon-Thu 10:00-16:00 Europe/Berlin)"),
        (
            "next tuesday evening",
            "Tue 1 Dec has no release slot in the evening; windows are Mon-Thu 10:00-16:00 Europe/Berlin",
        ),
        ("next week", "'next week' is too vague: name a day, like 'dec 1' or 'next tuesday'"),
        ("december", "'december' is too vague: name a day, like 'dec 1' or 'next tuesday'"),
        ("1/12", "'1/12' could be read two ways (day/month or month/day): write it like 'dec 1' or 2026-12-01"),
        ("2026-13-01", "couldn't understand '2026-13-01' as a time: there is no such date"),
        ("2026-12-01 25:00", "'25:00' in '2026-12-01 25:00' is not a time of day"),
        ("13pm", "'13pm' in '13pm' is not a time of day"),
        ("3pm 4pm", "couldn't understand '3pm 4pm' as a time: it names more than one time of day"),
        ("2030-01-01", "'2030-01-01' is more than a year ahead (Tue 1 Jan 2030)"),
        ("UTC", "'UTC' names a time zone but no day or time"),
        ("x" * 101, f"'{'x' * 40}…' is too long to be a time (101 characters, at most 100)"),
    ],
)
def test_refusals_say_exactly_why(text: str, reason: str) -> None:
    error = refused(text, Policy(BERLIN))
    assert error.reason == reason
    assert error.text == text


def test_zone_abbreviation_outside_windows_names_both_zones() -> None:
    error = refused("fri 15:00 PST", Policy(BERLIN, MON_FRI))
    assert error.reason == (
        "Fri 27 Nov 15:00 PST (Sat 28 Nov 00:00 Europe/Berlin) is outside the release windows "
        "(Mon-Fri 10:00-16:00 Europe/Berlin)"
    )
    assert error.suggestion == slot_at(BERLIN, 11, 30, 10)


def test_freeze_refusal_suggests_the_first_slot_after_it() -> None:
    policy = Policy(BERLIN, freezes=(HOLIDAYS,))
    error = refused("dec 24", policy)
    assert error.reason == "Thu 24 Dec is inside the freeze 'Holidays' (20 Dec - 3 Jan)"
    assert error.suggestion == slot_at(BERLIN, 1, 4, 10, year=2027)
    explicit = refused("2026-12-24 11:00", policy)
    assert explicit.reason == "Thu 24 Dec is inside the freeze 'Holidays' (20 Dec - 3 Jan)"


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("saturday", (11, 30, 10, 0)),
        ("2026-11-20 14:00", (11, 25, 10, 30)),  # past: the next slot from now
        ("in 5 minutes", (11, 25, 10, 30)),
        ("tomorrow 15:45", (11, 30, 10, 0)),
        ("tomorrow 9am", (11, 26, 10, 0)),
        ("next tuesday evening", (12, 2, 10, 0)),
        ("blorp", (11, 25, 10, 30)),
    ],
)
def test_refusals_suggest_the_next_valid_slot(text: str, suggestion: tuple[int, int, int, int]) -> None:
    error = refused(text, Policy(BERLIN))
    assert error.suggestion == slot_at(BERLIN, *suggestion)


def test_the_first_example_books_the_suggestion() -> None:
    policy = Policy(BERLIN)
    error = refused("saturday", policy)
    assert error.suggestion is not None
    assert error.examples[0] == "2026-11-30 10:00"
    assert resolved(error.examples[0], policy) == error.suggestion
    assert "next tuesday afternoon" in error.examples


def test_no_suggestion_when_nothing_is_free() -> None:
    frozen = Freeze(date(2026, 1, 1), date(2027, 12, 31), "year of rest")
    policy = Policy(BERLIN, freezes=(frozen,))
    error = refused(None, policy)
    assert error.suggestion is None
    assert error.reason.startswith(f"there is no free release slot in the next {SEARCH_DAYS} days")
    assert refused("tomorrow", policy).suggestion is None


# --- today's weekday, bare times, rolling forward -----------------------------------------------------

LATE = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wednesday 16:00 in Berlin: today's window has closed


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        # Today's weekday name means today only while a slot remains today.
        ("wednesday", NOW, (11, 25, 10, 30)),
        ("wed", NOW, (11, 25, 10, 30)),
        ("wednesday", LATE, (12, 2, 10, 0)),
        # "next wednesday" is never today.
        ("next wednesday", NOW, (12, 2, 10, 0)),
        ("next thursday", NOW, (11, 26, 10, 0)),
        # With a time: today if that time is still ahead, else a week on.
        ("wednesday 14:00", NOW, (11, 25, 14, 0)),
        ("wednesday 14:00", LATE, (12, 2, 14, 0)),
        # A bare time is its next occurrence; a bare part of the day likewise.
        ("3pm", NOW, (11, 25, 15, 0)),
        ("3pm", LATE, (11, 26, 15, 0)),
        ("afternoon", LATE, (11, 26, 13, 0)),
    ],
)
def test_today_or_the_next_one(text: str, now: datetime, expected: tuple[int, int, int, int]) -> None:
    assert resolved(text, Policy(BERLIN), now) == slot_at(BERLIN, *expected)


def test_today_with_nothing_left_is_refused_not_moved() -> None:
    error = refused("today", Policy(BERLIN), LATE)
    assert error.reason == (
        "no release slot is left today (Wed 25 Nov): windows are Mon-Thu 10:00-16:00 Europe/Berlin, "
        "and the lead time is 15 minutes"
    )
    assert error.suggestion == slot_at(BERLIN, 11, 26, 10)


def test_lead_time_pushes_the_first_slot_of_today() -> None:
    almost = datetime(2026, 11, 25, 10, 50, tzinfo=BERLIN)
    # 10:50 + 15 minutes = 11:05: the 11:00 slot is too soon, 11:30 is the first one left.
    assert resolved("today", Policy(BERLIN), almost) == slot_at(BERLIN, 11, 25, 11, 30)
    no_lead = Policy(BERLIN, lead_time=timedelta(0))
    assert resolved("today", no_lead, almost) == slot_at(BERLIN, 11, 25, 11, 0)


def test_relative_times_round_up_to_the_minute() -> None:
    now = NOW + timedelta(seconds=17)
    assert resolved("in 2 hours", Policy(BERLIN), now) == slot_at(BERLIN, 11, 25, 12, 1)


# --- DST ----------------------------------------------------------------------------------------------


def test_berlin_spring_forward_skips_the_missing_hour() -> None:
    # 29 Mar 2026, a Sunday: at 02:00 CET the clocks jump to 03:00 CEST.
    policy = Policy(BERLIN, (Window(EVERY_DAY, time(1), time(4)),))
    assert day_slots(date(2026, 3, 29), policy) == [
        datetime(2026, 3, 29, 0, 0, tzinfo=UTC),  # 01:00 CET
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # 01:30 CET, ends 03:00 CEST
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 CEST
    ]
    now = datetime(2026, 3, 28, 12, tzinfo=UTC)
    error = refused("2026-03-29 02:30", policy, now)
    assert error.reason == "Sun 29 Mar 02:30 does not exist in Europe/Berlin: the clocks skip that hour"
    # The suggestion reads 02:30 as if the clocks had not moved: 02:30 CET, which is 03:30 CEST.
    assert error.suggestion == Slot(datetime(2026, 3, 29, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 2, 0, tzinfo=UTC))


def test_berlin_fall_back_offers_both_halves_of_the_repeated_hour() -> None:
    # 25 Oct 2026, a Sunday: at 03:00 CEST the clocks go back to 02:00 CET.
    policy = Policy(BERLIN, (Window(EVERY_DAY, time(1), time(4)),))
    starts = day_slots(date(2026, 10, 25), policy)
    assert starts == [datetime(2026, 10, 24, 23, 0, tzinfo=UTC) + timedelta(minutes=30 * i) for i in range(8)]
    assert [f"{s.astimezone(BERLIN):%H:%M %Z}" for s in starts] == [
        *("01:00 CEST", "01:30 CEST", "02:00 CEST", "02:30 CEST"),
        *("02:00 CET", "02:30 CET", "03:00 CET", "03:30 CET"),
    ]


@pytest.mark.parametrize(
    ("day", "utc_hour"),
    [(date(2026, 10, 24), 8), (date(2026, 10, 25), 9), (date(2026, 3, 28), 9), (date(2026, 3, 29), 8)],
)
def test_a_10am_window_follows_the_wall_clock_across_dst(day: date, utc_hour: int) -> None:
    policy = Policy(BERLIN, (Window(EVERY_DAY, time(10), time(16)),))
    assert day_slots(day, policy)[0] == datetime.combine(day, time(utc_hour), tzinfo=UTC)


def test_tomorrow_10_on_the_eve_of_the_change() -> None:
    policy = Policy(BERLIN, (Window(EVERY_DAY, time(10), time(16)),))
    saturday = datetime(2026, 10, 24, 12, tzinfo=UTC)
    slot = resolved("tomorrow 10:00", policy, saturday)
    assert slot.start == datetime(2026, 10, 25, 9, tzinfo=UTC)
    assert format_slot(slot, BERLIN) == "Sun 25 Oct 10:00-10:30 Europe/Berlin (09:00 UTC)"


def test_in_two_hours_is_two_real_hours_across_the_change() -> None:
    policy = Policy(BERLIN, (Window(EVERY_DAY, time(0), time(23, 30)),), lead_time=timedelta(0))
    before = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    slot = resolved("in 2 hours", policy, before)
    assert slot.start == before + timedelta(hours=2)
    assert f"{slot.start.astimezone(BERLIN):%H:%M %Z}" == "03:30 CET"


def test_los_angeles_fall_back() -> None:
    # 1 Nov 2026, a Sunday: at 02:00 PDT the clocks go back to 01:00 PST.
    policy = Policy(LA, (Window(frozenset({6}), time(0, 30), time(3)),))
    starts = day_slots(date(2026, 11, 1), policy)
    assert starts == [datetime(2026, 11, 1, 7, 30, tzinfo=UTC) + timedelta(minutes=30 * i) for i in range(7)]
    assert f"{starts[3].astimezone(LA):%H:%M %Z}" == "01:00 PST"
    # The ambiguous 01:30 names the first one, in PDT.
    now = datetime(2026, 10, 30, tzinfo=UTC)
    assert resolved("2026-11-01 01:30", policy, now).start == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    assert resolved("sunday", policy, now).start == datetime(2026, 11, 1, 7, 30, tzinfo=UTC)


# --- the building blocks ------------------------------------------------------------------------------


def test_slot_problems() -> None:
    policy = Policy(BERLIN, freezes=(HOLIDAYS,))
    assert slot_problems(at(BERLIN, 11, 26, 10), policy, NOW) == []
    assert slot_problems(at(BERLIN, 11, 26, 15, 30), policy, NOW) == []  # ends exactly at 16:00
    frozen_past_saturday = slot_problems(at(BERLIN, 12, 26, 9), policy, datetime(2027, 1, 1, tzinfo=UTC))
    assert frozen_past_saturday == [
        "Sat 26 Dec 09:00 is in the past",
        "Sat 26 Dec is inside the freeze 'Holidays' (20 Dec - 3 Jan)",
        "Saturday 26 Dec has no release window; windows are Mon-Thu 10:00-16:00 Europe/Berlin",
    ]
    assert slot_problems(at(BERLIN, 11, 25, 10, 10), policy, NOW) == [
        "too soon: the lead time is 15 minutes, and Wed 25 Nov 10:10 is 10 minutes from now"
    ]


def test_next_slot_skips_freezes_and_weekends() -> None:
    policy = Policy(BERLIN, freezes=(HOLIDAYS,))
    assert next_slot(at(BERLIN, 12, 18, 9), policy) == slot_at(BERLIN, 1, 4, 10, year=2027)
    assert next_slot(at(BERLIN, 11, 26, 15, 31), policy) == slot_at(BERLIN, 11, 30, 10)
    assert next_slot(at(BERLIN, 11, 26, 10, 1), policy) == slot_at(BERLIN, 11, 26, 10, 30)


def test_in_freeze() -> None:
    policy = Policy(BERLIN, freezes=(HOLIDAYS,))
    assert in_freeze(date(2026, 12, 20), policy) == HOLIDAYS
    assert in_freeze(date(2027, 1, 3), policy) == HOLIDAYS
    assert in_freeze(date(2026, 12, 19), policy) is None
    assert in_freeze(date(2027, 1, 4), policy) is None
    # A datetime counts by its local date: 23:30 UTC on the 19th is already the 20th in Berlin.
    assert in_freeze(datetime(2026, 12, 19, 23, 30, tzinfo=UTC), policy) == HOLIDAYS


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        (BERLIN, "Fri 27 Nov 14:00-14:30 Europe/Berlin (13:00 UTC)"),
        (ZULU, "Fri 27 Nov 13:00-13:30 UTC"),
        (LA, "Fri 27 Nov 05:00-05:30 America/Los_Angeles (13:00 UTC)"),
        (TOKYO, "Fri 27 Nov 22:00-22:30 Asia/Tokyo (13:00 UTC)"),
    ],
)
def test_format_slot(zone: ZoneInfo, expected: str) -> None:
    assert format_slot(slot_at(ZULU, 11, 27, 13), zone) == expected


def test_format_slot_names_the_utc_day_when_it_differs() -> None:
    slot = slot_at(TOKYO, 12, 1, 8)
    assert format_slot(slot, TOKYO) == "Tue 1 Dec 08:00-08:30 Asia/Tokyo (Mon 30 Nov 23:00 UTC)"


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ((), "Mon-Thu 10:00-16:00 Europe/Berlin"),
        (DEFAULT_WINDOWS, "Mon-Thu 10:00-16:00 Europe/Berlin"),
        (
            (
                Window(frozenset({0, 1, 2, 3}), time(14), time(16)),
                Window(frozenset({0, 1, 2, 3}), time(10), time(12)),
                Window(frozenset({4}), time(10), time(12)),
            ),
            "Mon-Thu 10:00-12:00, 14:00-16:00; Fri 10:00-12:00 Europe/Berlin",
        ),
        ((Window(frozenset({0, 2, 4}), time(9), time(17)),), "Mon, Wed, Fri 09:00-17:00 Europe/Berlin"),
        ((Window(frozenset({5, 6}), time(9), time(12)),), "Sat-Sun 09:00-12:00 Europe/Berlin"),
    ],
)
def test_describe_windows(windows: tuple[Window, ...], expected: str) -> None:
    assert describe_windows(Policy(BERLIN, windows)) == expected


def test_policy_defaults() -> None:
    policy = Policy(BERLIN, ())
    assert policy.windows == DEFAULT_WINDOWS
    assert policy.slot == timedelta(minutes=30)
    assert policy.lead_time == timedelta(minutes=15)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Window(frozenset(), time(10), time(16)),
        lambda: Window(frozenset({7}), time(10), time(16)),
        lambda: Window(frozenset({0}), time(16), time(10)),
        lambda: Window(frozenset({0}), time(10), time(10)),
        lambda: Window(frozenset({0}), time(10, tzinfo=UTC), time(16)),
        lambda: Freeze(date(2026, 12, 2), date(2026, 12, 1)),
        lambda: Policy(BERLIN, slot=timedelta(hours=7)),
        lambda: Policy(BERLIN, slot=timedelta(0)),
        lambda: Policy(BERLIN, slot=timedelta(seconds=90)),
        lambda: Policy(BERLIN, lead_time=timedelta(minutes=-1)),
        lambda: Slot(datetime(2026, 11, 27, 13), datetime(2026, 11, 27, 14)),
        lambda: slot_at(ZULU, 11, 27, 13).__class__(NOW, NOW),
    ],
)
def test_invalid_building_blocks_are_refused(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_naive_now_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        resolve_when("friday", now=datetime(2026, 11, 25, 9), policy=Policy(BERLIN))


def test_slots_are_normalized_to_utc() -> None:
    local = datetime(2026, 11, 27, 14, tzinfo=BERLIN)
    slot = Slot(local, local + timedelta(minutes=30))
    assert slot.start.tzinfo is UTC
    assert slot == slot_at(ZULU, 11, 27, 13)


# --- never raises -------------------------------------------------------------------------------------

_WORDS = (
    *("friday", "fri", "next", "this", "tomorrow", "today", "tonight", "yesterday", "in", "at", "on", "the"),
    *("2", "90", "hours", "minutes", "days", "week", "h", "m", "3pm", "15:00", "25:00", "13pm", "noon"),
    *("morning", "afternoon", "evening", "dec", "1", "31", "feb", "29", "2026-12-01", "9999-12-31"),
    *("0001-01-01", "2026-02-30", "1/12", "30/2", "pst", "utc", "europe/berlin", "ist", "asap", "now"),
)
_FUZZ_POLICY = Policy(BERLIN, MON_FRI, (HOLIDAYS,))
_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(text: str) -> None:
    result = resolve_when(text, now=NOW, policy=_FUZZ_POLICY)
    if isinstance(result, Slot):
        # Whatever the parser accepts must be bookable.
        assert slot_problems(result.start, _FUZZ_POLICY, NOW) == []
    else:
        assert result.reason.strip()
        if result.suggestion is not None:
            assert slot_problems(result.suggestion.start, _FUZZ_POLICY, NOW) == []


@_FUZZ
@given(st.text(max_size=120))
def test_resolve_when_never_raises_on_any_text(text: str) -> None:
    _check(text)


@_FUZZ
@given(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=5).map(" ".join))
def test_resolve_when_never_raises_on_time_like_text(text: str) -> None:
    _check(text)


# --- busy time ----------------------------------------------------------------------------------------

FRI_BERLIN = Policy(BERLIN, MON_FRI)


def busy_at(zone: ZoneInfo, month: int, day: int, hour: int, minute: int, minutes: int, reason: str = "") -> Busy:
    start = at(zone, month, day, hour, minute)
    return Busy(start, start + timedelta(minutes=minutes), reason)


def test_a_busy_slot_is_refused_with_the_reason() -> None:
    deploy = busy_at(BERLIN, 11, 27, 15, 0, 30, "Deploy octo-org/api#12")
    assert slot_problems(at(BERLIN, 11, 27, 15), FRI_BERLIN, NOW, busy=[deploy]) == [
        "Fri 27 Nov 15:00 overlaps Deploy octo-org/api#12 (15:00-15:30 Europe/Berlin)"
    ]
    # Off the grid, a slot starting inside or running into the interval overlaps it too.
    assert slot_problems(at(BERLIN, 11, 27, 14, 45), FRI_BERLIN, NOW, busy=[deploy]) != []
    assert slot_problems(at(BERLIN, 11, 27, 15, 20), FRI_BERLIN, NOW, busy=[deploy]) != []
    unnamed = busy_at(BERLIN, 11, 27, 23, 0, 120)
    assert slot_problems(at(BERLIN, 11, 27, 15), FRI_BERLIN, NOW, busy=[unnamed, deploy])[0].endswith(
        "overlaps Deploy octo-org/api#12 (15:00-15:30 Europe/Berlin)"
    )
    assert slot_problems(
        at(BERLIN, 11, 27, 15),
        Policy(BERLIN, (Window(EVERY_DAY, time(10), time(16)),)),
        NOW,
        busy=[busy_at(BERLIN, 11, 26, 22, 0, 18 * 60, "Datacenter move")],
    ) == ["Fri 27 Nov 15:00 overlaps Datacenter move (Thu 26 Nov 22:00 - Fri 27 Nov 16:00 Europe/Berlin)"]


def test_busy_intervals_are_half_open() -> None:
    before = busy_at(BERLIN, 11, 27, 14, 0, 60, "before")  # ends as the 15:00 slot starts
    after = busy_at(BERLIN, 11, 27, 15, 30, 30, "after")  # starts as the 15:00 slot ends
    assert slot_problems(at(BERLIN, 11, 27, 15), FRI_BERLIN, NOW, busy=[before, after]) == []
    assert resolved("friday 15:00", FRI_BERLIN) == resolve_when(
        "friday 15:00", now=NOW, policy=FRI_BERLIN, busy=[before, after]
    )


def test_non_blocking_busy_time_is_ignored() -> None:
    tentative = Busy(at(BERLIN, 11, 27, 10), at(BERLIN, 11, 27, 16), "Offsite (tentative)", blocks=False)
    assert slot_problems(at(BERLIN, 11, 27, 15), FRI_BERLIN, NOW, busy=[tentative]) == []
    assert next_slot(at(BERLIN, 11, 27, 9), FRI_BERLIN, busy=[tentative]) == slot_at(BERLIN, 11, 27, 10)


def test_next_slot_skips_busy_time() -> None:
    busy = [
        busy_at(BERLIN, 11, 26, 10, 0, 70, "Deploy #1"),  # 10:00-11:10 takes 10:00, 10:30 and 11:00
        busy_at(BERLIN, 11, 26, 11, 40, 5, "Deploy #2"),  # and 11:30 too
        busy_at(BERLIN, 11, 26, 9, 0, 30, "Before the window"),
    ]
    assert next_slot(at(BERLIN, 11, 26, 9), FRI_BERLIN, busy=busy) == slot_at(BERLIN, 11, 26, 12)
    # A whole busy day moves the slot to the next day with a window.
    all_friday = [busy_at(BERLIN, 11, 27, 0, 0, 24 * 60, "Game day")]
    assert next_slot(at(BERLIN, 11, 27, 9), FRI_BERLIN, busy=all_friday) == slot_at(BERLIN, 11, 30, 10)
    # Unsorted input is fine: the search sorts it.
    assert next_slot(at(BERLIN, 11, 26, 9), FRI_BERLIN, busy=busy[::-1]) == slot_at(BERLIN, 11, 26, 12)


@pytest.mark.parametrize("text", ["friday", "friday 10:00", None, "asap"])
def test_two_prs_asking_for_the_same_slot(text: str | None) -> None:
    now = datetime(2026, 11, 27, 8, tzinfo=UTC)  # Friday 09:00 in Berlin
    first = resolved(text, FRI_BERLIN, now)
    booked = [Busy(first.start, first.end, "Deploy octo-org/api#12")]
    second = resolve_when(text, now=now, policy=FRI_BERLIN, busy=booked)
    if isinstance(second, WhenError):  # an explicit time is refused, and the next one is offered
        assert second.reason == "Fri 27 Nov 10:00 overlaps Deploy octo-org/api#12 (10:00-10:30 Europe/Berlin)"
        second = second.suggestion
    assert first == slot_at(BERLIN, 11, 27, 10)
    assert second == slot_at(BERLIN, 11, 27, 10, 30)


def test_an_explicit_busy_time_suggests_the_next_free_slot() -> None:
    busy = [busy_at(BERLIN, 12, 1, 14, 0, 30, "Deploy #7"), busy_at(BERLIN, 12, 1, 14, 30, 60, "Deploy #8")]
    error = refused_busy("2026-12-01 14:00", busy)
    assert error.reason == "Tue 1 Dec 14:00 overlaps Deploy #7 (14:00-14:30 Europe/Berlin)"
    assert error.suggestion == slot_at(BERLIN, 12, 1, 15, 30)
    assert error.examples[0] == "2026-12-01 15:30"
    assert resolve_when(error.examples[0], now=NOW, policy=FRI_BERLIN, busy=busy) == error.suggestion


def test_a_fully_busy_day_is_refused_with_the_reason() -> None:
    busy = [busy_at(BERLIN, 11, 27, 13, 0, 180, "Load test")]
    error = refused_busy("friday afternoon", busy)
    assert error.reason == (
        "every release slot left Fri 27 Nov afternoon is busy; the first overlaps Load test (13:00-16:00 Europe/Berlin)"
    )
    assert error.suggestion == slot_at(BERLIN, 11, 30, 10)
    # The morning is still free.
    assert resolve_when("friday", now=NOW, policy=FRI_BERLIN, busy=busy) == slot_at(BERLIN, 11, 27, 10)


def refused_busy(text: str, busy: list[Busy], policy: Policy = FRI_BERLIN) -> WhenError:
    result = resolve_when(text, now=NOW, policy=policy, busy=busy)
    assert isinstance(result, WhenError), result
    return result


def test_busy_time_across_fall_back() -> None:
    # 25 Oct 2026: 01:00 CEST to 02:30 CET is two and a half real hours (23:00 to 01:30 UTC).
    policy = Policy(BERLIN, (Window(EVERY_DAY, time(1), time(4)),))
    start = datetime(2026, 10, 25, 1, tzinfo=BERLIN)
    end = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1)
    maintenance = Busy(start, end, "Maintenance")
    assert end - start != timedelta(hours=2.5)  # wall-clock arithmetic would get it wrong
    assert maintenance.end - maintenance.start == timedelta(hours=2.5)
    slot = next_slot(start, policy, busy=[maintenance])
    assert slot is not None
    assert slot.start == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert f"{slot.start.astimezone(BERLIN):%H:%M %Z}" == "02:30 CET"
    # The second 02:00 (CET) is still inside it; the first 02:00 (CEST) too.
    saturday = datetime(2026, 10, 24, tzinfo=UTC)
    cet_2am = datetime(2026, 10, 25, 1, tzinfo=UTC)
    assert slot_problems(cet_2am, policy, saturday, busy=[maintenance]) == [
        "Sun 25 Oct 02:00 overlaps Maintenance (01:00-02:30 Europe/Berlin)"
    ]


def test_busy_time_across_spring_forward() -> None:
    # 29 Mar 2026: 01:30 CET to 03:30 CEST is one real hour (00:30 to 01:30 UTC).
    policy = Policy(BERLIN, (Window(EVERY_DAY, time(1), time(4)),))
    busy = [Busy(datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN), datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN), "Upgrade")]
    assert busy[0].end - busy[0].start == timedelta(hours=1)
    now = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert resolve_when("2026-03-29 01:00", now=now, policy=policy, busy=busy) == Slot(
        datetime(2026, 3, 29, 0, tzinfo=UTC), datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    )
    error = resolve_when("2026-03-29 03:00", now=now, policy=policy, busy=busy)
    assert isinstance(error, WhenError)
    assert error.reason == "Sun 29 Mar 03:00 overlaps Upgrade (01:30-03:30 Europe/Berlin)"
    assert error.suggestion is not None
    assert f"{error.suggestion.start.astimezone(BERLIN):%H:%M %Z}" == "03:30 CEST"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Busy(datetime(2026, 11, 27, 13), datetime(2026, 11, 27, 14, tzinfo=UTC)),
        lambda: Busy(NOW, NOW),
        lambda: Busy(NOW, NOW - timedelta(minutes=1)),
    ],
)
def test_invalid_busy_time_is_refused(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


# Busy sets over the next ten days, on and off the grid, overlapping each other or not.
_BUSY = st.lists(
    st.builds(
        lambda offset, minutes, blocks: Busy(
            NOW + timedelta(minutes=offset), NOW + timedelta(minutes=offset + minutes), f"b{offset}", blocks
        ),
        st.integers(-120, 10 * 24 * 60),
        st.integers(1, 6 * 60),
        st.booleans(),
    ),
    max_size=40,
)
_BUSY_TEXTS = (None, "friday", "tomorrow afternoon", "next tuesday", "2026-11-26 14:00", "in 2 hours", "asap")


def _brute_force_next(after: datetime, policy: Policy, busy: list[Busy]) -> Slot | None:
    """The reference: walk the busy-free slots one by one until one overlaps no blocking interval."""
    slot = next_slot(after, policy)
    while slot is not None and any(b.blocks and b.start < slot.end and slot.start < b.end for b in busy):
        slot = next_slot(slot.start + timedelta(microseconds=1), policy)
    return slot


@_FUZZ
@given(_BUSY, st.sampled_from(_BUSY_TEXTS))
def test_returned_slots_never_overlap_busy_time(busy: list[Busy], text: str | None) -> None:
    result = resolve_when(text, now=NOW, policy=_FUZZ_POLICY, busy=busy)
    slot = result if isinstance(result, Slot) else result.suggestion
    if slot is None:
        return
    assert not any(b.blocks and b.start < slot.end and slot.start < b.end for b in busy)
    assert slot_problems(slot.start, _FUZZ_POLICY, NOW, busy=busy) == []


@_FUZZ
@given(_BUSY, st.integers(0, 5 * 24 * 60))
def test_next_slot_with_busy_time_is_the_earliest_free_one(busy: list[Busy], offset: int) -> None:
    after = NOW + timedelta(minutes=offset)
    assert next_slot(after, _FUZZ_POLICY, busy=busy) == _brute_force_next(after, _FUZZ_POLICY, busy)
