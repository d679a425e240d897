"""How a release reads on GitHub: the sticky PR comment and the `Release` check run. Pure text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .checks import _safe_url as safe_url
from .checks import escape_markdown, render_table
from .policy import format_slot
from .release import Release, State

MARKER = "<!-- release-secretary -->"
MAX_HISTORY = 50

HEADLINES = {
    State.REQUESTED: "📝 Release requested",
    State.VERIFYING: "🔎 Verifying",
    State.SCHEDULED: "📅 Scheduled",
    State.RELEASING: "🚀 Releasing",
    State.RELEASED: "✅ Released",
    State.BLOCKED: "⛔ Blocked",
    State.HELD: "⏸️ On hold",
    State.CANCELLED: "🚫 Cancelled",
    State.FAILED: "💥 Release failed",
    State.ROLLED_BACK: "↩️ Rolled back",
}

NEXT_STEP = {
    State.REQUESTED: "Reading the required checks.",
    State.VERIFYING: "Waiting for the required checks to pass on the head commit; the slot is kept.",
    State.SCHEDULED: "Merging the verified commit at the start of the window, after a last check.",
    State.RELEASING: "Merging and deploying.",
    State.BLOCKED: (
        "Fix what blocks the release (it moves on by itself once the checks pass), or move it to another "
        "slot with `/ship <when>`."
    ),
    State.HELD: "Nothing happens until someone comments `/ship unhold`.",
    State.CANCELLED: "Nothing. Comment `/ship` to ask again.",
    State.RELEASED: "Nothing: done.",
    State.FAILED: "Someone needs to look at the failure; comment `/ship` to try again.",
    State.ROLLED_BACK: "Someone needs to look at the rollback; comment `/ship` to try again.",
}

COMMANDS = {
    State.REQUESTED: ("/ship cancel", "/ship hold", "/ship status"),
    State.VERIFYING: ("/ship cancel", "/ship hold", "/ship friday 3pm", "/ship status"),
    State.SCHEDULED: ("/ship cancel", "/ship hold", "/ship now", "/ship friday 3pm", "/ship status"),
    State.BLOCKED: ("/ship cancel", "/ship hold", "/ship friday 3pm", "/ship status"),
    State.HELD: ("/ship unhold", "/ship cancel", "/ship status"),
    State.RELEASING: ("/ship status",),
    State.CANCELLED: ("/ship", "/ship friday", "/ship help"),
    State.RELEASED: ("/ship rollback", "/ship help"),
    State.FAILED: ("/ship rollback", "/ship", "/ship help"),
    State.ROLLED_BACK: ("/ship", "/ship help"),
}

_SOURCE_WORDS = {
    "github_label": "label",
    "github_comment": "comment",
    "slack": "Slack",
    "telegram": "Telegram",
    "api": "API",
    "mcp": "Micromanager",
}


def _who(actor: str) -> str:
    return "GitHub" if actor == "github" else escape_markdown(actor)


def short(sha: str | None) -> str:
    return f"`{sha[:7]}`" if sha else "—"


def render_sticky(release: Release | None, tz: ZoneInfo, *, config_problems: tuple[str, ...] = ()) -> str:
    lines = [MARKER]
    if config_problems:
        lines += [
            "> [!WARNING]",
            "> `.github/release-secretary.yml` is invalid, so the last good settings (or the defaults) apply:",
            *(f"> - {p}" for p in config_problems),
            "",
        ]
    if release is None:
        lines.append("### Release Secretary\n\nNo release requested. Comment `/ship` or `/ship friday` to ask for one.")
        return "\n".join(lines) + "\n"
    first = release.audit[0] if release.audit else None
    via = _SOURCE_WORDS.get(first.source, first.source) if first else "?"
    window = _window(release, tz)
    why = release.audit[-1].reason if release.audit else ""
    lines += [
        f"### {HEADLINES[release.state]}: `{release.repo}#{release.pr}`",
        "",
        "| | |",
        "| --- | --- |",
        f"| **State** | **{release.state.value}**: {escape_markdown(why)} |",
        f"| **Requested by** | @{release.requested_by} (via {via}) |",
        f"| **Window** | {window} |",
        f"| **Head** | {short(release.head_sha)} |",
        f"| **Verified SHA** | {short(release.verified_sha)} |",
        *_delivery_rows(release),
        "",
    ]
    if release.state in (State.RELEASING, State.FAILED):
        lines += deploy_log_block(release.deploy_log)
    if release.checks is not None and release.checks.items:
        lines += ["**Required checks**", "", render_table(release.checks), ""]
    elif release.checks is not None:
        lines += ["**Required checks**: none are required or reported.", ""]
    if release.blockers and release.state in (State.VERIFYING, State.BLOCKED):
        # Check names come from CI configs a PR author controls: never let them format or @mention.
        lines += ["**Blockers**", "", *(f"- {escape_markdown(b)}" for b in release.blockers), ""]
    if release.proposal is not None and release.state in (State.BLOCKED, State.VERIFYING, State.SCHEDULED):
        local = release.proposal.start.astimezone(tz)
        lines += [
            f"**Next free slot**: {format_slot(release.proposal, tz)}: comment `/ship {local:%Y-%m-%d %H:%M}` "
            "to move the release there.",
            "",
        ]
    lines += [f"**Next**: {NEXT_STEP[release.state]}", ""]
    commands = " · ".join(f"`{c}`" for c in COMMANDS[release.state])
    lines += [f"**Commands**: {commands}", ""]
    history = [
        # No @mentions in the history: an edit that adds one would notify that person again.
        f"- {t.at.astimezone(tz):%a %d %b %H:%M} {t.to_state.value} ({_who(t.actor)}): {escape_markdown(t.reason)}"
        for t in release.audit
    ]
    # GitHub refuses comments over 65,536 characters: the oldest history goes first.
    if len(history) > MAX_HISTORY:
        history = [f"- ({len(history) - MAX_HISTORY} earlier entries not shown)", *history[-MAX_HISTORY:]]
    lines += ["<details><summary>History</summary>", "", *history, "", "</details>"]
    return "\n".join(lines) + "\n"


def _delivery_rows(release: Release) -> list[str]:
    """Once it is merged: the merge commit, and the deploy with its log as it runs."""
    rows = []
    if release.merge_sha:
        rows.append(f"| **Merged as** | {short(release.merge_sha)} |")
    if release.deploy_target and release.merge_sha:
        url = safe_url(release.deploy_url)
        log = f" · [log]({url})" if url else ""
        done = {State.RELEASED: "done", State.FAILED: "failed", State.ROLLED_BACK: "done, then rolled back"}
        status = done.get(release.state, "running")
        rows.append(f"| **Deploy** | {escape_markdown(release.deploy_target)}: {status}{log} |")
    if release.rollback_id:
        url = safe_url(release.rollback_url)
        rows.append("| **Rollback** | " + (f"[run]({url})" if url else release.rollback_id) + " |")
    return rows


def deploy_log_block(lines: tuple[str, ...]) -> list[str]:
    """A dev agent's latest lines, verbatim in a fence that no line can close."""
    if not lines:
        return []
    fence = "`" * max(3, 1 + max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0))
    return ["**Deploy log** (latest lines)", "", fence + "text", *lines, fence, ""]


