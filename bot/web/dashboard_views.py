"""What the dashboard pages show, made from releases, policies and calendar events. Pure: no I/O, no clock."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..calendar import CalendarEvent
from ..checks import CheckState, ChecksVerdict
from ..checks import _safe_url as safe_url
from ..policy import Policy, Slot, describe_windows, format_slot, in_freeze
from ..prstate import ShaChecks
from ..release import Release, State
from ..render import HEADLINES, NEXT_STEP

_DAY_ABBR: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_ABBR: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UTC_KEYS: Final = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"})
_SOURCE_WORDS: Final = {"check_run": "check run", "status": "commit status"}
_SHORT_SHA = re.compile(r"\b[0-9a-f]{7,40}\b")
PER_GROUP: Final = 25  # finished releases shown per group (the newest)
LOG_LINES_SHOWN: Final = 5  # of a running deploy's log, on the dashboard (the release page shows all it has)

# The state's words are the PR comment's (bot.render.HEADLINES) without its emoji: the pages draw their own
# icon (an inline SVG symbol, `#i-<state>`), as emoji fonts are missing on many servers and browsers.
STATE_WORDS: Final = {state: text.split(" ", 1)[1] for state, text in HEADLINES.items()}

CHECK_WORDS: Final = {
    CheckState.SUCCESS: "passed",
    CheckState.NEUTRAL: "neutral (passes)",
    CheckState.SKIPPED: "skipped (passes)",
    CheckState.PENDING: "pending",
    CheckState.FAILURE: "failed",
    CheckState.MISSING: "not reported",
}
CHECK_ICONS: Final = {
    CheckState.SUCCESS: "pass",
    CheckState.NEUTRAL: "pass",
    CheckState.SKIPPED: "pass",
    CheckState.PENDING: "pending",
    CheckState.FAILURE: "fail",
    CheckState.MISSING: "missing",
}


@dataclass(frozen=True, slots=True)
class Group:
    """One section of the dashboard: releases in some states."""

    key: str  # the section's id
    title: str
    icon: str
    releases: tuple[Release, ...]
    more: int = 0  # how many older ones are not shown
    empty: str = "None."


_UPCOMING: Final = (State.REQUESTED, State.VERIFYING, State.SCHEDULED, State.BLOCKED, State.HELD)
_GROUPS: Final = (
    ("upcoming", "Upcoming", "scheduled", _UPCOMING),
    ("in-progress", "In progress", "releasing", (State.RELEASING,)),
    ("released", "Released", "released", (State.RELEASED,)),
    ("failed", "Failed or rolled back", "failed", (State.FAILED, State.ROLLED_BACK)),
    ("cancelled", "Cancelled", "cancelled", (State.CANCELLED,)),
)


def zone_of(release: Release) -> ZoneInfo:
    try:
        return ZoneInfo(release.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _changed(release: Release) -> datetime:
    return release.updated_at or release.requested_at


def group_releases(releases: Iterable[Release], *, per_group: int = PER_GROUP) -> list[Group]:
    """Releases by state: upcoming ones by their slot (unbooked last), running and finished newest first."""
    by_state: dict[State, list[Release]] = {}
    for release in releases:
        by_state.setdefault(release.state, []).append(release)
    far = datetime.max.replace(tzinfo=UTC)
    groups = []
    for key, title, icon, states in _GROUPS:
        members = [r for s in states for r in by_state.get(s, ())]
        if key == "upcoming":
            members.sort(key=lambda r: (r.slot.start if r.slot else far, r.repo.lower(), r.pr))
            shown, more = members, 0
        else:
            members.sort(key=_changed, reverse=True)
            limit = len(members) if key == "in-progress" else per_group
            shown, more = members[:limit], max(0, len(members) - limit)
        empty = "Nothing is booked or waiting." if key == "upcoming" else "None."
        groups.append(Group(key, title, icon, tuple(shown), more, empty))
    return groups


def state_word(state: State) -> str:
    return STATE_WORDS[state]


def short(sha: str | None) -> str:
    return sha[:7] if sha else "—"


def day_label(day: date) -> str:
    return f"{_DAY_ABBR[day.weekday()]} {day.day} {_MONTH_ABBR[day.month - 1]}"


def moment(at: datetime, tz: ZoneInfo) -> str:
    """'Wed 25 Nov 10:02 Europe/Berlin (09:02 UTC)'; just UTC in UTC repos."""
    local = at.astimezone(tz)
    text = f"{day_label(local.date())} {local:%H:%M}"
    if tz.key in _UTC_KEYS:
        return f"{text} UTC"
    utc = at.astimezone(UTC)
    utc_day = "" if utc.date() == local.date() else f"{day_label(utc.date())} "
    return f"{text} {tz.key} ({utc_day}{utc:%H:%M} UTC)"


def moment_iso(text: str, tz: ZoneInfo) -> str:
    """`moment` of an ISO timestamp as the agent session log keeps them (the text itself if it is not one)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    return moment(at if at.tzinfo else at.replace(tzinfo=UTC), tz)


