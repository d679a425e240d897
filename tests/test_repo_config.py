"""Config as code: the schema, the documented example, defaults, and a clear message for every mistake."""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Iterator
from datetime import date, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.policy import DEFAULT_WINDOWS, Freeze, Policy, Window
from bot.repo_config import (
    DEFAULT_CONFIG,
    EXAMPLE_CONFIG_PATH,
    MAX_CONFIG_BYTES,
    CalendarConfig,
    ConfigError,
    ConfigProblem,
    Deploy,
    MergeMethod,
    NewCommits,
    Notify,
    Permission,
    RepoConfig,
    load_schema,
    parse_config,
)

SCHEMA = load_schema()
KEYS = list(SCHEMA["properties"])


def problems(text: str) -> tuple[ConfigProblem, ...]:
    result = parse_config(text)
    assert isinstance(result, ConfigError), result
    return result.problems


def only_problem(text: str) -> ConfigProblem:
    (problem,) = problems(text)
    return problem


def config(text: str) -> RepoConfig:
    result = parse_config(text)
    assert isinstance(result, RepoConfig), result
    return result


def as_json(value: Any) -> Any:
    """What an editor's schema check sees: YAML read as JSON, dates as the text they were written as."""
    return json.loads(json.dumps(value, default=str))


# ---- the schema ------------------------------------------------------------------------------------


