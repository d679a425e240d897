"""How a release reads in chat: one message (headline, facts, buttons) and its milestones. Pure."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

from bot.policy import format_slot
from bot.release import OPEN, Release, State, Transition
from bot.render import HEADLINES


class Action(enum.StrEnum):
    """What a button does; the short value is what travels in Slack's action id and Telegram's callback."""

    SHIP_NOW = "n"
    POSTPONE = "p"
    CANCEL = "c"
    ROLLBACK = "r"


ACTION_LABELS: Final = {
    Action.SHIP_NOW: "🚀 Ship now",
    Action.POSTPONE: "⏭ Postpone to next window",
    Action.CANCEL: "🚫 Cancel",
    Action.ROLLBACK: "↩️ Rollback",
}
# Milestones are thread replies under the release's message: what people want to hear about as it happens.
MILESTONES: Final = frozenset({State.BLOCKED, State.RELEASING, State.RELEASED, State.FAILED, State.ROLLED_BACK})
MILESTONE_WORDS: Final = {
    State.BLOCKED: "⛔ Blocked",
    State.RELEASING: "🔀 Merging",
    State.RELEASED: "✅ Released",
    State.FAILED: "💥 Failed",
    State.ROLLED_BACK: "↩️ Rolled back",
}
_SYSTEM_ACTORS: Final = frozenset({"github", "release-secretary", "dev-agent", "calendar"})
# The requester hears about these directly (Slack DM, Telegram private chat) when their account is linked.
DIRECT: Final = frozenset({State.BLOCKED, State.FAILED})


@dataclass(frozen=True, slots=True)
class ChatView:
    """Plain text throughout: each adapter escapes and formats it for its platform."""

    headline: str  # "📅 Scheduled: acme/webshop#42"
    title: str  # the PR's title
    url: str  # the PR on GitHub
    facts: tuple[tuple[str, str], ...]
    note: str  # why it is in this state
    actions: tuple[Action, ...]
    release_key: str

    @property
    def digest(self) -> str:
        """What decides whether an edit is needed: the same view is never sent twice."""
        text = "\x1f".join([self.headline, self.title, self.url, self.note, *(f"{a}={b}" for a, b in self.facts)])
        text += "\x1f" + ",".join(self.actions)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def actions_for(release: Release) -> tuple[Action, ...]:
    if release.state in OPEN:
        actions = [Action.SHIP_NOW, Action.POSTPONE, Action.CANCEL]
        if release.state == State.HELD or release.slot is None:
            actions.remove(Action.POSTPONE)
        return tuple(actions)
    if release.state in (State.RELEASED, State.FAILED) and release.merge_sha and release.rollback_id is None:
        return (Action.ROLLBACK,)
    return ()


def render_view(release: Release, github_url: str) -> ChatView:
    tz = ZoneInfo(release.timezone)
    window = format_slot(release.slot, tz) if release.slot else "not booked yet"
    facts = [
        ("State", release.state.value),
        ("Window", window),
        ("Requested by", f"@{release.requested_by}"),
        ("Verified", release.verified_sha[:7] if release.verified_sha else "not yet"),
    ]
    if release.merge_sha:
        facts.append(("Merged", release.merge_sha[:7]))
    if release.blockers and release.state in (State.VERIFYING, State.BLOCKED):
        facts.append(("Blockers", "; ".join(release.blockers)[:500]))
    if release.proposal is not None and release.state in (State.BLOCKED, State.VERIFYING):
        facts.append(("Next free slot", format_slot(release.proposal, tz)))
    note = release.audit[-1].reason if release.audit else ""
    return ChatView(
        headline=f"{HEADLINES[release.state]}: {release.repo}#{release.pr}",
        title=release.title,
        url=f"{github_url.rstrip('/')}/{release.repo}/pull/{release.pr}",
        facts=tuple(facts),
        note=note[:1000],
        actions=actions_for(release),
        release_key=release.key,
    )


def milestone_text(release: Release, entry: Transition) -> str:
    word = MILESTONE_WORDS.get(entry.to_state, entry.to_state.value)
    who = "" if entry.actor in _SYSTEM_ACTORS else f" (by @{entry.actor})"
    return f"{word}{who}: {entry.reason}"[:3000]


def milestones(release: Release) -> list[tuple[int, Transition]]:
    """The audit entries worth a thread reply, with their index in the audit trail."""
    return [(i, t) for i, t in enumerate(release.audit) if t.to_state in MILESTONES and t.from_state != t.to_state]


def direct_text(release: Release, entry: Transition, github_url: str) -> str:
    url = f"{github_url.rstrip('/')}/{release.repo}/pull/{release.pr}"
    return f"Your release {release.repo}#{release.pr} ({release.title}): {milestone_text(release, entry)}\n{url}"


def button_value(view: ChatView) -> str:
    """What a button carries: the release, and which state of its message it was pressed on (a press on a
    message that has changed since, such as the second click of a double click, is not acted on)."""
    return f"{button_id(view.release_key)}.{view.digest[:8]}"


def button_id(release_key: str) -> str:
    """A short, stable reference to the release for buttons (Telegram allows 64 bytes of callback data)."""
    return hashlib.sha256(release_key.encode()).hexdigest()[:20]