def window_text(release: Release) -> str:
    """The booked slot in the repo's zone and UTC, or why there is none."""
    if release.slot is None:
        return "no slot booked"
    return format_slot(release.slot, zone_of(release))


def step(release: Release) -> str:
    """What is happening now, or what happens next (the live step of a running release)."""
    if release.state is State.RELEASING:
        if release.merge_sha is None:
            return f"Merging the verified commit {short(release.verified_sha)} into {release.base}."
        if release.deploy_target:
            return f"Merged as {short(release.merge_sha)}; deploying with {release.deploy_target}."
        return f"Merged as {short(release.merge_sha)}; finishing."
    if release.state is State.FAILED and release.failure:
        return f"Failed: {release.failure}. {NEXT_STEP[release.state]}"
    return NEXT_STEP[release.state]


def why(release: Release) -> str:
    """The last recorded reason for the release's state."""
    return release.audit[-1].reason if release.audit else ""


def deploy_status(release: Release) -> str | None:
    if not release.deploy_target or not release.merge_sha:
        return None
    done = {State.RELEASED: "done", State.FAILED: "failed", State.ROLLED_BACK: "done, then rolled back"}
    return done.get(release.state, "running")


def link(url: str | None) -> str | None:
    """Only web links leave the page (a status's target_url is whatever the CI sent)."""
    return safe_url(url)


# Checks --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckLine:
    name: str
    state: CheckState
    url: str | None
    detail: str  # GitHub's word, or the source
    required: bool


@dataclass(frozen=True, slots=True)
class Verification:
    """The checks of one commit the release was verified against."""

    sha: str
    role: str  # "head", "verified", "earlier head"
    lines: tuple[CheckLine, ...]
    verdict: str | None  # "green", "pending", "failing" for the release's own verdict; None for a commit's record
    at: datetime | None  # when the record was last synced


def verification_shas(release: Release) -> list[tuple[str, str]]:
    """(sha, role) of each commit the release was verified against: the SHAs its audit trail names, the
    verified one and the head, oldest first."""
    by_prefix = {c.sha[:7]: c.sha for c in release.commits}
    found: list[tuple[str, str]] = []
    for transition in release.audit:
        for match in _SHORT_SHA.findall(transition.reason):
            sha = by_prefix.get(match[:7])
            if sha is not None and sha not in (s for s, _ in found):
                found.append((sha, "earlier head"))
    roles = dict(found)
    if release.verified_sha:
        roles[release.verified_sha] = "verified"
    roles[release.head_sha] = "head" if release.head_sha != release.verified_sha else "head, verified"
    order = [s for s, _ in found]
    for sha in (release.verified_sha, release.head_sha):
        if sha and sha not in order:
            order.append(sha)
    return [(sha, roles[sha]) for sha in order]


def verdict_lines(verdict: ChecksVerdict) -> tuple[CheckLine, ...]:
    return tuple(
        CheckLine(
            item.name,
            item.state,
            link(item.url),
            item.detail or _SOURCE_WORDS.get(item.source or "", ""),
            item.name in verdict.required or not verdict.required,
        )
        for item in verdict.items
    )


def record_lines(record: ShaChecks, required: frozenset[str]) -> tuple[CheckLine, ...]:
    """A commit's check runs and statuses as webhooks recorded them."""
    lines = []
    for run in record.check_runs:
        if run.status != "completed":
            state = CheckState.PENDING
        else:
            state = {
                "success": CheckState.SUCCESS,
                "neutral": CheckState.NEUTRAL,
                "skipped": CheckState.SKIPPED,
            }.get(run.conclusion or "", CheckState.FAILURE)
        detail = run.conclusion or run.status
        lines.append(CheckLine(run.name, state, link(run.details_url), detail, run.name in required))
    for status in record.statuses:
        state = {"success": CheckState.SUCCESS, "pending": CheckState.PENDING}.get(status.state, CheckState.FAILURE)
        lines.append(
            CheckLine(status.context, state, link(status.target_url), status.state, status.context in required)
        )
    return tuple(sorted(lines, key=lambda line: (not line.required, line.name.lower())))