def test_schema_is_package_data_and_valid_draft_2020_12() -> None:
    resource = importlib.resources.files("bot") / "schema" / "release-secretary.schema.json"
    assert json.loads(resource.read_text()) == SCHEMA
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def _objects(schema: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield where, schema
        for key, value in schema.items():
            if key != "not":  # a negated shape is a rule, not a place where keys are written
                yield from _objects(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _objects(value, f"{where}/{i}")


def test_every_object_is_closed_and_every_key_documented() -> None:
    objects = list(_objects(SCHEMA))
    # the file, notify, deploy, its parameters, calendar, new_commits, a window, a freeze
    assert len(objects) == 8
    for where, schema in objects:
        # Closed, or a map whose every value has a schema of its own (deploy.parameters).
        closed = schema.get("additionalProperties")
        assert closed is False or (isinstance(closed, dict) and "propertyNames" in schema), where
        for key, prop in schema.get("properties", {}).items():
            resolved = SCHEMA["$defs"][prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else prop
            assert resolved.get("description") or prop.get("description"), f"{where}/{key}"


def test_schema_keys_and_defaults_are_the_dataclass_defaults() -> None:
    assert KEYS == [
        "label",
        "timezone",
        "windows",
        "freezes",
        "slot_minutes",
        "lead_time_minutes",
        "required_checks",
        "require_all_checks_when_none_required",
        "ignore_checks",
        "merge_method",
        "ship_permission",
        "ship_teams",
        "check_run_blocks_merge",
        "notify",
        "deploy",
        "calendar",
        "new_commits",
    ]
    defaults = {key: prop["default"] for key, prop in SCHEMA["properties"].items()}
    assert set(defaults) == set(KEYS)
    jsonschema.Draft202012Validator(SCHEMA).validate(defaults)
    assert config(yaml.safe_dump(defaults)) == DEFAULT_CONFIG


def test_defaults() -> None:
    assert DEFAULT_CONFIG.label == "Ready for Prod"
    assert DEFAULT_CONFIG.timezone == ZoneInfo("UTC")
    assert DEFAULT_CONFIG.windows == DEFAULT_WINDOWS
    assert (DEFAULT_CONFIG.slot, DEFAULT_CONFIG.lead_time) == (timedelta(minutes=30), timedelta(minutes=15))
    assert DEFAULT_CONFIG.merge_method is MergeMethod.SQUASH
    assert DEFAULT_CONFIG.ship_permission is Permission.WRITE
    assert DEFAULT_CONFIG.require_all_checks_when_none_required is True
    assert DEFAULT_CONFIG.check_run_blocks_merge is False
    assert DEFAULT_CONFIG.policy() == Policy(timezone=ZoneInfo("UTC"))


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "~\n", "null", "--- # empty\n..."])
def test_an_empty_file_means_the_defaults(text: str) -> None:
    assert parse_config(text) == DEFAULT_CONFIG


# ---- the documented example ------------------------------------------------------------------------

EXAMPLE = EXAMPLE_CONFIG_PATH.read_text()


def test_example_is_accepted_by_the_schema_as_editors_read_it() -> None:
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(
        as_json(yaml.safe_load(EXAMPLE))
    )


def test_example_sets_and_explains_every_key() -> None:
    data = yaml.safe_load(EXAMPLE)
    assert list(data) == KEYS
    lines = EXAMPLE.splitlines()
    for key in KEYS:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[at - 1].startswith("#"), f"{key} has no comment above it"
    for key in ("slack_channel", "telegram_chat", "playbook", "workflow", "environment"):
        assert re.search(rf"^\s+#.*\n\s+#? ?{key}:", EXAMPLE, re.MULTILINE), key


def test_example_round_trips_to_the_documented_values() -> None:
    expected = RepoConfig(
        label="Ready for Prod",
        timezone=ZoneInfo("Europe/Berlin"),
        windows=(
            Window(frozenset({0, 1, 2, 3}), time(10), time(16)),
            Window(frozenset({4}), time(10), time(12)),
        ),
        freezes=(
            Freeze(date(2026, 12, 21), date(2027, 1, 4), "End-of-year holidays"),
            Freeze(date(2026, 11, 27), date(2026, 11, 27), "Black Friday"),
        ),
        slot=timedelta(minutes=30),
        lead_time=timedelta(minutes=15),
        required_checks=frozenset({"e2e / smoke"}),
        require_all_checks_when_none_required=True,
        ignore_checks=frozenset({"codecov/patch"}),
        merge_method=MergeMethod.SQUASH,
        ship_permission=Permission.WRITE,
        ship_teams=("octo-org/release-managers",),
        check_run_blocks_merge=False,
        notify=Notify(slack_channel="#releases", telegram_chat=-1001234567890),
        deploy=Deploy(playbook="deploy-web", environment="production", rollback_workflow="rollback.yml"),
        calendar=CalendarConfig(
            id="team-deploys@group.calendar.google.com",
            freeze_calendars=("freezes@group.calendar.google.com",),
            requester_busy=True,
        ),
        new_commits=NewCommits(action="wait", wait=timedelta(minutes=20), test_workflow="ci.yml"),
    )
    assert config(EXAMPLE) == expected
    policy = expected.policy()
    assert (policy.timezone, policy.windows, policy.freezes) == (expected.timezone, expected.windows, expected.freezes)


# ---- values that are fine --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ("mon-thu", {0, 1, 2, 3}),
        ("[mon, wed-fri]", {0, 2, 3, 4}),
        ("sun", {6}),
        ("[sat-sun, mon]", {0, 5, 6}),
        ("[mon-sun]", set(range(7))),
        ("[tue, tue-wed]", {1, 2}),
    ],
)
def test_day_forms(days: str, expected: set[int]) -> None:
    parsed = config(f"windows:\n  - days: {days}\n    hours: 10:00-16:00\n")
    assert parsed.windows == (Window(frozenset(expected), time(10), time(16)),)


@pytest.mark.parametrize(
    ("hours", "start", "end"),
    [
        ("10:00-16:00", time(10), time(16)),
        ("9:30 - 17:45", time(9, 30), time(17, 45)),
        ("'00:00-23:59'", time(0), time(23, 59)),
    ],
)
def test_hour_forms(hours: str, start: time, end: time) -> None:
    assert config(f"windows: [{{days: mon, hours: {hours}}}]").windows == (Window(frozenset({0}), start, end),)


def test_yaml_1_1_surprises_do_not_happen() -> None:
    # PyYAML's default (YAML 1.1) reads `on` as true and 1:30 as 90; config authors mean what they typed.
    assert only_problem("slot_minutes: 1:30").message == "slot_minutes must be a whole number from 5 to 480, got '1:30'"
    parsed = config("label: on\nrequired_checks: [no, yes, 'off']\n")
    assert parsed.label == "on" and parsed.required_checks == {"no", "yes", "off"}


