"""`.github/release-secretary.yml`: parse, validate against the JSON Schema, and explain every problem."""

from __future__ import annotations

import difflib
import enum
import functools
import importlib.resources
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import jsonschema
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .checks import escape_markdown
from .policy import DEFAULT_LEAD_TIME, DEFAULT_SLOT, DEFAULT_WINDOWS, Freeze, Policy, Window

CONFIG_PATH = ".github/release-secretary.yml"
SCHEMA_NAME = "release-secretary.schema.json"
EXAMPLE_CONFIG_PATH = Path(__file__).resolve().parent.parent / "docs" / "release-secretary.example.yml"

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# A repo file is untrusted input: bound what one parse may cost, aliases ("billion laughs") included.
MAX_CONFIG_BYTES = 128 * 1024
_MAX_NODES = 10_000
_MAX_DEPTH = 32
_MAX_SHOWN = 25


class MergeMethod(enum.StrEnum):
    MERGE = "merge"
    SQUASH = "squash"
    REBASE = "rebase"


class Permission(enum.StrEnum):
    """Repository permission levels as GitHub reports them, lowest first."""

    TRIAGE = "triage"
    WRITE = "write"
    MAINTAIN = "maintain"
    ADMIN = "admin"


@dataclass(frozen=True)
class Notify:
    slack_channel: str | None = None
    telegram_chat: str | int | None = None


@dataclass(frozen=True)
class Deploy:
    """At most one of playbook and workflow; neither means the merge is the release."""

    playbook: str | None = None
    workflow: str | None = None
    environment: str | None = None
    deployment: bool = False  # a GitHub Deployment of the merge commit, followed through its statuses
    rollback_workflow: str | None = None  # what `/ship rollback` dispatches
    rollback_playbook: str | None = None  # or runs on the dev agent (skill rollback_release)
    merge_by: str = "bot"  # or "agent": the playbook merges (pinned to {sha}) as well as deploying
    timeout: timedelta = timedelta(minutes=60)  # a deploy with no result by then has failed
    # The playbook's parameters; {merge_sha}, {sha}, {repo}, {pr} and {environment} are filled in.
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str | None:
        """What runs after the merge, as the release records it; None: the merge is the release."""
        if self.workflow:
            return f"workflow {self.workflow}"
        if self.deployment:
            return f"deployment {self.environment or DEFAULT_ENVIRONMENT}"
        if self.playbook:
            return f"playbook {self.playbook}"
        return None


@dataclass(frozen=True)
class NewCommits:
    """What the release does when the head moved past the verified SHA by its slot."""

    action: str = "next_slot"  # or "wait": for the new head's checks, within the slot
    wait: timedelta = timedelta(minutes=20)  # at most this long after the slot starts (and never past its end)
    test_workflow: str | None = None  # dispatched on the PR's branch when the wait begins


@dataclass(frozen=True)
class CalendarConfig:
    """Without `id` releases are booked in the bot's embedded calendar."""

    id: str | None = None
    freeze_calendars: tuple[str, ...] = ()
    requester_busy: bool = True