def verifications(release: Release, records: dict[str, ShaChecks]) -> list[Verification]:
    """Each verified commit with its checks: the release's own verdict for the head (what the bot judged),
    and the recorded check runs and statuses for the others."""
    required = release.checks.required if release.checks is not None else frozenset()
    out = []
    for sha, role in verification_shas(release):
        record = records.get(sha)
        if sha == release.head_sha and release.checks is not None:
            out.append(
                Verification(
                    sha, role, verdict_lines(release.checks), release.checks.state, record.synced_at if record else None
                )
            )
        elif record is not None:
            out.append(Verification(sha, role, record_lines(record, required), None, record.synced_at))
        else:
            out.append(Verification(sha, role, (), None, None))
    return out


# The week ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """Something on a day: a release's booking, or busy time from the calendar."""

    start: datetime
    end: datetime
    local: str  # "14:00-14:30", in the repo's zone
    utc: str  # "13:00-13:30 UTC"; empty in UTC repos
    release: Release | None
    summary: str  # for calendar entries
    freeze: bool = False


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    label: str
    windows: tuple[tuple[str, str], ...]  # (local, utc) as in Entry
    freeze: str | None
    entries: tuple[Entry, ...]
    today: bool = False


@dataclass(frozen=True, slots=True)
class RepoWeek:
    repo: str
    zone: str
    windows: str  # "Mon-Thu 10:00-16:00 Europe/Berlin"
    days: tuple[Day, ...]
    feed_url: str | None
    configured: bool  # False: the defaults apply (no valid .github/release-secretary.yml seen)


def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def span(start: datetime, end: datetime, tz: ZoneInfo) -> tuple[str, str]:
    """('14:00-14:30', '13:00-13:30 UTC') for a span in a repo's zone; no UTC part in UTC repos."""
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    local = f"{local_start:%H:%M}-{local_end:%H:%M}"
    if tz.key in _UTC_KEYS:
        return local, ""
    utc_start, utc_end = start.astimezone(UTC), end.astimezone(UTC)
    return local, f"{utc_start:%H:%M}-{utc_end:%H:%M} UTC"


def repo_week(
    repo: str,
    policy: Policy,
    monday: date,
    releases: Sequence[Release],
    events: Sequence[CalendarEvent],
    *,
    today: date | None = None,
    feed_url: str | None = None,
    configured: bool = True,
) -> RepoWeek:
    """One repository's week in its own zone: each day's windows, freeze, bookings and busy time."""
    tz = policy.timezone
    shown = {r.key for r in releases}
    entries: list[Entry] = [
        Entry(r.slot.start, r.slot.end, *span(r.slot.start, r.slot.end, tz), r, "")
        for r in releases
        if r.slot is not None
    ]
    entries += [
        Entry(e.start, e.end, *span(e.start, e.end, tz), None, e.summary, e.priority)
        for e in events
        if not e.cancelled and e.release not in shown
    ]
    entries.sort(key=lambda e: (e.start, e.local))
    days = []
    for offset in range(7):
        day = monday + timedelta(days=offset)
        windows = []
        for window in sorted(policy.windows, key=lambda w: w.start):
            if day.weekday() in window.days:
                start = datetime.combine(day, window.start, tzinfo=tz)
                end = datetime.combine(day, window.end, tzinfo=tz)
                windows.append(span(start, end, tz))
        freeze = in_freeze(day, policy)
        freeze_text = None
        if freeze is not None:
            dates = day_label(freeze.start)
            if freeze.end != freeze.start:
                dates += f" - {day_label(freeze.end)}"
            freeze_text = f"{freeze.reason or 'Release freeze'} ({dates})"
        on_day = tuple(e for e in entries if e.start.astimezone(tz).date() == day)
        days.append(Day(day, day_label(day), tuple(windows), freeze_text, on_day, today == day))
    return RepoWeek(repo, tz.key, describe_windows(policy), tuple(days), feed_url, configured)


def week_bounds(monday: date, zones: Iterable[ZoneInfo]) -> tuple[datetime, datetime]:
    """The UTC range covering that week in every one of the zones (the widest)."""
    starts = [datetime.combine(monday, datetime.min.time(), tzinfo=z) for z in zones] or [
        datetime.combine(monday, datetime.min.time(), tzinfo=UTC)
    ]
    start = min(s.astimezone(UTC) for s in starts)
    end = max(s.astimezone(UTC) for s in starts) + timedelta(days=7)
    return start, end


def overlaps(slot: Slot | None, start: datetime, end: datetime) -> bool:
    return slot is not None and slot.start < end and slot.end > start