def test_freezes_one_day_and_default_reason() -> None:
    parsed = config("freezes:\n  - from: 2026-12-24\n  - {from: '2026-12-31', to: '2027-01-01', reason: NYE}\n")
    assert parsed.freezes == (
        Freeze(date(2026, 12, 24), date(2026, 12, 24), "Release freeze"),
        Freeze(date(2026, 12, 31), date(2027, 1, 1), "NYE"),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("notify: {telegram_chat: '@release_news'}", Notify(telegram_chat="@release_news")),
        ("notify: {telegram_chat: '-100123'}", Notify(telegram_chat="-100123")),
        ("notify: {slack_channel: C0123ABCD}", Notify(slack_channel="C0123ABCD")),
    ],
)
def test_notify_forms(text: str, expected: Notify) -> None:
    assert config(text).notify == expected


def test_anchors_and_merge_keys_work_within_limits() -> None:
    text = (
        "windows:\n  - &morning {days: [mon], hours: '09:00-12:00'}\n  - <<: *morning\n    days: [tue]\n  - *morning\n"
    )
    windows = config(text).windows
    assert [sorted(w.days) for w in windows] == [[0], [1], [0]]
    assert {(w.start, w.end) for w in windows} == {(time(9), time(12))}


def test_every_field_set() -> None:
    parsed = config(
        "slot_minutes: 60\nlead_time_minutes: 0\nmerge_method: rebase\nship_permission: maintain\n"
        "check_run_blocks_merge: true\nrequire_all_checks_when_none_required: false\n"
        "deploy: {workflow: deploy.yaml}\n"
    )
    assert (parsed.slot, parsed.lead_time) == (timedelta(hours=1), timedelta(0))
    assert (parsed.merge_method, parsed.ship_permission) == (MergeMethod.REBASE, Permission.MAINTAIN)
    assert parsed.check_run_blocks_merge and not parsed.require_all_checks_when_none_required
    assert parsed.deploy == Deploy(workflow="deploy.yaml")