DEFAULT_ENVIRONMENT = "production"
# What a dev agent playbook's parameters may use, filled in by the bot at release time.
PLAYBOOK_PLACEHOLDERS = ("merge_sha", "sha", "repo", "pr", "environment")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def fill_placeholders(template: str, values: Mapping[str, str]) -> str:
    """`{name}` replaced by its value, `{{`/`}}` by a brace; nothing else (no format specs: a repository's
    config must not make the bot build huge strings)."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None or name not in values:
            raise ValueError(f"uses {token!r}, which is not a placeholder the bot fills in")
        return values[name]

    return _PLACEHOLDER.sub(one, template)


_UTC = ZoneInfo("UTC")


@dataclass(frozen=True)
class RepoConfig:
    label: str = "Ready for Prod"
    timezone: ZoneInfo = _UTC
    windows: tuple[Window, ...] = DEFAULT_WINDOWS
    freezes: tuple[Freeze, ...] = ()
    slot: timedelta = DEFAULT_SLOT
    lead_time: timedelta = DEFAULT_LEAD_TIME
    required_checks: frozenset[str] = frozenset()
    require_all_checks_when_none_required: bool = True
    ignore_checks: frozenset[str] = frozenset()
    merge_method: MergeMethod = MergeMethod.SQUASH
    ship_permission: Permission = Permission.WRITE
    ship_teams: tuple[str, ...] = ()
    check_run_blocks_merge: bool = False
    notify: Notify = field(default_factory=Notify)
    deploy: Deploy = field(default_factory=Deploy)
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    new_commits: NewCommits = field(default_factory=NewCommits)

    def lane(self, repo: str) -> str:
        """One release at a time per lane: the repository and its deployment environment."""
        return f"{repo} {self.deploy.environment or DEFAULT_ENVIRONMENT}"

    def policy(self) -> Policy:
        return Policy(
            timezone=self.timezone,
            windows=self.windows,
            freezes=self.freezes,
            slot=self.slot,
            lead_time=self.lead_time,
        )


DEFAULT_CONFIG = RepoConfig()


@dataclass(frozen=True)
class ConfigProblem:
    path: str  # like "windows[1].hours"; "" for the file as a whole
    line: int | None  # 1-based, where the file says it
    message: str  # a whole sentence: what is wrong, what is expected, what was found


@dataclass(frozen=True)
class ConfigError:
    problems: tuple[ConfigProblem, ...]

    def render_markdown(self) -> str:
        """A short list for the PR comment and the check run; every value from the file is escaped."""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"`{CONFIG_PATH}` has {count} {noun}:", ""]
        for problem in self.problems[:_MAX_SHOWN]:
            where = f"line {problem.line}" if problem.line is not None else "file"
            text = problem.message
            if problem.path and text.startswith(problem.path):
                text = _code(problem.path) + _escape(text[len(problem.path) :])
            else:
                text = _escape(text)
            lines.append(f"- {where}: {text}")
        if count > _MAX_SHOWN:
            lines.append(f"- and {count - _MAX_SHOWN} more")
        return "\n".join(lines)


# ---- YAML ------------------------------------------------------------------------------------------


try:  # libyaml reads about ten times faster; PyYAML may be built without it
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _Loader(_SafeLoader):
    """PyYAML with YAML 1.2 core scalars: `10:00` stays text (1.1 reads 600), dates stay text for the
    schema to check, `on`/`no` are text, not booleans."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}


# What each scalar tag must look like: an explicit `!!float ""` must not reach PyYAML's constructor,
# which would fail on it with an IndexError rather than a YAML error.
_SCALAR_FORMS: dict[str, re.Pattern[str]] = {}
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+|0o[0-7]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),
):
    _SCALAR_FORMS[f"tag:yaml.org,2002:{_tag}"] = re.compile(_pattern)
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", _SCALAR_FORMS[f"tag:yaml.org,2002:{_tag}"], list(_first))

