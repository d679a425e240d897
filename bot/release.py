"""The release state machine: `decide(release, event, now) -> Decision`. Pure: no I/O, no clock.

Every input (label, PR comment, push, checks, chat, API, timers) arrives as a typed event carrying
what the adapters observed; every output (sticky comment, check run, replies) leaves as effect data
for the executor. Each rule lives here once, so a PR comment, a Slack button and an API call can
never disagree.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .checks import CheckItem, CheckState, ChecksVerdict, escape_markdown
from .checks import _safe_url as safe_url
from .policy import (
    Busy,
    Policy,
    Slot,
    WhenError,
    describe_windows,
    format_slot,
    next_slot,
    resolve_when,
    slot_problems,
    window_end,
)


class State(enum.StrEnum):
    REQUESTED = "requested"
    VERIFYING = "verifying"
    SCHEDULED = "scheduled"
    RELEASING = "releasing"
    RELEASED = "released"
    BLOCKED = "blocked"
    HELD = "held"
    CANCELLED = "cancelled"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


TERMINAL = frozenset({State.RELEASED, State.CANCELLED, State.FAILED, State.ROLLED_BACK})
# States a release can still be cancelled, held or re-verified from (not once it is releasing).
OPEN = frozenset({State.REQUESTED, State.VERIFYING, State.SCHEDULED, State.BLOCKED, State.HELD})


class Source(enum.StrEnum):
    """Which input an event came from: recorded in the audit trail."""

    LABEL = "github_label"
    COMMENT = "github_comment"
    PUSH = "github_push"
    CHECKS = "github_checks"
    PULL_REQUEST = "github_pull_request"
    SLACK = "slack"
    TELEGRAM = "telegram"
    API = "api"
    MCP = "mcp"
    TIMER = "timer"
    AGENT = "dev_agent"


# GitHub's repository roles, weakest first; `ship_permission` names the weakest allowed.
PERMISSION_ORDER = ("none", "read", "triage", "write", "maintain", "admin")


def permission_reaches(have: str | None, need: str) -> bool:
    if have not in PERMISSION_ORDER:
        return False
    return PERMISSION_ORDER.index(have) >= PERMISSION_ORDER.index(need)


@dataclass(frozen=True, slots=True)
class Actor:
    login: str
    permission: str | None = None  # the login's role on the repo, as GitHub reports it
    is_bot: bool = False


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    message: str


@dataclass(frozen=True, slots=True)
class PullSnapshot:
    """What the bot read of the PR when the event arrived."""

    title: str
    head_sha: str
    base: str
    state: str = "open"  # open | closed
    draft: bool = False
    merged: bool = False
    commits: tuple[Commit, ...] = ()
    author: str = ""
    mergeable: bool | None = None  # GitHub computes it lazily: None means "not known yet"
    head_ref: str = ""  # the PR's branch
    head_repo: str = ""  # where that branch lives (another repository for a fork's PR)


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime
    from_state: State | None
    to_state: State
    actor: str
    reason: str
    source: str
    delivery: str | None = None


@dataclass(frozen=True, slots=True)
class Release:
    repo: str
    pr: int
    number: int  # the nth ship request on this PR
    installation_id: int
    state: State
    title: str
    base: str
    head_sha: str
    requested_by: str
    requested_at: datetime
    slot: Slot | None = None
    when_text: str | None = None
    verified_sha: str | None = None
    checks: ChecksVerdict | None = None
    blockers: tuple[str, ...] = ()
    held_from: State | None = None
    commits: tuple[Commit, ...] = ()
    audit: tuple[Transition, ...] = ()
    updated_at: datetime | None = None
    timezone: str = "UTC"  # the repo's zone when last asked: how times are shown
    check_run_blocks_merge: bool = False
    # Where the slot is booked: one release at a time per lane ("owner/repo production").
    lane: str = ""
    calendar_account: str | None = None  # "embedded", "google:service", "google:user:<login>"
    calendar_id: str | None = None
    event_id: str | None = None  # set once the event exists
    event_link: str | None = None
    # What the calendar or the last check found against the slot (a freeze event, a deleted event).
    conflicts: tuple[str, ...] = ()
    proposal: Slot | None = None  # the next free slot, offered when this one cannot go ahead
    requester_zone: str | None = None  # the requester's own zone, when they have told us
    lead_minutes: int = 15  # the T-minus check runs this long before the slot
    prechecked_for: datetime | None = None  # the slot start the last T-minus check was for
    merge_sha: str | None = None  # the merge commit, once GitHub merged the verified SHA
    released_at: datetime | None = None
    # What runs after the merge: "workflow deploy.yml", "deployment production", or None (the merge is it).
    deploy_target: str | None = None
    deploy_id: str | None = None  # the workflow run or deployment id, once known
    deploy_url: str | None = None  # where its log is
    failure: str | None = None  # the failing step, when it failed
    forced: bool = False  # `/ship now --force`: the windows and freezes do not apply to this slot
    rollback_id: str | None = None  # the rollback workflow run, once `/ship rollback` started one
    rollback_url: str | None = None
    deploy_log: tuple[str, ...] = ()  # the last lines a dev agent's playbook printed
    deploy_log_total: int = 0  # how many lines it printed in all: deploy_log holds the last of them
    # The checks an earlier head of the PR reported, kept across a push: new commits must pass them too.
    expected_checks: tuple[str, ...] = ()
    version: int = 0

    @property
    def key(self) -> str:
        return f"{self.repo}#{self.pr}/{self.number}"

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL


# Events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventBase:
    actor: Actor
    source: Source
    delivery: str | None


@dataclass(frozen=True, slots=True)
class ShipRequested(EventBase):
    """`/ship [WHEN]`, `/ship now`, the label, a chat button or an API call."""

    repo: str
    pr: int
    installation_id: int
    pull: PullSnapshot
    checks: ChecksVerdict
    policy: Policy
    ship_permission: str = "write"
    when_text: str | None = None
    immediately: bool = False  # `/ship now`
    force: bool = False  # `/ship now --force`: windows and freezes waived, for maintain/admin
    dry_run: bool = False
    check_run_blocks_merge: bool = False
    busy: tuple[Busy, ...] = ()  # other releases in the lane, freezes and the requester's meetings
    lane: str = ""
    calendar_account: str | None = None
    calendar_id: str | None = None
    requester_zone: str | None = None
    calendar_link: str | None = None  # where people see the booking (the feed, the Google calendar)
    # "Postpone to the next window": the booked slot's start; the next free slot after the window holding it.
    postpone_from: datetime | None = None


@dataclass(frozen=True, slots=True)
class CancelRequested(EventBase):
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HoldRequested(EventBase):
    ship_permission: str = "write"


@dataclass(frozen=True, slots=True)
class UnholdRequested(EventBase):
    ship_permission: str = "write"


@dataclass(frozen=True, slots=True)
class HeadMoved(EventBase):
    """A push to the PR (`pull_request.synchronize`)."""

    head_sha: str
    pull: PullSnapshot | None = None


@dataclass(frozen=True, slots=True)
class ChecksChanged(EventBase):
    head_sha: str
    checks: ChecksVerdict


@dataclass(frozen=True, slots=True)
class PullClosed(EventBase):
    merged: bool = False


@dataclass(frozen=True, slots=True)
class Prechecked(EventBase):
    """The T-minus check before a slot: what the worker read of the PR, its checks and the calendars."""

    slot_start: datetime  # the slot this check was for: a rescheduled release ignores a stale check
    head_sha: str
    checks: ChecksVerdict
    conflicts: tuple[str, ...] = ()  # freezes and higher-priority events overlapping the slot
    proposal: Slot | None = None  # the next free slot, should this one not go ahead
    late_by: timedelta | None = None  # the timer fired this much after it was due (workers were down)


@dataclass(frozen=True, slots=True)
class EventBooked(EventBase):
    """The calendar event for the release's slot exists (or was brought up to date)."""

    slot_start: datetime
    calendar_account: str
    calendar_id: str
    event_id: str
    event_link: str | None = None