# ---- mistakes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "line", "message"),
    [
        (
            "label: x\nwindows:\n  - days: [mon]\n    hours: 10-4\n",
            "windows[0].hours",
            4,
            "windows[0].hours must look like 10:00-16:00 (24-hour HH:MM-HH:MM), got '10-4'",
        ),
        (
            "windows:\n  - days: mon\n    hours: 10:00-11:00\n  - days: tue\n    hours: '16:00-10:00'\n",
            "windows[1].hours",
            5,
            "windows[1].hours must end after it starts, got '16:00-10:00': a window cannot cross midnight, "
            "so split it into two windows (like 22:00-23:59 and 00:00-02:00 the next day)",
        ),
        (
            "windows: [{days: mon, hours: '10:00-10:00'}]",
            "windows[0].hours",
            1,
            "windows[0].hours must end after it starts",
        ),
        (
            "windows:\n  - days: [mon, fri-mon]\n    hours: 10:00-16:00\n",
            "windows[0].days[1]",
            2,
            "windows[0].days[1] must be a range running forward from mon to sun, got 'fri-mon', which wraps "
            "past Sunday: write it as two entries, fri-sun and mon",
        ),
        (
            "windows:\n  - days: sat-tue\n    hours: 10:00-16:00\n",
            "windows[0].days",
            2,
            "write it as two entries, sat-sun and mon-tue",
        ),
        ("timezone: Europe/Berln\n", "timezone", 1, "got 'Europe/Berln' (did you mean Europe/Berlin?)"),
        ("timezone: europe/berlin\n", "timezone", 1, "(did you mean Europe/Berlin?)"),
        ("timezone: Tokyo\n", "timezone", 1, "(did you mean Asia/Tokyo?)"),
        (
            "timezone: Mars/Olympus_Mons\n",
            "timezone",
            1,
            "timezone must be an IANA time zone name like Europe/Berlin, got 'Mars/Olympus_Mons'",
        ),
        ("timezone: ../../etc/passwd\n", "timezone", 1, "must be an IANA time zone name"),
        (
            "freezes:\n  - from: 2026-12-24\n    to: 2026-12-01\n",
            "freezes[0].to",
            3,
            "freezes[0].to must not be before from: the freeze ends 2026-12-01 but starts 2026-12-24",
        ),
        (
            "freezes:\n  - from: 24.12.2026\n",
            "freezes[0].from",
            2,
            "freezes[0].from must be a date like 2026-12-21 (YYYY-MM-DD), got '24.12.2026'",
        ),
        ("freezes: [{from: 2026-02-30}]", "freezes[0].from", 1, "got '2026-02-30'"),
        ("freezes: [2026-12-24]", "freezes[0]", 1, "freezes[0] must be a freeze like {from: 2026-12-21"),
        ("freezes: [{to: 2026-02-03}]", "freezes[0]", 1, "freezes[0] is missing from, which must be a date"),
        ("windos: []\n", "windos", 1, "windos is not a known key (did you mean windows?)"),
        ("colour: red\n", "colour", 1, "colour is not a known key; the keys are: label, timezone, windows"),
        (
            "notify:\n  slak: '#x'\n",
            "notify.slak",
            2,
            "notify.slak is not a known key of notify (did you mean slack_channel?)",
        ),
        ("slot_minutes: 3\n", "slot_minutes", 1, "slot_minutes must be a whole number from 5 to 480, got 3"),
        ("slot_minutes: 30.5\n", "slot_minutes", 1, "got 30.5"),
        ("slot_minutes: true\n", "slot_minutes", 1, "got true"),
        ("lead_time_minutes: -1\n", "lead_time_minutes", 1, "from 0 to 1440, got -1"),
        ("merge_method: fast-forward\n", "merge_method", 1, "merge_method must be one of merge, squash, rebase"),
        ("ship_permission: read\n", "ship_permission", 1, "must be one of admin, maintain, write, triage, got 'read'"),
        ("ship_teams: [release-managers]\n", "ship_teams[0]", 1, "be a team as org/team-slug"),
        ("label:\n", "label", 1, "label must be a label name of 1 to 50 characters, got an empty value"),
        ("label: " + "x" * 51, "label", 1, "got 'xxxxx"),
        ("freezes:\n", "freezes", 1, "got an empty value"),
        ("windows: []\n", "windows", 1, "windows must list at least one window"),
        ("windows: [mon-thu]\n", "windows[0]", 1, "windows[0] must be a window like"),
        ("windows:\n  - hours: 10:00-16:00\n", "windows[0]", 2, "windows[0] is missing days, which must name days"),
        (
            "windows:\n  - days: Monday\n    hours: 10:00-16:00\n",
            "windows[0].days",
            2,
            "got 'Monday' (did you mean mon?)",
        ),
        (
            "windows: [{days: [Mon, TUE-thursday], hours: 10:00-16:00}]",
            "windows[0].days",
            1,
            "(did you mean [mon, tue-thu]?)",
        ),
        ("windows: [{days: [], hours: 10:00-16:00}]", "windows[0].days", 1, "got an empty list"),
        ("windows: [{days: [mon, 5], hours: 10:00-16:00}]", "windows[0].days", 1, "sun), got a list"),
        ("windows:\n  - <<: 5\n", "", 2, "expected a mapping or list of mappings for merging"),
        ("windows: [{days: mon, hours: 10:00-16:00, tz: UTC}]", "windows[0].tz", 1, "not a known key of windows[0]"),
        ("slot_minutes: 480\n", "slot_minutes", 1, "slot_minutes must fit inside a release window, got 480"),
        ("windows: [{days: mon, hours: 10:00-10:15}]", "windows", 1, "the longest is 15 minutes"),
        ("deploy:\n  playbook: web\n  workflow: deploy.yml\n", "deploy", 1, "deploy sets both playbook and workflow"),
        ("deploy: ansible\n", "deploy", 1, "deploy must be a mapping (key: value), got 'ansible'"),
        ("deploy: {workflow: .github/workflows/deploy.yml}", "deploy.workflow", 1, "like deploy.yml"),
        ("notify: {telegram_chat: my channel}", "notify.telegram_chat", 1, "be a Telegram chat id"),
        ("notify: {slack_channel: 'releases channel'}", "notify.slack_channel", 1, "be a Slack channel"),
        (
            "required_checks: build\n",
            "required_checks",
            1,
            "required_checks must be a list of check names, like [build, test], got 'build'",
        ),
        ("required_checks: ['']\n", "required_checks[0]", 1, "be a check name of 1 to 255 characters"),
        ("label: a\nlabel: b\n", "label", 2, "label is set twice (lines 1 and 2): keep one"),
        ("- label: x\n", "", 1, "the file must be a mapping of settings"),
        ("just words\n", "", 1, "got 'just words'"),
        ("label: [unclosed\nslot_minutes: 30\n", "", 2, "the file is not valid YAML"),
        ("label: x\n\tslot_minutes: 30\n", "", 2, "the file is not valid YAML"),
        ("label: x\n---\nlabel: y\n", "", 2, "the file is not valid YAML: expected a single document"),
        ("label: !!binary aGk=\n", "label", 1, "uses the YAML tag tag:yaml.org,2002:binary"),
        ("label: !custom x\n", "label", 1, "uses the YAML tag !custom"),
        ("label: !!float ''\n", "label", 1, "label is tagged !!float but '' is not one"),
        ("slot_minutes: !!int thirty\n", "slot_minutes", 1, "slot_minutes is tagged !!int but 'thirty' is not one"),
        ("check_run_blocks_merge: !!bool yes\n", "check_run_blocks_merge", 1, "tagged !!bool but 'yes'"),
        ("? [a]\n: b\n", "", 1, "has a key that is not text"),
        ("1: one\n", "", 1, "has a key that is not text"),
        ("slot_minutes: " + "9" * 5000 + "\n", "", None, "has a value that cannot be read"),
        ("a: &a [*a]\n", "", 1, "too big or too deeply nested"),
        ("[" * 5000, "", 1, "nest"),  # refused by libyaml itself, or by our depth limit without it
        ("[" * 40 + "]" * 40, "", 1, "too big or too deeply nested"),
    ],
)
def test_problem(text: str, path: str, line: int | None, message: str) -> None:
    problem = only_problem(text)
    assert (problem.path, problem.line) == (path, line), problem
    assert message in problem.message


