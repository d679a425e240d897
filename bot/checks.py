"""Which checks a head SHA must pass, and whether it does: pure functions over GitHub's REST bodies."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

OWN_CHECK_NAME = "Release"
"""The bot's own check run: never waited for, or a release would wait on itself forever."""

CheckSource = Literal["check_run", "status"]
VerdictState = Literal["green", "pending", "failing"]


class CheckState(enum.StrEnum):
    SUCCESS = "success"
    NEUTRAL = "neutral"
    SKIPPED = "skipped"
    PENDING = "pending"
    FAILURE = "failure"
    MISSING = "missing"

    @property
    def passed(self) -> bool:
        # GitHub lets neutral and skipped satisfy a required check, so do we.
        return self in _PASSED

    @property
    def emoji(self) -> str:
        return _EMOJI[self]


_PASSED = frozenset({CheckState.SUCCESS, CheckState.NEUTRAL, CheckState.SKIPPED})
_EMOJI = {
    CheckState.SUCCESS: "✅",
    CheckState.NEUTRAL: "✅",
    CheckState.SKIPPED: "✅",
    CheckState.PENDING: "⏳",
    CheckState.FAILURE: "❌",
    CheckState.MISSING: "❔",
}
# Worst first: the worst report of a name wins, and tables list the worst first.
_SEVERITY = {
    CheckState.FAILURE: 0,
    CheckState.MISSING: 1,
    CheckState.PENDING: 2,
    CheckState.SUCCESS: 3,
    CheckState.NEUTRAL: 3,
    CheckState.SKIPPED: 3,
}

_RUN_CONCLUSIONS = {
    "success": CheckState.SUCCESS,
    "neutral": CheckState.NEUTRAL,
    "skipped": CheckState.SKIPPED,
    "failure": CheckState.FAILURE,
    "cancelled": CheckState.FAILURE,
    "timed_out": CheckState.FAILURE,
    "action_required": CheckState.FAILURE,
    # Not in GitHub's OpenAPI enum, but sent: Actions' startup_failure, and stale after 14 days.
    "startup_failure": CheckState.FAILURE,
    "stale": CheckState.FAILURE,
}
_STATUS_STATES = {
    "success": CheckState.SUCCESS,
    "pending": CheckState.PENDING,
    "failure": CheckState.FAILURE,
    "error": CheckState.FAILURE,
}


@dataclass(frozen=True)
class CheckItem:
    name: str
    state: CheckState
    source: CheckSource | None = None  # None: required but nothing reported it
    url: str | None = None
    summary: str | None = None
    detail: str | None = None  # GitHub's own word: "timed_out", "in_progress", "error", ...


@dataclass(frozen=True)
class ChecksVerdict:
    state: VerdictState
    items: tuple[CheckItem, ...] = ()
    required: frozenset[str] = field(default_factory=frozenset)

    def _names(self, state: CheckState) -> list[str]:
        return sorted(item.name for item in self.items if item.state is state)

    @property
    def pending(self) -> list[str]:
        return self._names(CheckState.PENDING)

    @property
    def failing(self) -> list[str]:
        return self._names(CheckState.FAILURE)

    @property
    def missing(self) -> list[str]:
        return self._names(CheckState.MISSING)

    @property
    def all_green(self) -> bool:
        return self.state == "green"


def required_checks(
    protection: Mapping[str, Any] | None,
    rules: Iterable[Mapping[str, Any]],
    extra: Iterable[str] = (),
    ignore: Iterable[str] = (),
) -> frozenset[str]:
    """Names the branch requires: classic protection, rulesets, plus `extra`, minus `ignore`.

    `protection` is the body of `GET .../branches/{b}/protection` (None when the branch has none: 404),
    of `GET .../protection/required_status_checks`, or the `protection` object of `GET .../branches/{b}`.
    `rules` is the body of `GET /repos/{o}/{r}/rules/branches/{b}` (active rules only).
    """
    names: set[str] = set()
    policy = _status_check_policy(protection)
    if policy is not None:
        names.update(c for c in policy.get("contexts") or () if isinstance(c, str))
        names.update(_contexts(policy.get("checks")))
    for rule in rules:
        if rule.get("type") == "required_status_checks":
            parameters = rule.get("parameters") or {}
            names.update(_contexts(parameters.get("required_status_checks")))
    names.update(extra)
    names.difference_update(ignore)
    names.discard("")
    return frozenset(names)