@dataclass(frozen=True, slots=True)
class CalendarChanged(EventBase):
    """A person moved or deleted the release's event in the calendar.

    `moved_to` is the event's new time (None: deleted); `problems` is why the new time cannot be
    used (windows, freezes, other releases), judged by the service against the policy."""

    event_id: str
    moved_to: Slot | None
    problems: tuple[str, ...] = ()
    proposal: Slot | None = None
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class ReleaseDue(EventBase):
    """The slot has come: what the worker read, just now, of the PR, its checks and the calendars."""

    slot_start: datetime
    head_sha: str
    checks: ChecksVerdict
    merge_method: str
    conflicts: tuple[str, ...] = ()
    mergeable: bool | None = None  # GitHub's view; None while it is still computing it
    proposal: Slot | None = None
    late_by: timedelta | None = None
    deploy_target: str | None = None
    new_commits: tuple[Commit, ...] = ()  # since the verified SHA (the compare API), when the head moved
    # The repository's `new_commits` rule: "next_slot", or "wait" this long into the slot for the new
    # head's checks (never past the slot's end).
    new_commits_action: str = "next_slot"
    wait_for: timedelta | None = None


@dataclass(frozen=True, slots=True)
class MergeFinished(EventBase):
    """GitHub's answer to the SHA-pinned merge: merged (with the merge commit), or refused and why."""

    sha: str  # the SHA the merge was pinned to
    merged: bool
    merge_sha: str | None = None
    status: int | None = None  # 405 not mergeable, 409 head moved, 422 ...
    message: str = ""
    summary: str = ""  # what shipped, for the summary comment (built by the service from what it read)


@dataclass(frozen=True, slots=True)
class DeployProgress(EventBase):
    """The deploy target reported: started (`done` False), or finished, well or not."""

    merge_sha: str
    deploy_id: str | None = None
    url: str | None = None
    done: bool = False
    ok: bool = False
    detail: str = ""  # the failing step or the status description
    summary: str = ""
    log: tuple[str, ...] = ()  # a dev agent's latest lines
    log_total: int = 0  # how many lines it has printed in all (the last of them are `log`)


@dataclass(frozen=True, slots=True)
class RollbackProgress(EventBase):
    """`/ship rollback`'s workflow run: started (with its id), or finished."""

    run_id: str
    url: str | None = None
    done: bool = False
    ok: bool = False
    detail: str = ""


Event = (
    ShipRequested
    | CancelRequested
    | HoldRequested
    | UnholdRequested
    | HeadMoved
    | ChecksChanged
    | PullClosed
    | Prechecked
    | EventBooked
    | CalendarChanged
    | ReleaseDue
    | MergeFinished
    | DeployProgress
    | RollbackProgress
)

# Effects --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderProgress:
    """Bring the sticky PR comment and the `Release` check run in line with the release."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A short answer to the person who acted (a PR comment reply, a chat reply)."""

    text: str
    forbidden: bool = False  # a refusal for lack of permission (the API answers it 403)


@dataclass(frozen=True, slots=True)
class Deploy:
    """Start the deploy target on the merge commit."""

    target: str
    merge_sha: str


@dataclass(frozen=True, slots=True)
class Merge:
    """Merge the PR through the API, pinned to `sha` (a moved head gives 409, never a merge)."""

    sha: str
    method: str


Effect = RenderProgress | Reply | Merge | Deploy


@dataclass(frozen=True, slots=True)
class Decision:
    release: Release | None
    effects: tuple[Effect, ...] = ()

    @property
    def changed(self) -> bool:
        return any(isinstance(e, RenderProgress) for e in self.effects)


# Messages -------------------------------------------------------------------------------------

NEED_PERMISSION = (
    "@{login} only people with **{need}** access (or more) to this repository can {what}; "
    "GitHub reports your access as **{have}**."
)
NO_RELEASE = "@{login} there is no release in progress on this PR. Comment `/ship` or `/ship friday` to ask for one."
TOO_LATE = "@{login} the release is already {state}; it can no longer be {what}."
BAD_TIME = "@{login} I can't schedule `{text}`: {reason}"
PR_NOT_OPEN = "@{login} this PR is {state}: only open pull requests can be shipped."
PR_DRAFT = "@{login} this PR is a draft: mark it ready for review first."


def _slot_sentence(slot: Slot, policy: Policy) -> str:
    return str(format_slot(slot, policy.timezone))


def _note(release: Release, event: EventBase, to: State, reason: str, now: datetime) -> Release:
    transition = Transition(
        at=now,
        from_state=release.state if release.audit else None,
        to_state=to,
        actor=event.actor.login,
        reason=reason,
        source=event.source.value,
        delivery=event.delivery,
    )
    return replace(release, state=to, audit=(*release.audit, transition), updated_at=now)


