"""The release machine on its own: plain synchronous cases, no server, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.checks import CheckItem, CheckState, ChecksVerdict
from bot.policy import Busy, Policy, Slot, Window
from bot.release import (
    Actor,
    CalendarChanged,
    CancelRequested,
    ChecksChanged,
    Decision,
    EventBooked,
    HeadMoved,
    HoldRequested,
    Prechecked,
    PullClosed,
    PullSnapshot,
    Release,
    RenderProgress,
    Reply,
    ShipRequested,
    Source,
    State,
    UnholdRequested,
    decide,
    permission_reaches,
    release_from_doc,
    release_to_doc,
)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # Wed 10:00 in Berlin
BERLIN = ZoneInfo("Europe/Berlin")
POLICY = Policy(timezone=BERLIN, windows=(Window(frozenset(range(5)), time(10), time(16)),))
HEAD, NEW = "a" * 40, "b" * 40
ALICE = Actor("alice", "write")
GREEN = ChecksVerdict("green", (CheckItem("ci", CheckState.SUCCESS, "check_run"),), frozenset({"ci"}))
PENDING = ChecksVerdict("pending", (CheckItem("ci", CheckState.PENDING, "check_run"),), frozenset({"ci"}))
FAILING = ChecksVerdict("failing", (CheckItem("ci", CheckState.FAILURE, "check_run"),), frozenset({"ci"}))
PULL = PullSnapshot(title="Faster widgets", head_sha=HEAD, base="main")


def ship(
    *, actor: Actor = ALICE, when: str | None = "friday 3pm", checks: ChecksVerdict = GREEN, **kw: object
) -> ShipRequested:
    fields: dict[str, object] = {
        "actor": actor,
        "source": Source.COMMENT,
        "delivery": "d1",
        "repo": "o/r",
        "pr": 7,
        "installation_id": 1,
        "pull": PULL,
        "checks": checks,
        "policy": POLICY,
        "when_text": when,
        "lane": "o/r production",
    }
    fields.update(kw)
    return ShipRequested(**fields)  # type: ignore[arg-type]


def started(checks: ChecksVerdict = GREEN) -> Release:
    release = decide(None, ship(checks=checks), NOW).release
    assert release is not None
    return release


def only_reply(decision: Decision) -> str:
    [effect] = decision.effects
    assert isinstance(effect, Reply)
    return effect.text


@pytest.mark.parametrize(
    ("checks", "state", "verified"),
    [(GREEN, State.SCHEDULED, HEAD), (PENDING, State.VERIFYING, None), (FAILING, State.BLOCKED, None)],
)
def test_a_ship_request_is_placed_by_its_checks(checks: ChecksVerdict, state: State, verified: str | None) -> None:
    decision = decide(None, ship(checks=checks), NOW)
    release = decision.release
    assert release is not None
    assert (release.state, release.verified_sha) == (state, verified)
    assert release.slot is not None and release.slot.start == datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    assert [t.to_state for t in release.audit] == [State.REQUESTED, state]
    assert release.audit[0].actor == "alice" and release.audit[0].source == "github_comment"
    [render, reply] = decision.effects
    assert render == RenderProgress() and isinstance(reply, Reply)
    # The person who asked gets the slot in the repo's zone and UTC, and what happens next.
    assert reply.text.startswith("@alice booked **Fri 27 Nov 15:00-15:30 Europe/Berlin (14:00 UTC)**.")
    assert reply.text.endswith("The progress comment above follows it.")
    # A label is answered by the progress comment alone.
    assert decide(None, ship(checks=checks, source=Source.LABEL), NOW).effects == (RenderProgress(),)


@pytest.mark.parametrize(
    ("have", "need", "ok"),
    [
        ("read", "write", False),
        ("write", "write", True),
        ("maintain", "write", True),
        ("admin", "maintain", True),
        ("triage", "write", False),
        (None, "triage", False),
    ],
)
def test_permission_order(have: str | None, need: str, ok: bool) -> None:
    assert permission_reaches(have, need) is ok


def test_too_little_permission_is_refused_with_the_level_needed() -> None:
    decision = decide(None, ship(actor=Actor("bob", "read")), NOW)
    assert decision.release is None
    text = only_reply(decision)
    assert "@bob" in text and "**write**" in text and "**read**" in text


def test_the_past_and_windows_are_refused_with_the_next_slot() -> None:
    text = only_reply(decide(None, ship(when="saturday"), NOW))
    assert "saturday" in text and "Mon 30 Nov 10:00" in text and "/ship 2026-11-30 10:00" in text


def test_dry_run_changes_nothing() -> None:
    decision = decide(None, ship(dry_run=True, checks=PENDING), NOW)
    assert decision.release is None
    text = only_reply(decision)
    assert "dry run" in text and "verifying" in text and "Fri 27 Nov 15:00-15:30 Europe/Berlin (14:00 UTC)" in text


def test_closed_and_draft_prs_cannot_ship() -> None:
    closed = ship(pull=replace(PULL, state="closed"))
    assert "closed" in only_reply(decide(None, closed, NOW))
    assert "draft" in only_reply(decide(None, ship(pull=replace(PULL, draft=True)), NOW))


def test_ship_now_inside_a_window_and_outside() -> None:
    inside = decide(None, ship(immediately=True, when=None), NOW + timedelta(hours=1)).release
    assert inside is not None and inside.slot is not None and inside.slot.start == NOW + timedelta(hours=1)
    saturday = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    assert "now" in only_reply(decide(None, ship(immediately=True, when=None), saturday))


def test_asking_again_reschedules_the_same_release() -> None:
    release = started()
    decision = decide(release, ship(when="monday 11:00", delivery="d2"), NOW)
    moved = decision.release
    assert moved is not None and moved.number == release.number
    assert moved.slot is not None and moved.slot.start == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert "rescheduled by alice" in moved.audit[-1].reason


def test_push_moves_a_scheduled_release_back_to_verifying_and_keeps_the_slot() -> None:
    release = started()
    moved = decide(release, HeadMoved(ALICE, Source.PUSH, "d2", head_sha=NEW), NOW).release
    assert moved is not None
    assert (moved.state, moved.head_sha, moved.verified_sha, moved.slot) == (State.VERIFYING, NEW, None, release.slot)
    assert "new push bbbbbbb" in moved.audit[-1].reason
    # Checks of the old head no longer count; of the new head, they do.
    stale = decide(moved, ChecksChanged(ALICE, Source.CHECKS, "d3", head_sha=HEAD, checks=GREEN), NOW)
    assert stale.release == moved and stale.effects == ()
    fresh = decide(moved, ChecksChanged(ALICE, Source.CHECKS, "d4", head_sha=NEW, checks=GREEN), NOW).release
    assert fresh is not None and fresh.state is State.SCHEDULED and fresh.verified_sha == NEW


def test_failing_checks_block_and_recovery_unblocks() -> None:
    release = started(PENDING)
    blocked = decide(release, ChecksChanged(ALICE, Source.CHECKS, None, head_sha=HEAD, checks=FAILING), NOW).release
    assert blocked is not None and blocked.state is State.BLOCKED and blocked.blockers == ("ci is failing",)
    ok = decide(blocked, ChecksChanged(ALICE, Source.CHECKS, None, head_sha=HEAD, checks=GREEN), NOW).release
    assert ok is not None and ok.state is State.SCHEDULED and ok.blockers == ()


def test_unchanged_checks_change_nothing() -> None:
    release = started()
    decision = decide(release, ChecksChanged(ALICE, Source.CHECKS, None, head_sha=HEAD, checks=GREEN), NOW)
    assert decision.effects == () and decision.release == release


def test_hold_and_unhold() -> None:
    release = started()
    held = decide(release, HoldRequested(ALICE, Source.COMMENT, None), NOW).release
    assert held is not None and held.state is State.HELD and held.held_from is State.SCHEDULED
    # Checks keep flowing in while held, without leaving the hold.
    still = decide(held, ChecksChanged(ALICE, Source.CHECKS, None, head_sha=HEAD, checks=FAILING), NOW).release
    assert still is not None and still.state is State.HELD
    resumed = decide(still, UnholdRequested(ALICE, Source.COMMENT, None), NOW).release
    assert resumed is not None and resumed.state is State.BLOCKED
    assert "not on hold" in only_reply(decide(resumed, UnholdRequested(ALICE, Source.COMMENT, None), NOW))
    reader = Actor("bob", "read")
    assert "**write**" in only_reply(decide(release, HoldRequested(reader, Source.COMMENT, None), NOW))


def test_cancel_and_what_cannot_be_cancelled() -> None:
    release = started()
    cancelled = decide(release, CancelRequested(ALICE, Source.COMMENT, None), NOW).release
    assert cancelled is not None and cancelled.state is State.CANCELLED and not cancelled.active
    assert "no release in progress" in only_reply(decide(cancelled, CancelRequested(ALICE, Source.COMMENT, None), NOW))
    releasing = replace(release, state=State.RELEASING)
    assert "already releasing" in only_reply(decide(releasing, CancelRequested(ALICE, Source.COMMENT, None), NOW))
    # Removing the label from a PR without a release is not worth a reply.
    assert decide(None, CancelRequested(ALICE, Source.LABEL, None), NOW).effects == ()
    # A new request after a cancel starts release number 2.
    again = decide(cancelled, ship(delivery="d2"), NOW).release
    assert again is not None and again.number == 2 and again.state is State.SCHEDULED


def test_closing_the_pr_cancels() -> None:
    closed = decide(started(), PullClosed(ALICE, Source.PULL_REQUEST, None, merged=True), NOW).release
    assert closed is not None and closed.state is State.CANCELLED and "merged outside" in closed.audit[-1].reason


def test_documents_round_trip() -> None:
    release = decide(started(PENDING), HoldRequested(ALICE, Source.COMMENT, "x"), NOW).release
    assert release is not None
    assert release_from_doc(release_to_doc(release), release.version) == release


def test_a_command_delivered_twice_is_applied_once() -> None:
    release = started()
    held = decide(release, HoldRequested(ALICE, Source.COMMENT, "delivery-9:0"), NOW).release
    assert held is not None and held.state is State.HELD
    again = decide(held, HoldRequested(ALICE, Source.COMMENT, "delivery-9:0"), NOW)
    # Nothing is applied again; the progress is rendered again in case the first run died before it.
    assert again.release == held and again.effects == (RenderProgress(),)


# The calendar's events: the T-minus check, the booked event, a person's change in the calendar.

SYSTEM = Actor("release-secretary")


def prechecked(release: Release, **kw: object) -> Prechecked:
    assert release.slot is not None
    fields: dict[str, object] = {
        "actor": SYSTEM,
        "source": Source.TIMER,
        "delivery": None,
        "slot_start": release.slot.start,
        "head_sha": release.head_sha,
        "checks": GREEN,
    }
    fields.update(kw)
    return Prechecked(**fields)  # type: ignore[arg-type]


def test_ship_takes_busy_time_into_account() -> None:
    friday_3pm = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    taken = Busy(friday_3pm, friday_3pm + timedelta(minutes=30), "the release of o/r#6")
    refused = only_reply(decide(None, ship(busy=(taken,)), NOW))
    assert "overlaps the release of o/r#6" in refused and "`/ship 2026-11-27 15:30`" in refused
    booked = decide(None, ship(when="friday afternoon", busy=(taken,), lane="o/r production"), NOW).release
    assert booked is not None and booked.slot is not None and booked.lane == "o/r production"
    assert booked.slot.start == datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # 13:00 Berlin, before the taken 15:00


def test_a_clean_precheck_is_noted_and_not_repeated_for_a_stale_slot() -> None:
    release = started()
    passed = decide(release, prechecked(release), NOW).release
    assert passed is not None and passed.state is State.SCHEDULED
    assert passed.audit[-1].reason == "pre-release check passed" and passed.prechecked_for == release.slot.start
    stale = prechecked(release, slot_start=NOW)  # the release was rescheduled since the timer was set
    assert decide(release, stale, NOW) == Decision(release)


def test_a_precheck_with_a_conflict_blocks_pings_the_requester_and_offers_the_next_slot() -> None:
    release = started()
    offer = Slot(datetime(2026, 11, 27, 14, 30, tzinfo=UTC), datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
    decision = decide(release, prechecked(release, conflicts=("'DB failover' overlaps",), proposal=offer), NOW)
    blocked = decision.release
    assert blocked is not None and blocked.state is State.BLOCKED and blocked.proposal == offer
    assert blocked.blockers == ("'DB failover' overlaps",)
    [render, reply] = decision.effects
    assert isinstance(render, RenderProgress) and isinstance(reply, Reply)
    assert reply.text.startswith("@alice the release at **Fri 27 Nov 15:00-15:30")
    assert "`/ship 2026-11-27 15:30`" in reply.text
    # Cleared at the next look: scheduled again, without a second message.
    again = decide(blocked, prechecked(blocked), NOW)
    assert again.release is not None and again.release.state is State.SCHEDULED and again.release.conflicts == ()
    assert [type(e) for e in again.effects] == [RenderProgress]


def test_a_precheck_sees_a_push_the_webhook_missed() -> None:
    release = started()
    decision = decide(release, prechecked(release, head_sha=NEW, checks=PENDING), NOW)
    assert decision.release is not None and decision.release.state is State.VERIFYING
    assert decision.release.head_sha == NEW and decision.release.verified_sha is None
    reply = decision.effects[-1]
    assert isinstance(reply, Reply) and f"the head moved to {NEW[:7]} since {HEAD[:7]} was verified" in reply.text


def test_held_releases_are_not_prechecked_and_keep_their_hold_when_the_event_moves() -> None:
    held = decide(started(), HoldRequested(ALICE, Source.COMMENT, "h", "write"), NOW).release
    assert held is not None and held.state is State.HELD
    assert decide(held, prechecked(held), NOW) == Decision(held)
    held = replace(held, event_id="ev1")
    saturday = Slot(datetime(2026, 11, 28, 10, 0, tzinfo=UTC), datetime(2026, 11, 28, 10, 30, tzinfo=UTC))
    moved = CalendarChanged(
        SYSTEM, Source.TIMER, None, event_id="ev1", moved_to=saturday, problems=("Saturday has no window",)
    )
    still = decide(held, moved, NOW).release
    assert still is not None and still.state is State.HELD and still.conflicts


def test_a_moved_event_is_followed_when_allowed_and_a_deleted_one_stops_the_release() -> None:
    release = replace(started(), event_id="ev1")
    thursday = Slot(datetime(2026, 11, 26, 13, 0, tzinfo=UTC), datetime(2026, 11, 26, 13, 30, tzinfo=UTC))
    followed = decide(release, CalendarChanged(SYSTEM, Source.TIMER, None, event_id="ev1", moved_to=thursday), NOW)
    assert followed.release is not None and followed.release.slot == thursday
    assert followed.release.state is State.SCHEDULED
    gone = decide(release, CalendarChanged(SYSTEM, Source.TIMER, None, event_id="ev1", moved_to=None), NOW)
    assert gone.release is not None and gone.release.state is State.BLOCKED and gone.release.slot is None
    assert gone.release.event_id is None
    other = CalendarChanged(SYSTEM, Source.TIMER, None, event_id="someone-else", moved_to=None)
    assert decide(release, other, NOW) == Decision(release)


def test_event_booked_records_where_once() -> None:
    release = started()
    assert release.slot is not None
    booked = EventBooked(
        SYSTEM,
        Source.TIMER,
        None,
        slot_start=release.slot.start,
        calendar_account="embedded",
        calendar_id="o/r production",
        event_id="ev1",
        event_link="https://bot.example/calendar.ics?repo=o%2Fr&token=t",
    )
    first = decide(release, booked, NOW)
    assert first.release is not None and first.release.event_id == "ev1" and first.effects == (RenderProgress(),)
    assert decide(first.release, booked, NOW) == Decision(first.release)
    assert decide(release, replace(booked, slot_start=NOW), NOW) == Decision(release)  # for an older slot