def _window(release: Release, tz: ZoneInfo) -> str:
    """The slot in the repo's zone and UTC, in the requester's zone when known, and the calendar link."""
    if release.slot is None:
        return "not booked"
    text = format_slot(release.slot, tz)
    if release.requester_zone and release.requester_zone != tz.key:
        mine = release.slot.start.astimezone(ZoneInfo(release.requester_zone))
        text += f"; {mine:%a %H:%M} for {release.requested_by} ({release.requester_zone})"
    if release.event_link and release.event_link.startswith(("https://", "http://")):
        text += f" · [calendar]({release.event_link.replace(')', '%29')})"
    return text


@dataclass(frozen=True)
class CheckRunView:
    status: str  # queued | in_progress | completed
    conclusion: str | None
    title: str
    summary: str


def render_check_run(release: Release, tz: ZoneInfo, *, config_problems: tuple[str, ...] = ()) -> CheckRunView:
    """The `Release` check run: neutral (never blocking a merge) unless the repo asks otherwise."""
    window = format_slot(release.slot, tz) if release.slot else "no window booked"
    title = f"{release.state.value.capitalize()}: {window}"
    summary = render_sticky(release, tz, config_problems=config_problems).replace(MARKER + "\n", "")
    if config_problems:
        return CheckRunView("completed", "failure", "Invalid .github/release-secretary.yml", summary)
    blocks_merge = release.check_run_blocks_merge
    done = {
        State.RELEASED: "success",
        State.CANCELLED: "neutral",
        State.FAILED: "failure",
        State.ROLLED_BACK: "failure",
    }
    if release.state in done:
        return CheckRunView("completed", done[release.state], title, summary)
    if not blocks_merge:
        return CheckRunView("completed", "neutral", title, summary)
    if release.state == State.BLOCKED:
        return CheckRunView("completed", "failure", title, summary)
    return CheckRunView("in_progress", None, title, summary)