def _evaluate(release: Release, event: EventBase, now: datetime, why: str) -> Release:
    """Place an open release according to its checks and its slot: scheduled only when the head SHA
    is green and nothing stands against the slot."""
    checks = release.checks
    blockers: tuple[str, ...]
    if release.conflicts or release.slot is None:
        # The checks decide nothing while the slot itself cannot go ahead; they are still shown.
        blockers = release.conflicts or ("no release slot is booked",)
        verified = release.head_sha if checks is not None and checks.state == "green" else None
        updated = replace(release, verified_sha=verified, blockers=blockers)
        if updated.state == State.BLOCKED:
            return updated
        return _note(updated, event, State.BLOCKED, f"{why}; {blockers[0]}", now)
    if checks is None or checks.state == "pending":
        waiting = [*checks.pending, *checks.missing] if checks else []
        blockers = (f"waiting for {', '.join(waiting)}",) if waiting else ("waiting for checks",)
        target, verified = State.VERIFYING, None
        reason = f"{why}; waiting for required checks on {release.head_sha[:7]}"
    elif checks.state == "failing":
        blockers = tuple(f"{name} is failing" for name in checks.failing)
        target, verified = State.BLOCKED, None
        reason = f"{why}; required checks failing: {', '.join(checks.failing)}"
    else:
        blockers = ()
        target, verified = State.SCHEDULED, release.head_sha
        reason = f"{why}; checks green on {release.head_sha[:7]}"
    updated = replace(release, verified_sha=verified, blockers=blockers)
    if updated.state == target:
        return updated  # the audit trail records changes of state, not every new check result
    return _note(updated, event, target, reason, now)


def _refuse_permission(event: EventBase, need: str, what: str) -> Decision | None:
    if permission_reaches(event.actor.permission, need):
        return None
    text = NEED_PERMISSION.format(login=event.actor.login, need=need, what=what, have=event.actor.permission or "none")
    return Decision(None, (Reply(text, forbidden=True),))


def plan_slot(event: ShipRequested, now: datetime) -> Slot | WhenError:
    if event.immediately and event.force:
        # Windows and freezes are waived (the audit trail says who did it); another release is not.
        end = now + event.policy.slot
        taken = next((b for b in event.busy if b.blocks and b.start < end and now < b.end), None)
        if taken is not None:
            return WhenError(text="now --force", reason=f"now overlaps {taken.reason}", suggestion=None, examples=())
        return Slot(start=now, end=end)
    if event.immediately:
        start = now
        # "Now" means now: the lead time, there to give people notice, is waived; windows and freezes are not.
        problems = slot_problems(start, replace(event.policy, lead_time=timedelta(0)), now, busy=event.busy)
        if problems:
            return WhenError(
                text="now",
                reason="; ".join(problems),
                suggestion=None,
                examples=(),
            )
        return Slot(start=start, end=start + event.policy.slot)
    if event.postpone_from is not None:
        after = max(window_end(event.postpone_from, event.policy), now + event.policy.lead_time)
        slot = next_slot(after, event.policy, busy=event.busy)
        if slot is None:
            reason = f"there is no free release slot after {after:%a %d %b %H:%M} UTC in the search horizon"
            return WhenError(text="postpone", reason=reason, suggestion=None, examples=())
        return slot
    return resolve_when(event.when_text, now=now, policy=event.policy, busy=event.busy)


def decide(release: Release | None, event: Event, now: datetime) -> Decision:
    """The next state of the PR's active release (None: no release) and what to do about it."""
    if _seen(release, event):
        # A retried delivery (the worker failed after saving) must not apply a command twice; its
        # effects may not have been queued before the failure, so the progress is rendered again.
        return Decision(release, (RenderProgress(),))
    match event:
        case ShipRequested():
            return _ship(release, event, now)
        case CancelRequested():
            return _cancel(release, event, now)
        case HoldRequested():
            return _hold(release, event, now)
        case UnholdRequested():
            return _unhold(release, event, now)
        case HeadMoved():
            return _head_moved(release, event, now)
        case ChecksChanged():
            return _checks_changed(release, event, now)
        case PullClosed():
            return _closed(release, event, now)
        case Prechecked():
            return _prechecked(release, event, now)
        case EventBooked():
            return _booked(release, event)
        case CalendarChanged():
            return _calendar_changed(release, event, now)
        case ReleaseDue():
            return _release_due(release, event, now)
        case MergeFinished():
            return _merge_finished(release, event, now)
        case DeployProgress():
            return _deploy_progress(release, event, now)
        case RollbackProgress():
            return _rollback_progress(release, event, now)


def _seen(release: Release | None, event: Event) -> bool:
    commands = (ShipRequested, CancelRequested, HoldRequested, UnholdRequested)
    if release is None or event.delivery is None or not isinstance(event, commands):
        return False
    return any(t.delivery == event.delivery for t in release.audit)


def _ship(release: Release | None, event: ShipRequested, now: datetime) -> Decision:
    login = event.actor.login
    refused = _refuse_permission(event, event.ship_permission, "ship it")
    if refused:
        return Decision(release, refused.effects)
    if event.pull.state != "open" or event.pull.merged:
        state = "merged" if event.pull.merged else "closed"
        return Decision(release, (Reply(PR_NOT_OPEN.format(login=login, state=state)),))
    if event.pull.draft:
        return Decision(release, (Reply(PR_DRAFT.format(login=login)),))
    if release is not None and release.state == State.RELEASING:
        return Decision(release, (Reply(TOO_LATE.format(login=login, state="releasing", what="rescheduled")),))
    if event.force and not permission_reaches(event.actor.permission, "maintain"):
        text = NEED_PERMISSION.format(
            login=login, need="maintain", what="force a release", have=event.actor.permission or "none"
        )
        return Decision(release, (Reply(text),))
    slot = plan_slot(event, now)
    if isinstance(slot, WhenError):
        reason = slot.reason
        if slot.suggestion is not None:
            local = slot.suggestion.start.astimezone(event.policy.timezone)
            reason += (
                f". The next free slot is {_slot_sentence(slot.suggestion, event.policy)}:"
                f" `/ship {local:%Y-%m-%d %H:%M}`"
            )
        text = event.when_text or "now"
        return Decision(release, (Reply(BAD_TIME.format(login=login, text=text, reason=reason)),))
    if event.dry_run:
        return Decision(release, (Reply(dry_run_text(event, slot)),))

    if release is None or not release.active:
        number = 1 if release is None else release.number + 1
        fresh = Release(
            repo=event.repo,
            pr=event.pr,
            number=number,
            installation_id=event.installation_id,
            state=State.REQUESTED,
            title=event.pull.title,
            base=event.pull.base,
            head_sha=event.pull.head_sha,
            requested_by=login,
            requested_at=now,
            slot=slot,
            when_text=event.when_text,
            checks=event.checks,
            commits=event.pull.commits,
            timezone=event.policy.timezone.key,
            check_run_blocks_merge=event.check_run_blocks_merge,
            lane=event.lane,
            calendar_account=event.calendar_account,
            calendar_id=event.calendar_id,
            requester_zone=event.requester_zone,
            lead_minutes=event.policy.lead_time // timedelta(minutes=1),
            forced=event.force,
        )
        forced = f", forced by {login} ({event.actor.permission}) outside the windows" if event.force else ""
        requested = _note(
            fresh, event, State.REQUESTED, f"ship requested for {_slot_sentence(slot, event.policy)}{forced}", now
        )
        placed = _evaluate(requested, event, now, "requested")
        return Decision(placed, (RenderProgress(), *_booked_reply(event, placed)))

    # An open release asked again: reschedule, keep the audit trail; a hold stays a hold.
    moved = replace(
        release,
        slot=slot,
        when_text=event.when_text,
        title=event.pull.title,
        checks=event.checks,  # evaluated just now, for the PR's current head
        commits=event.pull.commits or release.commits,
        timezone=event.policy.timezone.key,
        check_run_blocks_merge=event.check_run_blocks_merge,
        # A new slot was checked against the calendars just now: old conflicts and offers are void.
        conflicts=(),
        proposal=None,
        prechecked_for=None,
        forced=event.force,
        requester_zone=event.requester_zone or release.requester_zone,
        lead_minutes=event.policy.lead_time // timedelta(minutes=1),
        lane=release.lane or event.lane,
        calendar_account=release.calendar_account if release.event_id else event.calendar_account,
        calendar_id=release.calendar_id if release.event_id else event.calendar_id,
    )
    if event.pull.head_sha != release.head_sha:
        moved = replace(moved, head_sha=event.pull.head_sha, verified_sha=None)
    why = f"rescheduled by {login} to {_slot_sentence(slot, event.policy)}"
    if event.force:
        why += f", forced ({event.actor.permission}) outside the windows"
    if release.state == State.HELD:
        held = _note(moved, event, State.HELD, why, now)
        return Decision(held, (RenderProgress(), *_booked_reply(event, held)))
    noted = _note(moved, event, release.state, why, now)
    placed = _evaluate(noted, event, now, "rescheduled")
    return Decision(placed, (RenderProgress(), *_booked_reply(event, placed)))


