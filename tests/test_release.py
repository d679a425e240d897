"""The release machine on its own: plain synchronous cases, no server, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.checks import CheckItem, CheckState, ChecksVerdict
from bot.policy import Policy, Window
from bot.release import (
    Actor,
    CancelRequested,
    ChecksChanged,
    Decision,
    HeadMoved,
    HoldRequested,
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
    assert decision.effects == (RenderProgress(),)


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