def test_billion_laughs_is_refused_before_anything_is_built() -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for name, prev in zip("bcdefghi", "abcdefgh", strict=True):
        text += f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    assert "too big" in only_problem(text).message


def test_too_big_a_file() -> None:
    assert "over 128 KiB" in only_problem("# " + "x" * MAX_CONFIG_BYTES).message


def test_all_problems_at_once_in_file_order() -> None:
    text = (
        "timezone: Europe/Berln\n"
        "windows:\n"
        "  - days: [mon, fri-mon]\n"
        "    hours: 16:00-10:00\n"
        "freezes:\n"
        "  - {from: 2026-12-24, to: 2026-12-01}\n"
        "colour: red\n"
    )
    assert [(p.line, p.path) for p in problems(text)] == [
        (1, "timezone"),
        (3, "windows[0].days[1]"),
        (4, "windows[0].hours"),
        (6, "freezes[0].to"),
        (7, "colour"),
    ]


def test_render_markdown_lists_line_path_and_message() -> None:
    error = parse_config("windows:\n  - days: [mon]\n    hours: 10-4\n")
    assert isinstance(error, ConfigError)
    assert error.render_markdown() == (
        "`.github/release-secretary.yml` has 1 problem:\n"
        "\n"
        "- line 3: `windows[0].hours` must look like 10:00-16:00 \\(24-hour HH:MM-HH:MM\\), got '10-4'"
    )