def _booked_reply(event: ShipRequested, release: Release) -> tuple[Reply, ...]:
    """The answer to a person's `/ship`: the slot in the repo's zone, UTC and their own zone, and
    where to see it. A label gets none: the progress comment is its answer."""
    if event.source == Source.LABEL or release.slot is None:
        return ()
    tz = event.policy.timezone
    text = f"@{event.actor.login} booked **{format_slot(release.slot, tz)}**"
    if release.requester_zone and release.requester_zone != tz.key:
        mine = release.slot.start.astimezone(ZoneInfo(release.requester_zone))
        text += f", {mine:%a %d %b %H:%M} your time ({release.requester_zone})"
    if event.calendar_link and event.calendar_link.startswith(("https://", "http://")):
        text += f" · [calendar]({event.calendar_link.replace(')', '%29')})"
    match release.state:
        case State.SCHEDULED:
            text += ". The required checks are green: it goes ahead then, after a last check."
        case State.VERIFYING:
            text += ". It goes ahead once the required checks pass on the head commit."
        case State.BLOCKED:
            text += f". Blocked for now: {escape_markdown('; '.join(release.blockers))}."
        case State.HELD:
            text += ". It stays on hold until `/ship unhold`."
    return (Reply(text + " The progress comment above follows it."),)


def dry_run_text(event: ShipRequested, slot: Slot) -> str:
    checks = ChecksVerdict(
        state=event.checks.state,
        items=tuple(replace(i, name=escape_markdown(i.name)) for i in event.checks.items),
        required=event.checks.required,
    )
    author = f"@{event.pull.author}" if event.pull.author else "the PR's author"
    if checks.state == "green":
        gate = "Required checks are green, so it would be **scheduled**. Nobody needs to act."
    elif checks.state == "failing":
        gate = f"It would be **blocked**: {', '.join(checks.failing)} failing; {author} must fix that first."
    else:
        waiting = ", ".join([*checks.pending, *checks.missing]) or "checks"
        gate = f"It would wait (**verifying**) for {waiting}; CI must finish (or {author} push a fix)."
    return (
        f"@{event.actor.login} dry run, nothing booked: `/ship {event.when_text or ''}`".rstrip()
        + f" would release {event.pull.head_sha[:7]} at **{_slot_sentence(slot, event.policy)}**. {gate}"
        + f" Windows: {describe_windows(event.policy)}."
    )


def _cancel(release: Release | None, event: CancelRequested, now: datetime) -> Decision:
    login = event.actor.login
    if release is None or not release.active:
        if event.source == Source.LABEL:
            return Decision(release)  # a label removed from a PR with nothing to cancel: fine
        return Decision(release, (Reply(NO_RELEASE.format(login=login)),))
    if event.source != Source.PULL_REQUEST:
        refused = _refuse_permission(event, "triage", "cancel a release")
        if refused:
            return Decision(release, refused.effects)
    if release.state not in OPEN:
        return Decision(release, (Reply(TOO_LATE.format(login=login, state=release.state.value, what="cancelled")),))
    reason = event.reason or f"cancelled by {login}"
    return Decision(_note(release, event, State.CANCELLED, reason, now), (RenderProgress(),))


def _hold(release: Release | None, event: HoldRequested, now: datetime) -> Decision:
    login = event.actor.login
    if release is None or not release.active:
        return Decision(release, (Reply(NO_RELEASE.format(login=login)),))
    refused = _refuse_permission(event, event.ship_permission, "hold a release")
    if refused:
        return Decision(release, refused.effects)
    if release.state == State.HELD:
        return Decision(release, (Reply(f"@{login} the release is already on hold; `/ship unhold` resumes it."),))
    if release.state not in OPEN:
        return Decision(release, (Reply(TOO_LATE.format(login=login, state=release.state.value, what="held")),))
    held = replace(release, held_from=release.state)
    return Decision(_note(held, event, State.HELD, f"held by {login}", now), (RenderProgress(),))


def _unhold(release: Release | None, event: UnholdRequested, now: datetime) -> Decision:
    login = event.actor.login
    if release is None or release.state != State.HELD:
        return Decision(release, (Reply(f"@{login} the release is not on hold."),))
    refused = _refuse_permission(event, event.ship_permission, "resume a release")
    if refused:
        return Decision(release, refused.effects)
    # Look at the slot again before it starts: whatever a check found while held may have changed.
    resumed = replace(release, held_from=None, prechecked_for=None)
    return Decision(_evaluate(resumed, event, now, f"resumed by {login}"), (RenderProgress(),))