_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
)
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _check_nodes(root: Node) -> list[ConfigProblem]:
    """Bounds, tags and keys, before PyYAML constructs anything (aliases are counted each time used)."""
    problems: list[ConfigProblem] = []
    seen = 0
    stack: list[tuple[Node, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        seen += 1
        if seen > _MAX_NODES or len(path) > _MAX_DEPTH:
            return [_too_big(_line(node))]
        if node.tag not in _PLAIN_TAGS:
            problems.append(
                ConfigProblem(
                    _format_path(path),
                    _line(node),
                    f"{_format_path(path) or 'the file'} uses the YAML tag {node.tag}: "
                    "only plain text, numbers, true/false, lists and mappings are allowed",
                )
            )
            continue
        form = _SCALAR_FORMS.get(node.tag)
        if isinstance(node, ScalarNode) and form is not None and not form.match(node.value):
            where = _format_path(path) or "the file"
            kind = node.tag.rsplit(":", 1)[-1]
            problems.append(
                ConfigProblem(
                    _format_path(path), _line(node), f"{where} is tagged !!{kind} but {node.value!r} is not one"
                )
            )
            continue
        if isinstance(node, SequenceNode):
            stack.extend((child, (*path, i)) for i, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            keys: dict[str, int] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    stack.append((value, path))
                    continue
                if not isinstance(key, ScalarNode) or key.tag != _STR_TAG:
                    where = _format_path(path) or "the file"
                    problems.append(
                        ConfigProblem(
                            _format_path(path),
                            _line(key),
                            f"{where} has a key that is not text: keys are names like label or windows",
                        )
                    )
                    continue
                name = str(key.value)
                if name in keys:
                    where = _format_path((*path, name))
                    message = f"{where} is set twice (lines {keys[name]} and {_line(key)}): keep one"
                    problems.append(ConfigProblem(where, _line(key), message))
                keys[name] = _line(key)
                stack.append((value, (*path, name)))
    return problems


def _line_map(root: Node) -> dict[tuple[str | int, ...], int]:
    """Path -> line of the key (mapping entries) or of the item (list entries), after merges."""
    lines: dict[tuple[str | int, ...], int] = {(): _line(root)}
    stack: list[tuple[Node, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, SequenceNode):
            for i, child in enumerate(node.value):
                lines[(*path, i)] = _line(child)
                stack.append((child, (*path, i)))
        elif isinstance(node, MappingNode):
            for key, value in node.value:  # later entries win, as in the constructed mapping
                if isinstance(key, ScalarNode):
                    lines[(*path, str(key.value))] = _line(key)
                    stack.append((value, (*path, str(key.value))))
    return lines


def _too_big(line: int | None) -> ConfigProblem:
    return ConfigProblem(
        "",
        line,
        f"the file is too big or too deeply nested once its anchors and aliases are expanded "
        f"(at most {_MAX_NODES} values, {_MAX_DEPTH} levels deep)",
    )


def _syntax_problem(exc: yaml.YAMLError) -> ConfigProblem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        reason = "; ".join(p for p in (exc.context, exc.problem) if p) or "unreadable"
        return ConfigProblem("", line, f"the file is not valid YAML: {reason}")
    return ConfigProblem("", None, f"the file is not valid YAML: {exc}")


def _scan(text: str) -> ConfigProblem | None:
    """Syntax and nesting from the event stream: the parser is iterative but the composer recurses once
    per level (in Python, or in C with libyaml), so "[[[[..." must be refused before composing."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > _MAX_DEPTH:
                    mark = event.start_mark
                    return _too_big(int(mark.line) + 1 if mark is not None else None)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        return _syntax_problem(exc)
    return None


def _read_yaml(text: str) -> tuple[Any, dict[tuple[str | int, ...], int]] | list[ConfigProblem]:
    problem = _scan(text)
    if problem is not None:
        return [problem]
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            return [_syntax_problem(exc)]  # several documents in one file: found by the composer only
        if root is None:
            return (None, {})
        problems = _check_nodes(root)
        if problems:
            return problems
        try:
            data = loader.construct_document(root)
        except yaml.YAMLError as exc:
            return [_syntax_problem(exc)]
        except (ValueError, TypeError, LookupError, AttributeError):
            # PyYAML's constructors raise plain errors for values they cannot build; with tags checked
            # above, that leaves numbers too long for Python to convert.
            return [ConfigProblem("", None, "the file has a value that cannot be read (a number over 4300 digits?)")]
        return (data, _line_map(root))
    finally:
        loader.dispose()


# ---- schema ----------------------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (draft 2020-12), as shipped in the package."""
    resource = importlib.resources.files("bot") / "schema" / SCHEMA_NAME
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = load_schema()
    cls = jsonschema.Draft202012Validator
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _format_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def _got(value: object) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:59] + "…"
        return repr(shown)
    if isinstance(value, int | float):
        shown = repr(value)
        return shown if len(shown) <= 30 else "a very long number"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    return type(value).__name__


def _expected(schema: Mapping[str, Any]) -> str:
    if "x-expected" in schema:
        return str(schema["x-expected"])
    if "enum" in schema:
        return "be one of " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"be a whole number from {low} to {high}"
        return "be a whole number"
    return {
        "boolean": "be true or false",
        "string": "be text",
        "array": "be a list",
        "object": "be a mapping (key: value)",
    }.get(str(kind), "be valid")


def _schema_problems(data: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for error in _validator().iter_errors(data):
        path = tuple(error.absolute_path)
        where = _format_path(path) or "the file"
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        instance = error.instance
        if error.validator == "additionalProperties" and isinstance(instance, dict):
            known = list(schema.get("properties", {}))
            for key in instance:
                if key not in known:
                    yield (*path, str(key)), _unknown_key(path, str(key), known)
        elif error.validator == "required" and isinstance(instance, dict):
            for key in schema.get("required", ()):
                if key not in instance:
                    wanted = _expected(schema.get("properties", {}).get(key, {}))
                    yield path, f"{where} is missing {key}, which must {wanted}"
        elif error.validator == "not" and "x-message" in schema:
            yield path, f"{where} {schema['x-message']}"
        else:
            message = f"{where} must {_expected(schema)}, got {_got(instance)}"
            hint = _day_hint(instance) if path[-1:] == ("days",) else None
            yield path, f"{message} (did you mean {hint}?)" if hint else message


def _unknown_key(path: tuple[str | int, ...], key: str, known: list[str]) -> str:
    full = _format_path((*path, key))
    within = f" of {_format_path(path)}" if path else ""
    # Whole names first, then their first words: "slak" is far from slack_channel but near "slack".
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:
        heads = {name.split("_", 1)[0]: name for name in reversed(known)}
        close = [heads[h] for h in difflib.get_close_matches(key, heads, n=1, cutoff=0.75)]
    if close:
        return f"{full} is not a known key{within} (did you mean {close[0]}?)"
    return f"{full} is not a known key{within}; the keys are: {', '.join(known)}"


def _day_hint(value: object) -> str | None:
    """`Monday`, `MON-Thu` and friends, written the way the schema wants, when that is what was meant."""
    items = value if isinstance(value, list) else [value]
    fixed = []
    for item in items:
        if not isinstance(item, str):
            return None
        parts = [p.strip().lower() for p in re.split(r"[-\u2013]", item.strip())]
        days = [DAYS[_FULL_DAYS.index(p)] if p in _FULL_DAYS else p for p in parts]
        if len(days) > 2 or not all(d in DAYS for d in days):
            return None
        fixed.append("-".join(days))
    if fixed == items:
        return None
    return "[" + ", ".join(fixed) + "]" if isinstance(value, list) else fixed[0]


# ---- meaning ---------------------------------------------------------------------------------------

_HOURS = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9]) *- *([01]?[0-9]|2[0-3]):([0-5][0-9])$")
_DAY_RANGE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?$")
_ZONE_KEY = re.compile(r"^[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*$")


def _parse_hours(text: str) -> tuple[time, time] | None:
    match = _HOURS.match(text)
    if match is None:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return time(h1, m1), time(h2, m2)


def _parse_days(text: str) -> tuple[int, int] | None:
    match = _DAY_RANGE.match(text)
    if match is None:
        return None
    first = DAYS.index(match[1])
    return first, DAYS.index(match[2]) if match[2] else first


def _load_zone(key: str) -> ZoneInfo | None:
    if not _ZONE_KEY.match(key):
        return None  # never hand zoneinfo a path-like key from a repo file
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@functools.cache
def _zone_names() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


def _zone_hint(key: str) -> str | None:
    names = _zone_names()
    folded = key.casefold()
    for name in names:
        if name.casefold() == folded:
            return name
    for name in names:
        if name.rsplit("/", 1)[-1].casefold() == folded.replace(" ", "_"):
            return name
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return close[0] if close else None


def _meaning_problems(data: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """What the schema cannot say: hour order, day ranges, real time zones, freeze order.
    Only well-formed values are looked at, so a value gets one message, not two."""
    zone = data.get("timezone")
    if isinstance(zone, str) and zone and _load_zone(zone) is None:
        hint = _zone_hint(zone)
        message = f"timezone must be an IANA time zone name like Europe/Berlin, got {_got(zone)}"
        yield ("timezone",), f"{message} (did you mean {hint}?)" if hint else message

    deploy = data.get("deploy")
    if (
        isinstance(deploy, dict)
        and deploy.get("deployment") is True
        and (deploy.get("workflow") or deploy.get("playbook"))
    ):
        other = "workflow" if deploy.get("workflow") else "playbook"
        yield (
            ("deploy", "deployment"),
            (
                f"deploy.deployment cannot go with deploy.{other}: choose one way to deploy (a GitHub Deployment "
                "that your deploy system picks up, a workflow the bot dispatches, or a dev agent playbook)"
            ),
        )

    if isinstance(deploy, dict) and deploy.get("merge_by") == "agent" and not deploy.get("playbook"):
        yield (
            ("deploy", "merge_by"),
            "deploy.merge_by: agent needs deploy.playbook: the playbook on the dev agent is what merges",
        )

    parameters = deploy.get("parameters") if isinstance(deploy, dict) else None
    for name, value in parameters.items() if isinstance(parameters, dict) else ():
        if not isinstance(value, str):
            continue
        try:
            fill_placeholders(value, dict.fromkeys(PLAYBOOK_PLACEHOLDERS, ""))
        except ValueError as exc:
            known = ", ".join("{" + p + "}" for p in PLAYBOOK_PLACEHOLDERS)
            yield (
                ("deploy", "parameters", name),
                f"deploy.parameters.{name} {exc}; the bot fills in {known} (write {{{{ and }}}} for literal braces)",
            )

    windows = data.get("windows")
    for i, window in enumerate(windows if isinstance(windows, list) else ()):
        if not isinstance(window, dict):
            continue
        hours = window.get("hours")
        parsed = _parse_hours(hours) if isinstance(hours, str) else None
        if parsed is not None and parsed[0] >= parsed[1]:
            yield (
                ("windows", i, "hours"),
                f"windows[{i}].hours must end after it starts, got {_got(hours)}: a window cannot cross "
                "midnight, so split it into two windows (like 22:00-23:59 and 00:00-02:00 the next day)",
            )
        days = window.get("days")
        entries: list[tuple[tuple[int, ...], object]] = []
        if isinstance(days, str):
            entries = [((), days)]
        elif isinstance(days, list):
            entries = [((j,), entry) for j, entry in enumerate(days)]
        for index, entry in entries:
            span = _parse_days(entry) if isinstance(entry, str) else None
            if span is not None and span[1] < span[0]:
                path: tuple[str | int, ...] = ("windows", i, "days", *index)
                first, last = DAYS[span[0]], DAYS[span[1]]
                yield (
                    path,
                    f"{_format_path(path)} must be a range running forward from mon to sun, got "
                    f"{_got(entry)}, which wraps past Sunday: write it as two entries, {first}-sun and "
                    f"{'mon' if last == 'mon' else 'mon-' + last}",
                )

    fit = _slot_fit_problem(data)
    if fit is not None:
        yield fit

    freezes = data.get("freezes")
    for i, freeze in enumerate(freezes if isinstance(freezes, list) else ()):
        if not isinstance(freeze, dict):
            continue
        start, end = _date(freeze.get("from")), _date(freeze.get("to"))
        if start is not None and end is not None and end < start:
            yield (
                ("freezes", i, "to"),
                f"freezes[{i}].to must not be before from: the freeze ends {end.isoformat()} but starts "
                f"{start.isoformat()}",
            )


def _slot_fit_problem(data: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str] | None:
    """A slot longer than every window could never be booked: say so here, not at the first /ship."""
    slot = data.get("slot_minutes", DEFAULT_CONFIG.slot // timedelta(minutes=1))
    if not isinstance(slot, int | float) or isinstance(slot, bool):
        return None
    lengths: list[int] = []
    if "windows" not in data:
        lengths = [_minutes(w.end) - _minutes(w.start) for w in DEFAULT_CONFIG.windows]
    elif isinstance(data["windows"], list):
        for window in data["windows"]:
            hours = window.get("hours") if isinstance(window, dict) else None
            parsed = _parse_hours(hours) if isinstance(hours, str) else None
            if parsed is None or parsed[1] <= parsed[0]:
                return None  # reported on its own; the fit is judged once the windows are right
            lengths.append(_minutes(parsed[1]) - _minutes(parsed[0]))
    if not lengths or max(lengths) >= slot:
        return None
    longest = max(lengths)
    if "slot_minutes" in data:
        return (
            ("slot_minutes",),
            f"slot_minutes must fit inside a release window, got {slot:g} but the longest window is "
            f"{longest} minutes: shorten the slot or widen a window",
        )
    return (
        ("windows",),
        f"windows must include one at least as long as a slot ({slot:g} minutes), but the longest is "
        f"{longest} minutes: widen a window or set a shorter slot_minutes",
    )


def _minutes(moment: time) -> int:
    return moment.hour * 60 + moment.minute


def _date(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


# ---- building ---------------------------------------------------------------------------------------


def _days(value: str | list[str]) -> frozenset[int]:
    days: set[int] = set()
    for entry in [value] if isinstance(value, str) else value:
        span = _parse_days(entry)
        assert span is not None  # validated
        days.update(range(span[0], span[1] + 1))
    return frozenset(days)


def _build(data: Mapping[str, Any]) -> RepoConfig:
    """A RepoConfig from data that passed the schema and the meaning checks."""
    base = DEFAULT_CONFIG
    zone = _load_zone(data["timezone"]) if "timezone" in data else base.timezone
    assert zone is not None  # validated
    windows = base.windows
    if "windows" in data:
        windows = tuple(
            Window(days=_days(w["days"]), start=hours[0], end=hours[1])
            for w in data["windows"]
            if (hours := _parse_hours(w["hours"])) is not None
        )
    freezes = tuple(
        Freeze(
            start=date.fromisoformat(f["from"]),
            end=date.fromisoformat(f.get("to", f["from"])),
            reason=f.get("reason", "Release freeze"),
        )
        for f in data.get("freezes", ())
    )
    notify, deploy, calendar = data.get("notify", {}), data.get("deploy", {}), data.get("calendar", {})
    new_commits = data.get("new_commits", {})
    return RepoConfig(
        label=data.get("label", base.label),
        timezone=zone,
        windows=windows,
        freezes=freezes,
        slot=timedelta(minutes=int(data["slot_minutes"])) if "slot_minutes" in data else base.slot,
        lead_time=(
            timedelta(minutes=int(data["lead_time_minutes"])) if "lead_time_minutes" in data else base.lead_time
        ),
        required_checks=frozenset(data.get("required_checks", ())),
        require_all_checks_when_none_required=data.get(
            "require_all_checks_when_none_required", base.require_all_checks_when_none_required
        ),
        ignore_checks=frozenset(data.get("ignore_checks", ())),
        merge_method=MergeMethod(data.get("merge_method", base.merge_method)),
        ship_permission=Permission(data.get("ship_permission", base.ship_permission)),
        ship_teams=tuple(data.get("ship_teams", ())),
        check_run_blocks_merge=data.get("check_run_blocks_merge", base.check_run_blocks_merge),
        notify=Notify(slack_channel=notify.get("slack_channel"), telegram_chat=notify.get("telegram_chat")),
        deploy=Deploy(
            playbook=deploy.get("playbook"),
            workflow=deploy.get("workflow"),
            environment=deploy.get("environment"),
            deployment=bool(deploy.get("deployment", False)),
            rollback_workflow=deploy.get("rollback_workflow"),
            rollback_playbook=deploy.get("rollback_playbook"),
            merge_by=deploy.get("merge_by", "bot"),
            timeout=timedelta(minutes=int(deploy.get("timeout_minutes", 60))),
            parameters={str(k): str(v) for k, v in (deploy.get("parameters") or {}).items()},
        ),
        calendar=CalendarConfig(
            id=calendar.get("id"),
            freeze_calendars=tuple(calendar.get("freeze_calendars", ())),
            requester_busy=calendar.get("requester_busy", True),
        ),
        new_commits=NewCommits(
            action=new_commits.get("action", "next_slot"),
            wait=timedelta(minutes=int(new_commits.get("wait_minutes", 20))),
            test_workflow=new_commits.get("test_workflow"),
        ),
    )


def parse_config(text: str) -> RepoConfig | ConfigError:
    """The config a repo's file says, or every problem in it. Never raises; an empty file is the defaults."""
    if len(text.encode("utf-8", errors="replace")) > MAX_CONFIG_BYTES:
        return ConfigError((ConfigProblem("", None, f"the file is over {MAX_CONFIG_BYTES // 1024} KiB"),))
    read = _read_yaml(text)
    if isinstance(read, list):
        return ConfigError(tuple(read))
    data, lines = read
    if data is None:
        return DEFAULT_CONFIG
    if not isinstance(data, dict):
        return ConfigError(
            (
                ConfigProblem(
                    "",
                    lines.get(()),
                    f"the file must be a mapping of settings like `label: Ready for Prod`, got {_got(data)}",
                ),
            )
        )
    found = [*_schema_problems(data), *_meaning_problems(data)]
    if found:
        problems = {ConfigProblem(_format_path(p), _nearest_line(p, lines), m) for p, m in found}
        return ConfigError(tuple(sorted(problems, key=_problem_order)))
    try:
        config = _build(data)
        config.policy()
    except ValueError as exc:
        # bot.policy keeps its own invariants; one the checks above missed still becomes a message.
        return ConfigError((ConfigProblem("", None, f"the release policy cannot be used: {exc}"),))
    return config


def _nearest_line(path: tuple[str | int, ...], lines: Mapping[tuple[str | int, ...], int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _problem_order(problem: ConfigProblem) -> tuple[int, str, str]:
    return (problem.line if problem.line is not None else 0, problem.path, problem.message)


# ---- markdown ---------------------------------------------------------------------------------------

# Values come from a repo file: shown literally, with no formatting, links or @mentions.
_escape = escape_markdown


def _code(text: str) -> str:
    text = text.replace("\n", " ")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