def test_render_markdown_shows_values_from_the_file_literally() -> None:
    error = parse_config("merge_method: '@octo-org/everyone <img src=x> | [link](https://evil) `x`'\n")
    assert isinstance(error, ConfigError)
    rendered = error.render_markdown()
    assert "@octo" not in rendered and "@\u200bocto-org/everyone" in rendered
    assert not re.search(r"(?<!\\)[<>|\[\]()`]", rendered.split(" got ", 1)[1])
    assert "\\<img src=x\\> \\| \\[link\\]\\(https://evil\\) \\`x\\`" in rendered
    weird_key = parse_config("'a`b': 1\n")
    assert isinstance(weird_key, ConfigError)
    assert '- line 1: ``["a`b"]`` is not a known key' in weird_key.render_markdown()


def test_render_markdown_caps_the_list() -> None:
    text = "".join(f"unknown_{i}: 1\n" for i in range(30))
    error = parse_config(text)
    assert isinstance(error, ConfigError)
    rendered = error.render_markdown().splitlines()
    assert rendered[0] == "`.github/release-secretary.yml` has 30 problems:"
    assert len(rendered) == 2 + 25 + 1 and rendered[-1] == "- and 5 more"


# ---- never raises ----------------------------------------------------------------------------------


def check_problems(result: RepoConfig | ConfigError, text: str) -> None:
    if isinstance(result, RepoConfig):
        result.policy()
        return
    assert result.problems
    last_line = len(re.split(r"\r\n|[\n\r\x85\u2028\u2029]", text)) + 1  # YAML's line breaks
    for problem in result.problems:
        assert problem.message.strip(), problem
        assert problem.line is None or 1 <= problem.line <= last_line, problem
    assert result.render_markdown()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(text: str) -> None:
    check_problems(parse_config(text), text)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["mon", "fri-mon", "10:00-16:00", "16:00-10:00", "2026-12-24", "Europe/Berlin", "squash"]),
)
yamlish = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.one_of(st.text(max_size=10), scalars), inner, max_size=4)
    ),
    max_leaves=20,
)
config_shaped = st.dictionaries(
    st.sampled_from([*KEYS, "days", "hours", "from", "to", "reason", "playbook", "workflow"]), yamlish, max_size=6
)
window_shaped = st.fixed_dictionaries(
    {},
    optional={
        "days": st.one_of(
            st.sampled_from(["mon", "sun-sat", "Mon", ""]),
            st.lists(st.sampled_from(["mon", "tue-fri", "fri-mon", "x"])),
        ),
        "hours": st.sampled_from(["10:00-16:00", "16:00-10:00", "10:00-10:10", "25:00-26:00", "x"]),
        "extra": scalars,
    },
)
windows_config = st.fixed_dictionaries(
    {"windows": st.lists(window_shaped, max_size=3)},
    optional={"slot_minutes": st.integers(0, 500), "timezone": st.sampled_from(["UTC", "Europe/Berln", "utc", ""])},
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(yamlish, config_shaped, windows_config))
def test_arbitrary_yaml_never_raises(value: Any) -> None:
    text = yaml.safe_dump(value, allow_unicode=True)
    check_problems(parse_config(text), text)


def test_playbook_parameters_may_only_use_the_bots_placeholders() -> None:
    found = problems(
        'deploy:\n  playbook: deploy-web\n  parameters:\n    sha: "{sha:>400000000}"\n    ok: "{merge_sha}"\n'
    )
    assert [(p.path, p.message.split(";")[0]) for p in found] == [
        (
            "deploy.parameters.sha",
            "deploy.parameters.sha uses '{sha:>400000000}', which is not a placeholder the bot fills in",
        )
    ]
    assert "{merge_sha}, {sha}, {repo}, {pr}, {environment}" in found[0].message


def test_merge_by_agent_needs_a_playbook() -> None:
    [found] = problems("deploy:\n  workflow: deploy.yml\n  merge_by: agent\n")
    assert found.message.startswith("deploy.merge_by: agent needs deploy.playbook")