def _head_moved(release: Release | None, event: HeadMoved, now: datetime) -> Decision:
    if release is None or release.state not in OPEN or event.head_sha == release.head_sha:
        return Decision(release)
    seen = tuple(sorted({item.name for item in release.checks.items})) if release.checks else ()
    moved = replace(
        release,
        head_sha=event.head_sha,
        verified_sha=None,
        checks=None,
        expected_checks=seen or release.expected_checks,
        commits=event.pull.commits if event.pull and event.pull.commits else release.commits,
        title=event.pull.title if event.pull else release.title,
    )
    why = f"new push {event.head_sha[:7]}: the slot is kept, the checks must pass again"
    if release.state == State.HELD:
        return Decision(_note(moved, event, State.HELD, why, now), (RenderProgress(),))
    blockers = ("waiting for checks on the new push",)
    return Decision(_note(replace(moved, blockers=blockers), event, State.VERIFYING, why, now), (RenderProgress(),))


def _checks_changed(release: Release | None, event: ChecksChanged, now: datetime) -> Decision:
    if release is None or release.state not in OPEN or event.head_sha != release.head_sha:
        return Decision(release)
    updated = replace(release, checks=event.checks)
    if release.state == State.HELD:
        return Decision(updated, (RenderProgress(),) if updated.checks != release.checks else ())
    evaluated = _evaluate(updated, event, now, "checks changed")
    changed = evaluated.checks != release.checks or evaluated.state != release.state
    return Decision(evaluated, (RenderProgress(),) if changed else ())


def _closed(release: Release | None, event: PullClosed, now: datetime) -> Decision:
    if release is None or release.state not in OPEN:
        return Decision(release)
    reason = "the PR was merged outside the release" if event.merged else "the PR was closed"
    return Decision(_note(release, event, State.CANCELLED, reason, now), (RenderProgress(),))


def _prechecked(release: Release | None, event: Prechecked, now: datetime) -> Decision:
    if (
        release is None
        or release.state not in OPEN
        or release.state == State.HELD
        or release.slot is None
        or release.slot.start != event.slot_start
    ):
        return Decision(release)  # cancelled, held or rescheduled since the timer was set: nothing to check
    tz_name = release.timezone
    late = ""
    if event.late_by is not None and event.late_by >= timedelta(minutes=1):
        late = f" (late by {_minutes_text(event.late_by)}: the workers were down when it was due)"
    checked = replace(
        release,
        checks=event.checks,
        conflicts=event.conflicts,
        proposal=event.proposal,
        prechecked_for=event.slot_start,
    )
    if event.head_sha != release.head_sha:
        checked = replace(checked, head_sha=event.head_sha, verified_sha=None)
    evaluated = _evaluate(checked, event, now, f"pre-release check{late}")
    if evaluated.state == State.SCHEDULED:
        passed = _note(
            replace(evaluated, proposal=None), event, State.SCHEDULED, f"pre-release check passed{late}", now
        )
        return Decision(passed, (RenderProgress(),))
    problems = list(evaluated.blockers)
    if event.head_sha != (release.verified_sha or release.head_sha):
        problems.insert(0, f"the head moved to {event.head_sha[:7]} since {release.head_sha[:7]} was verified")
    slot_text = format_slot(release.slot, ZoneInfo(tz_name))
    text = f"@{release.requested_by} the release at **{slot_text}** can't go ahead as things stand{late}:\n"
    text += "".join(f"- {escape_text(p)}\n" for p in problems)
    if event.proposal is not None:
        local = event.proposal.start.astimezone(ZoneInfo(tz_name))
        text += (
            f"\nThe next free slot is **{format_slot(event.proposal, ZoneInfo(tz_name))}**: comment "
            f"`/ship {local:%Y-%m-%d %H:%M}` to take it, or fix the above and the release keeps its slot."
        )
    else:
        text += "\nFix the above and the release keeps its slot, or `/ship cancel`."
    return Decision(replace(evaluated, blockers=tuple(problems)), (RenderProgress(), Reply(text)))


def _booked(release: Release | None, event: EventBooked) -> Decision:
    if release is None or release.slot is None or release.slot.start != event.slot_start:
        return Decision(release)
    booked = replace(
        release,
        calendar_account=event.calendar_account,
        calendar_id=event.calendar_id,
        event_id=event.event_id,
        event_link=event.event_link,
    )
    if booked == release:
        return Decision(release)
    return Decision(booked, (RenderProgress(),))


def _calendar_changed(release: Release | None, event: CalendarChanged, now: datetime) -> Decision:
    if release is None or release.state not in OPEN or release.event_id != event.event_id:
        return Decision(release)
    tz = ZoneInfo(event.timezone)
    who = f"@{release.requested_by}"
    offer = ""
    if event.proposal is not None:
        local = event.proposal.start.astimezone(tz)
        offer = f" The next free slot is **{format_slot(event.proposal, tz)}**: `/ship {local:%Y-%m-%d %H:%M}`."
    if event.moved_to is None:
        lost = replace(release, slot=None, event_id=None, conflicts=(), proposal=event.proposal)
        why = "the calendar event was deleted; `/ship <when>` books a slot again"
        noted = _note(lost, event, State.HELD if release.state == State.HELD else release.state, why, now)
        text = (
            f"{who} someone deleted this release's calendar event, so it has no slot now and will not go "
            f"ahead. Comment `/ship <when>` to book again, or `/ship cancel`.{offer}"
        )
        decided = noted if release.state == State.HELD else _evaluate(noted, event, now, "calendar event deleted")
        return Decision(decided, (RenderProgress(), Reply(text)))
    moved_text = format_slot(event.moved_to, tz)
    if event.problems:
        conflicts = (f"the calendar event was moved to {moved_text}, but {event.problems[0]}",)
        blocked = replace(
            release, conflicts=conflicts, proposal=event.proposal, slot=event.moved_to, prechecked_for=None
        )
        text = (
            f"{who} the release's calendar event was moved to **{moved_text}**, which can't be used: "
            f"{escape_text('; '.join(event.problems))}. The release will not go ahead until it gets a "
            f"usable slot.{offer}"
        )
        if release.state == State.HELD:  # a hold stays a hold; the conflict waits for the unhold
            decided = _note(blocked, event, State.HELD, f"calendar event moved to {moved_text}", now)
        else:
            decided = _evaluate(blocked, event, now, "calendar event moved")
        return Decision(decided, (RenderProgress(), Reply(text)))
    followed = replace(release, slot=event.moved_to, conflicts=(), proposal=None, prechecked_for=None)
    noted = _note(followed, event, release.state, f"moved in the calendar to {moved_text}", now)
    text = f"{who} the release's calendar event was moved to **{moved_text}**; the release follows it."
    decided = noted if release.state == State.HELD else _evaluate(noted, event, now, "calendar event moved")
    return Decision(decided, (RenderProgress(), Reply(text)))