def _status_check_policy(protection: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not protection:
        return None
    policy = protection.get("required_status_checks", protection)
    if not isinstance(policy, Mapping):
        return None  # absent or null: the branch is protected but requires no checks
    # GET /branches/{b} reports a switched-off requirement as enforcement_level "off".
    if policy.get("enforcement_level") == "off":
        return None
    return policy


def _contexts(entries: object) -> set[str]:
    if not isinstance(entries, list):
        return set()
    return {e["context"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("context"), str)}


def evaluate(
    required: frozenset[str],
    check_runs: Iterable[Mapping[str, Any]],
    statuses: Iterable[Mapping[str, Any]],
    *,
    require_all_when_none: bool = True,
    ignore: Iterable[str] = (OWN_CHECK_NAME,),
) -> ChecksVerdict:
    """The state of the required checks on one commit.

    `check_runs` are the `check_runs` of `GET .../commits/{ref}/check-runs`; `statuses` the body of
    `GET .../commits/{ref}/statuses` or the `statuses` of `GET .../commits/{ref}/status`. Only the latest
    report per name counts, whatever order the lists come in. Ignored names are never waited for, even
    when branch protection requires them (the bot's own "Release" check must not block itself).
    """
    ignored = frozenset(ignore)
    runs = _latest(check_runs, "name", "started_at")
    reported_statuses = _latest(statuses, "context", "updated_at")
    wanted = required - ignored
    # "Nothing required" is judged after ignoring: protection that requires only "Release" (to stop
    # merges around the bot) still leaves the repository's CI to wait for.
    if not wanted and require_all_when_none:
        wanted = frozenset(runs.keys() | reported_statuses.keys()) - ignored

    items = []
    for name in sorted(wanted):
        candidates = []
        if name in runs:
            candidates.append(_from_check_run(name, runs[name]))
        if name in reported_statuses:
            candidates.append(_from_status(name, reported_statuses[name]))
        if not candidates:
            candidates.append(CheckItem(name, CheckState.MISSING))
        # min() keeps the first of equals: the check run, whose link is the richer one.
        items.append(min(candidates, key=lambda item: _SEVERITY[item.state]))

    states = {item.state for item in items}
    verdict: VerdictState
    if CheckState.FAILURE in states:
        verdict = "failing"
    elif states & {CheckState.PENDING, CheckState.MISSING}:
        verdict = "pending"
    else:
        verdict = "green"
    return ChecksVerdict(state=verdict, items=tuple(items), required=wanted)


def _latest(reports: Iterable[Mapping[str, Any]], name_key: str, time_key: str) -> dict[str, Mapping[str, Any]]:
    latest: dict[str, tuple[tuple[datetime, int], Mapping[str, Any]]] = {}
    for report in reports:
        name = report.get(name_key)
        if not isinstance(name, str) or not name:
            continue
        key = (_timestamp(report.get(time_key)), _int(report.get("id")))
        if name not in latest or key > latest[name][0]:
            latest[name] = (key, report)
    return {name: report for name, (_, report) in latest.items()}


def _timestamp(value: object) -> datetime:
    # A report with no time yet (a queued run) sorts as the newest: it must not be outvoted by an older
    # success. GitHub sends UTC ("...Z"); a time without an offset is taken as UTC too.
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            pass
    return _NOT_YET


_NOT_YET = datetime.max.replace(tzinfo=UTC)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _from_check_run(name: str, run: Mapping[str, Any]) -> CheckItem:
    status = run.get("status")
    conclusion = run.get("conclusion")
    if status != "completed" or conclusion is None:
        state, detail = CheckState.PENDING, _text(status) or "pending"
    else:
        # An unknown conclusion never counts as passing: fail closed.
        state, detail = _RUN_CONCLUSIONS.get(str(conclusion), CheckState.FAILURE), str(conclusion)
    output = run.get("output")
    summary = None
    if isinstance(output, Mapping):
        summary = _text(output.get("title")) or _text(output.get("summary"))
    return CheckItem(
        name=name,
        state=state,
        source="check_run",
        url=_text(run.get("html_url")) or _text(run.get("details_url")),
        summary=summary,
        detail=detail,
    )


def _from_status(name: str, status: Mapping[str, Any]) -> CheckItem:
    raw = str(status.get("state"))
    return CheckItem(
        name=name,
        state=_STATUS_STATES.get(raw, CheckState.FAILURE),
        source="status",
        url=_text(status.get("target_url")),
        summary=_text(status.get("description")),
        detail=raw,
    )


_SUMMARY_CHARS = 120


def render_table(verdict: ChecksVerdict) -> str:
    """A markdown table of the checks, failing first, for the sticky comment and the check run."""
    if not verdict.items:
        return "_No checks are required for this commit._"
    rows = ["| Check | State | Link |", "| --- | --- | --- |"]
    for item in sorted(verdict.items, key=lambda i: (_SEVERITY[i.state], i.name.casefold(), i.name)):
        state = f"{item.state.emoji} {_describe(item)}"
        if item.state is CheckState.FAILURE and item.summary:
            state += f": {escape_markdown(_shorten(item.summary))}"
        link = f"[details]({_safe_url(item.url)})" if _safe_url(item.url) else ""
        rows.append(f"| {escape_markdown(item.name)} | {state} | {link} |")
    return "\n".join(rows)


def _describe(item: CheckItem) -> str:
    if item.state is CheckState.MISSING:
        return "expected, not reported yet"
    return (item.detail or item.state.value).replace("_", " ")


def _shorten(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= _SUMMARY_CHARS else line[: _SUMMARY_CHARS - 1] + "…"


_MARKDOWN_SPECIAL = str.maketrans(
    {c: "\\" + c for c in "\\`*_{}[]()<>#+!|~"} | {"@": "@\u200b", "\n": " ", "\r": " ", "&": "&amp;"}
)


def escape_markdown(text: str) -> str:
    """Text from GitHub or CI shown literally in markdown: no formatting, no table breaks, no @mentions."""
    return text.translate(_MARKDOWN_SPECIAL)


def _safe_url(url: str | None) -> str | None:
    # A status's target_url is whatever the CI sent: only web links, and nothing that ends the link.
    if not url or not url.startswith(("https://", "http://")):
        return None
    for char, code in (("(", "%28"), (")", "%29"), (" ", "%20"), ("|", "%7C"), ("<", "%3C"), (">", "%3E")):
        url = url.replace(char, code)
    return url