# A release timer that runs this long after its slot ended (the workers were down) does not release.
LATE_GRACE = timedelta(minutes=15)


def missed_slot(release: Release, now: datetime) -> bool:
    """The slot ended (and its grace) before the release could run in it: too late to release now."""
    return release.slot is not None and now > release.slot.end + LATE_GRACE


def _release_due(release: Release | None, event: ReleaseDue, now: datetime) -> Decision:
    """At the slot: merge the verified SHA if everything still holds; otherwise block and say why."""
    if release is None or release.slot is None or release.slot.start != event.slot_start:
        return Decision(release)  # rescheduled or cancelled since the timer was set
    if release.state not in (State.SCHEDULED, State.BLOCKED, State.VERIFYING):
        return Decision(release)  # held, already releasing, or finished
    tz = ZoneInfo(release.timezone)
    late = ""
    # Late only on the first look at this slot: the rechecks of a wait are not the workers being down.
    looked = any(t.at >= release.slot.start and t.reason.startswith("release time") for t in release.audit)
    if event.late_by is not None and event.late_by >= timedelta(minutes=1) and not looked:
        late = f" (late by {_minutes_text(event.late_by)}: the workers were down at the slot)"
    wait_until = min(release.slot.start + event.wait_for, release.slot.end) if event.wait_for else None
    checked = replace(release, checks=event.checks, conflicts=event.conflicts, proposal=event.proposal)
    if event.head_sha != release.head_sha:
        checked = replace(checked, head_sha=event.head_sha, verified_sha=None)
    evaluated = _evaluate(checked, event, now, f"release time{late}")
    problems = list(evaluated.blockers) if evaluated.state != State.SCHEDULED else []
    accepted, moved = "", ""
    if event.head_sha != (release.verified_sha or release.head_sha):
        moved = f"the head moved to {event.head_sha[:7]} since {release.head_sha[:7]} was verified"
        if event.new_commits:
            shown = "; ".join(f"{c.sha[:7]} {c.message}" for c in event.new_commits[:5])
            more = f" and {len(event.new_commits) - 5} more" if len(event.new_commits) > 5 else ""
            noun = "commit" if len(event.new_commits) == 1 else "commits"
            moved += f" ({len(event.new_commits)} new {noun}: {shown}{more})"
    waits = event.new_commits_action == "wait"
    if waits and evaluated.state == State.VERIFYING and wait_until is not None and now < wait_until:
        return _wait_for_checks(release, evaluated, event, moved, late, wait_until, now)
    if moved and not waits:
        problems.insert(0, f"{moved}; the repository moves such a release to a new slot (new_commits: next_slot)")
    elif moved and evaluated.state == State.SCHEDULED:
        accepted = f"; {moved}, whose checks passed (new_commits: wait)"
    elif waits and evaluated.state != State.SCHEDULED and (moved or waiting_for_checks(release)):
        what = moved or f"new commits ({event.head_sha[:7]})"
        how = "are failing" if evaluated.state == State.BLOCKED and evaluated.checks else "did not pass in time"
        until = f" until {wait_until.astimezone(tz):%H:%M}" if wait_until else ""
        problems.insert(0, f"{what}: the bot waited{until} for their checks, which {how} (new_commits: wait)")
    if missed_slot(release, now):
        minutes = int((now - release.slot.end).total_seconds() // 60)
        problems.insert(
            0,
            f"the slot ended {minutes} min ago while the bot was down; it does not release outside the time "
            "it announced",
        )
    if not problems and event.mergeable is False:
        problems.append("GitHub reports the pull request cannot be merged (conflicts, or a rule it does not meet)")
    if problems:
        blocked = evaluated if evaluated.state == State.BLOCKED else replace(evaluated, conflicts=tuple(problems))
        # Said once per slot: a second look after this one blocked it (a retried job) says nothing new.
        said = release.state == State.BLOCKED and release.audit and release.audit[-1].reason.startswith("release time")
        if blocked.state != State.BLOCKED:
            blocked = _note(blocked, event, State.BLOCKED, f"release time{late}; {problems[0]}", now)
        if said:
            return Decision(replace(blocked, blockers=tuple(problems)), (RenderProgress(),))
        text = f"@{release.requested_by} the release at **{format_slot(release.slot, tz)}** did not go ahead{late}:\n"
        text += "".join(f"- {escape_text(p)}\n" for p in problems)
        if event.proposal is not None:
            local = event.proposal.start.astimezone(tz)
            text += (
                f"\nThe next free slot is **{format_slot(event.proposal, tz)}**: comment "
                f"`/ship {local:%Y-%m-%d %H:%M}` to take it."
            )
        return Decision(replace(blocked, blockers=tuple(problems)), (RenderProgress(), Reply(text)))
    sha = evaluated.verified_sha or evaluated.head_sha
    evaluated = replace(evaluated, deploy_target=event.deploy_target, deploy_id=None, deploy_url=None, failure=None)
    reason = f"merging {sha[:7]} ({event.merge_method}){late}{accepted}"
    releasing = _note(evaluated, event, State.RELEASING, reason, now)
    return Decision(releasing, (RenderProgress(), Merge(sha=sha, method=event.merge_method)))


def expected_checks(release: Release, head_sha: str) -> frozenset[str]:
    """The checks an earlier head of the PR reported, which new commits (`head_sha`) must pass too: a
    head whose checks have not started is not "green because nothing is required"."""
    names = set(release.expected_checks)
    if release.checks and head_sha != release.head_sha:
        names |= {item.name for item in release.checks.items}
    return frozenset(names)


def waiting_for_checks(release: Release) -> bool:
    """At its slot, the release is waiting for the checks of new commits (the `new_commits: wait` rule)."""
    return release.state == State.VERIFYING and bool(release.audit) and release.audit[-1].reason.endswith(_WAIT_RULE)


_WAIT_RULE = "(new_commits: wait)"


def _wait_for_checks(
    release: Release,
    evaluated: Release,
    event: ReleaseDue,
    moved: str,
    late: str,
    wait_until: datetime,
    now: datetime,
) -> Decision:
    """At the slot, the required checks of new commits are still running and the repository says wait:
    the release stays in its slot, VERIFYING, until they pass (then the next look merges) or the wait
    is over. Said once per head."""
    assert release.slot is not None
    tz = ZoneInfo(release.timezone)
    until = wait_until.astimezone(tz)
    what = moved or f"the required checks of {event.head_sha[:7]} are still running"
    waiting = f"{what}; waiting for the checks until {until:%H:%M} {_WAIT_RULE}"
    # One audit entry for the wait (not the evaluation's "waiting for required checks" as well).
    updated = replace(evaluated, state=release.state, audit=release.audit, blockers=(waiting, *evaluated.blockers))
    if waiting_for_checks(release) and release.head_sha == event.head_sha:
        updated = replace(updated, state=State.VERIFYING)
        return Decision(updated, (RenderProgress(),) if updated != release else ())
    updated = _note(updated, event, State.VERIFYING, f"release time{late}; {waiting}", now)
    slot = format_slot(release.slot, tz)
    text = (
        f"@{release.requested_by} the release at **{slot}** waits{late}: {escape_text(what)}. It releases "
        f"{event.head_sha[:7]} when its required checks pass, until {until:%H:%M}; after that, it moves to the "
        "next free slot."
    )
    return Decision(updated, (RenderProgress(), Reply(text)))


def _merge_finished(release: Release | None, event: MergeFinished, now: datetime) -> Decision:
    if release is None or release.state != State.RELEASING:
        return Decision(release)
    if release.merge_sha is not None:
        return Decision(release)  # merged already: a late answer of a retried request changes nothing
    if event.merged:
        why = f"merged {event.sha[:7]} as {(event.merge_sha or '')[:7]}"
        merged = replace(release, merge_sha=event.merge_sha, blockers=(), proposal=None)
        if release.deploy_target and event.merge_sha:
            deploying = _note(merged, event, State.RELEASING, f"{why}; deploying with {release.deploy_target}", now)
            return Decision(deploying, (RenderProgress(), Deploy(release.deploy_target, event.merge_sha)))
        released = _note(replace(merged, released_at=now), event, State.RELEASED, why, now)
        return Decision(released, (RenderProgress(), *((Reply(event.summary),) if event.summary else ())))
    if event.status == 409:
        reason = f"GitHub refused the merge: the head moved after {event.sha[:7]} was verified (409)"
    elif event.status is None:
        reason = f"the merge could not be sent: {event.message}"
    else:
        detail = event.message.splitlines()[0] if event.message else ""
        reason = f"GitHub refused the merge ({event.status}): {detail}".rstrip(": ")
    # Kept as GitHub said it; escaped where it is shown (the progress comment, the replies).
    blocked = replace(release, blockers=(reason,), conflicts=(reason,))
    noted = _note(blocked, event, State.BLOCKED, reason, now)
    text = (
        f"@{release.requested_by} the release was not merged: {escape_text(reason)}. Nothing was retried: fix "
        "it and comment `/ship` with a new time, or `/ship cancel`."
    )
    return Decision(noted, (RenderProgress(), Reply(text)))


def _deploy_progress(release: Release | None, event: DeployProgress, now: datetime) -> Decision:
    if release is None or release.state != State.RELEASING:
        return Decision(release)
    # merge_sha "": lines of a dev agent that merges itself (deploy.merge_by: agent), before the merge.
    merging = event.merge_sha == "" and release.merge_sha is None and not event.done
    if release.merge_sha != event.merge_sha and not merging:
        return Decision(release)
    tracked = replace(
        release,
        deploy_id=event.deploy_id or release.deploy_id,
        deploy_url=event.url or release.deploy_url,
        deploy_log=event.log or release.deploy_log,
        deploy_log_total=max(event.log_total, len(event.log)) if event.log else release.deploy_log_total,
    )
    if not event.done:
        if tracked == release:
            return Decision(release)
        return Decision(tracked, (RenderProgress(),))
    if event.ok:
        released = _note(replace(tracked, released_at=now), event, State.RELEASED, "deployed", now)
        return Decision(released, (RenderProgress(), *((Reply(event.summary),) if event.summary else ())))
    detail = event.detail or "the deploy did not succeed"
    failed = _note(replace(tracked, failure=detail), event, State.FAILED, f"deploy failed: {detail}", now)
    url = safe_url(tracked.deploy_url)
    log = f" Its log: {url}" if url else ""
    text = (
        f"@{release.requested_by} the release of {(release.merge_sha or '')[:7]} was merged but its deploy "
        f"({escape_text(release.deploy_target or '')}) failed: {escape_text(detail)}.{log} The merge stays: "
        "comment `/ship rollback` to run the repository's rollback, or deploy again by hand."
    )
    return Decision(failed, (RenderProgress(), Reply(text)))


def _rollback_progress(release: Release | None, event: RollbackProgress, now: datetime) -> Decision:
    if release is None or release.state not in (State.RELEASED, State.FAILED):
        return Decision(release)
    if not event.done:
        if release.rollback_id == event.run_id:
            return Decision(release)
        started = replace(release, rollback_id=event.run_id, rollback_url=event.url)
        return Decision(
            _note(started, event, release.state, f"rollback started by {event.actor.login}", now), (RenderProgress(),)
        )
    if release.rollback_id != event.run_id:
        return Decision(release)
    url = safe_url(event.url or release.rollback_url)
    log = f" Its log: {url}" if url else ""
    if event.ok:
        rolled = _note(release, event, State.ROLLED_BACK, "the rollback workflow succeeded", now)
        text = f"@{release.requested_by} the release of {(release.merge_sha or '')[:7]} was rolled back.{log}"
        return Decision(rolled, (RenderProgress(), Reply(text)))
    detail = event.detail or "the rollback workflow did not succeed"
    text = f"@{release.requested_by} the rollback failed: {escape_text(detail)}.{log} Someone needs to look at it."
    return Decision(
        _note(release, event, release.state, f"rollback failed: {detail}", now), (RenderProgress(), Reply(text))
    )


def escape_text(text: str) -> str:
    return escape_markdown(text)


def _minutes_text(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"


# Serialization (the store keeps releases as JSON documents) -----------------------------------


def verdict_to_doc(verdict: ChecksVerdict) -> dict[str, Any]:
    return {
        "state": verdict.state,
        "required": sorted(verdict.required),
        "items": [
            {
                "name": i.name,
                "state": i.state.value,
                "source": i.source,
                "url": i.url,
                "summary": i.summary,
                "detail": i.detail,
            }
            for i in verdict.items
        ],
    }


def verdict_from_doc(doc: dict[str, Any]) -> ChecksVerdict:
    return ChecksVerdict(
        state=doc["state"],
        required=frozenset(doc.get("required", ())),
        items=tuple(
            CheckItem(
                name=i["name"],
                state=CheckState(i["state"]),
                source=i.get("source"),
                url=i.get("url"),
                summary=i.get("summary"),
                detail=i.get("detail"),
            )
            for i in doc.get("items", ())
        ),
    )


def parse_release_key(key: str) -> tuple[str, int, int]:
    """`owner/repo#7/1` -> ("owner/repo", 7, 1), the inverse of Release.key."""
    repo, _, rest = key.rpartition("#")
    pr, _, number = rest.partition("/")
    return repo, int(pr), int(number)


def release_to_doc(release: Release) -> dict[str, Any]:
    return {
        "repo": release.repo,
        "pr": release.pr,
        "number": release.number,
        "installation_id": release.installation_id,
        "state": release.state.value,
        "title": release.title,
        "base": release.base,
        "head_sha": release.head_sha,
        "requested_by": release.requested_by,
        "requested_at": release.requested_at.isoformat(),
        "slot": [release.slot.start.isoformat(), release.slot.end.isoformat()] if release.slot else None,
        "when_text": release.when_text,
        "verified_sha": release.verified_sha,
        "checks": verdict_to_doc(release.checks) if release.checks else None,
        "blockers": list(release.blockers),
        "held_from": release.held_from.value if release.held_from else None,
        "commits": [[c.sha, c.message] for c in release.commits],
        "audit": [
            {
                "at": t.at.isoformat(),
                "from": t.from_state.value if t.from_state else None,
                "to": t.to_state.value,
                "actor": t.actor,
                "reason": t.reason,
                "source": t.source,
                "delivery": t.delivery,
            }
            for t in release.audit
        ],
        "updated_at": release.updated_at.isoformat() if release.updated_at else None,
        "timezone": release.timezone,
        "check_run_blocks_merge": release.check_run_blocks_merge,
        "lane": release.lane,
        "calendar_account": release.calendar_account,
        "calendar_id": release.calendar_id,
        "event_id": release.event_id,
        "event_link": release.event_link,
        "conflicts": list(release.conflicts),
        "proposal": [release.proposal.start.isoformat(), release.proposal.end.isoformat()]
        if release.proposal
        else None,
        "requester_zone": release.requester_zone,
        "lead_minutes": release.lead_minutes,
        "prechecked_for": release.prechecked_for.isoformat() if release.prechecked_for else None,
        "merge_sha": release.merge_sha,
        "released_at": release.released_at.isoformat() if release.released_at else None,
        "deploy_target": release.deploy_target,
        "deploy_id": release.deploy_id,
        "deploy_url": release.deploy_url,
        "failure": release.failure,
        "forced": release.forced,
        "rollback_id": release.rollback_id,
        "rollback_url": release.rollback_url,
        "deploy_log": list(release.deploy_log),
        "deploy_log_total": release.deploy_log_total,
        "expected_checks": list(release.expected_checks),
    }


def _slot_to(slot: Slot | None) -> list[str] | None:
    return [slot.start.isoformat(), slot.end.isoformat()] if slot else None


def _slot_from(pair: list[str] | None) -> Slot | None:
    return Slot(datetime.fromisoformat(pair[0]), datetime.fromisoformat(pair[1])) if pair else None


def release_from_doc(doc: dict[str, Any], version: int) -> Release:
    slot = doc.get("slot")
    return Release(
        repo=doc["repo"],
        pr=doc["pr"],
        number=doc["number"],
        installation_id=doc["installation_id"],
        state=State(doc["state"]),
        title=doc["title"],
        base=doc["base"],
        head_sha=doc["head_sha"],
        requested_by=doc["requested_by"],
        requested_at=datetime.fromisoformat(doc["requested_at"]),
        slot=Slot(datetime.fromisoformat(slot[0]), datetime.fromisoformat(slot[1])) if slot else None,
        when_text=doc.get("when_text"),
        verified_sha=doc.get("verified_sha"),
        checks=verdict_from_doc(doc["checks"]) if doc.get("checks") else None,
        blockers=tuple(doc.get("blockers", ())),
        held_from=State(doc["held_from"]) if doc.get("held_from") else None,
        commits=tuple(Commit(sha, message) for sha, message in doc.get("commits", ())),
        audit=tuple(
            Transition(
                at=datetime.fromisoformat(t["at"]),
                from_state=State(t["from"]) if t.get("from") else None,
                to_state=State(t["to"]),
                actor=t["actor"],
                reason=t["reason"],
                source=t["source"],
                delivery=t.get("delivery"),
            )
            for t in doc.get("audit", ())
        ),
        updated_at=datetime.fromisoformat(doc["updated_at"]) if doc.get("updated_at") else None,
        timezone=doc.get("timezone", "UTC"),
        check_run_blocks_merge=bool(doc.get("check_run_blocks_merge")),
        # Releases stored before lanes existed were all in their repository's default lane.
        lane=doc.get("lane") or f"{doc['repo']} production",
        calendar_account=doc.get("calendar_account"),
        calendar_id=doc.get("calendar_id"),
        event_id=doc.get("event_id"),
        event_link=doc.get("event_link"),
        conflicts=tuple(doc.get("conflicts") or ()),
        proposal=_slot_from(doc.get("proposal")),
        requester_zone=doc.get("requester_zone"),
        lead_minutes=int(doc.get("lead_minutes", 15)),
        prechecked_for=datetime.fromisoformat(doc["prechecked_for"]) if doc.get("prechecked_for") else None,
        merge_sha=doc.get("merge_sha"),
        released_at=datetime.fromisoformat(doc["released_at"]) if doc.get("released_at") else None,
        deploy_target=doc.get("deploy_target"),
        deploy_id=doc.get("deploy_id"),
        deploy_url=doc.get("deploy_url"),
        failure=doc.get("failure"),
        forced=bool(doc.get("forced")),
        rollback_id=doc.get("rollback_id"),
        rollback_url=doc.get("rollback_url"),
        deploy_log=tuple(doc.get("deploy_log") or ()),
        deploy_log_total=int(doc.get("deploy_log_total") or len(doc.get("deploy_log") or ())),
        expected_checks=tuple(doc.get("expected_checks") or ()),
        version=version,
    )


@dataclass(frozen=True, slots=True)
class PullRecord:
    """Per-PR bookkeeping of the bot's own outputs, so they are edited, never duplicated."""

    repo: str
    pr: int
    comment_id: int | None = None
    check_runs: dict[str, int] = field(default_factory=dict)  # head SHA -> check run id
    rendered: str | None = None  # the last body written, to skip no-op edits
    rendered_at: datetime | None = None
    config_problems: tuple[str, ...] = ()
    version: int = 0
