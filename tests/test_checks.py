"""Required checks and their state, from GitHub's own example bodies: latest report wins, failing first."""

from __future__ import annotations

import copy
import json
import random
import re
from functools import cache
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.checks import (
    OWN_CHECK_NAME,
    CheckItem,
    CheckState,
    ChecksVerdict,
    escape_markdown,
    evaluate,
    render_table,
    required_checks,
)
from tests.helpers import FIXTURES

REST = FIXTURES / "rest-examples"


@cache
def _example(name: str) -> Any:
    return json.loads((REST / name).read_text())


def example(name: str) -> Any:
    """A fresh copy of a GitHub example body, safe to modify."""
    return copy.deepcopy(_example(name))


def check_run(
    name: str, *, id: int, status: str = "completed", conclusion: str | None = "success", **extra: Any
) -> dict[str, Any]:
    run: dict[str, Any] = example("checks/list-for-ref.json")["check_runs"][0]
    run.update(name=name, id=id, status=status, conclusion=conclusion, html_url=f"https://github.com/o/r/runs/{id}")
    run.update(extra)
    return run


def status(context: str, *, id: int, state: str = "success", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = example("repos/list-commit-statuses-for-ref.json")[0]
    item.update(context=context, id=id, state=state, target_url=f"https://ci.example.com/{id}")
    item.update(extra)
    return item


def ruleset_rule(*contexts: str) -> dict[str, Any]:
    return {
        "type": "required_status_checks",
        "ruleset_source_type": "Repository",
        "ruleset_source": "monalisa/my-repo",
        "ruleset_id": 42,
        "parameters": {
            "strict_required_status_checks_policy": True,
            "do_not_enforce_on_create": False,
            "required_status_checks": [{"context": c, "integration_id": 15368} for c in contexts],
        },
    }


# ---- required_checks -------------------------------------------------------------------------------


def test_classic_protection_contexts() -> None:
    protection = example("repos/get-branch-protection.json")
    assert required_checks(protection, []) == {"continuous-integration/travis-ci"}


def test_classic_protection_checks_with_app_ids_as_github_really_sends_them() -> None:
    # The recorded response (real api.github.com) carries `checks`; the OpenAPI example omits it.
    recorded = json.loads((FIXTURES / "recorded" / "branch-protection.json").read_text())
    put = next(x for x in recorded if x["method"] == "put" and "required_status_checks" in x["response"])
    protection = put["response"]
    protection["required_status_checks"]["checks"].append({"context": "build", "app_id": 15368})
    assert required_checks(protection, []) == {"foo/bar", "build"}


def test_status_checks_protection_body_on_its_own() -> None:
    body = example("repos/get-status-checks-protection.json")
    body["checks"] = [{"context": "lint", "app_id": None}]
    assert required_checks(body, []) == {"continuous-integration/travis-ci", "lint"}


@pytest.mark.parametrize(
    "protection",
    [None, {}, {"url": "x", "required_status_checks": None}, {"url": "x", "enforce_admins": {"enabled": True}}],
)
def test_no_classic_requirement(protection: dict[str, Any] | None) -> None:
    assert required_checks(protection, []) == frozenset()


def test_switched_off_requirement_as_get_branch_reports_it() -> None:
    protection = {
        "enabled": True,
        "required_status_checks": {"enforcement_level": "off", "contexts": ["ci"], "checks": []},
    }
    assert required_checks(protection, []) == frozenset()


def test_ruleset_rules_add_to_protection_and_other_rules_are_ignored() -> None:
    rules = example("repos/get-branch-rules.json")
    assert required_checks(None, rules) == frozenset()
    rules.append(ruleset_rule("build", "test (3.11)"))
    protection = example("repos/get-branch-protection.json")
    assert required_checks(protection, rules) == {"continuous-integration/travis-ci", "build", "test (3.11)"}


def test_extra_and_ignore() -> None:
    protection = example("repos/get-branch-protection.json")
    names = required_checks(
        protection, [ruleset_rule("build")], extra=["e2e", "Release"], ignore=["continuous-integration/travis-ci"]
    )
    assert names == {"build", "e2e", "Release"}


def test_malformed_entries_are_skipped() -> None:
    protection = {"required_status_checks": {"contexts": ["ok", 5, None], "checks": [{"app_id": 1}, "x", None]}}
    rule = {"type": "required_status_checks", "parameters": {"required_status_checks": "nope"}}
    assert required_checks(protection, [rule, {"type": "required_status_checks"}]) == {"ok"}


# ---- evaluate --------------------------------------------------------------------------------------


def test_the_example_check_run_is_neutral_which_passes() -> None:
    runs = example("checks/list-for-ref.json")["check_runs"]
    verdict = evaluate(frozenset({"mighty_readme"}), runs, [])
    assert verdict.state == "green" and verdict.all_green
    (item,) = verdict.items
    assert item == CheckItem(
        name="mighty_readme",
        state=CheckState.NEUTRAL,
        source="check_run",
        url="https://github.com/github/hello-world/runs/4",
        summary="Mighty Readme report",
        detail="neutral",
    )


@pytest.mark.parametrize(
    ("status_", "conclusion", "state"),
    [
        ("completed", "success", CheckState.SUCCESS),
        ("completed", "neutral", CheckState.NEUTRAL),
        ("completed", "skipped", CheckState.SKIPPED),
        ("completed", "failure", CheckState.FAILURE),
        ("completed", "cancelled", CheckState.FAILURE),
        ("completed", "timed_out", CheckState.FAILURE),
        ("completed", "action_required", CheckState.FAILURE),
        ("completed", "startup_failure", CheckState.FAILURE),
        ("completed", "stale", CheckState.FAILURE),
        ("completed", "something_new", CheckState.FAILURE),
        ("completed", None, CheckState.PENDING),
        ("queued", None, CheckState.PENDING),
        ("in_progress", None, CheckState.PENDING),
        ("waiting", None, CheckState.PENDING),
        ("requested", None, CheckState.PENDING),
        ("pending", None, CheckState.PENDING),
    ],
)
def test_check_run_states(status_: str, conclusion: str | None, state: CheckState) -> None:
    verdict = evaluate(frozenset({"build"}), [check_run("build", id=1, status=status_, conclusion=conclusion)], [])
    assert verdict.items[0].state is state
    expected = {True: "green", False: "failing" if state is CheckState.FAILURE else "pending"}[state.passed]
    assert verdict.state == expected


@pytest.mark.parametrize(
    ("raw", "state", "verdict"),
    [
        ("success", CheckState.SUCCESS, "green"),
        ("pending", CheckState.PENDING, "pending"),
        ("failure", CheckState.FAILURE, "failing"),
        ("error", CheckState.FAILURE, "failing"),
        ("weird", CheckState.FAILURE, "failing"),
    ],
)
def test_status_states(raw: str, state: CheckState, verdict: str) -> None:
    result = evaluate(frozenset({"ci/jenkins"}), [], [status("ci/jenkins", id=1, state=raw)])
    (item,) = result.items
    assert (item.state, item.source, item.url, result.state) == (
        state,
        "status",
        "https://ci.example.com/1",
        verdict,
    )


def test_latest_check_run_by_started_at_then_id_whatever_the_order() -> None:
    runs = [
        check_run("build", id=10, conclusion="failure", started_at="2026-11-20T10:00:00Z"),
        check_run("build", id=11, conclusion="success", started_at="2026-11-20T11:00:00Z"),
        check_run("build", id=9, conclusion="failure", started_at="2026-11-20T11:00:00+01:00"),  # 10:00 UTC
        check_run("lint", id=3, conclusion="failure", started_at="2026-11-20T10:00:00Z"),
        check_run("lint", id=4, conclusion="success", started_at="2026-11-20T10:00:00Z"),  # same time: id
    ]
    for seed in range(5):
        random.Random(seed).shuffle(runs)
        verdict = evaluate(frozenset({"build", "lint"}), runs, [])
        assert verdict.state == "green", seed
        assert {i.url for i in verdict.items} == {"https://github.com/o/r/runs/11", "https://github.com/o/r/runs/4"}


def test_a_run_not_started_yet_counts_as_the_newest() -> None:
    runs = [
        check_run("build", id=2, status="queued", conclusion=None, started_at=None),
        check_run("build", id=1, conclusion="success", started_at="2026-11-20T10:00:00Z"),
    ]
    assert evaluate(frozenset({"build"}), runs, []).pending == ["build"]


def test_latest_status_by_updated_at_not_by_list_order() -> None:
    # The list endpoint answers newest first; the combined one does not promise an order. Neither matters.
    older = status("ci/jenkins", id=7, state="success", updated_at="2026-11-20T10:00:00Z")
    newer = status("ci/jenkins", id=8, state="failure", updated_at="2026-11-20T10:05:00Z")
    for statuses in ([newer, older], [older, newer]):
        assert evaluate(frozenset({"ci/jenkins"}), [], statuses).failing == ["ci/jenkins"]


def test_combined_status_body_statuses() -> None:
    combined = example("repos/get-combined-status-for-ref.json")
    verdict = evaluate(frozenset({"continuous-integration/jenkins", "security/brakeman"}), [], combined["statuses"])
    assert verdict.state == "green"
    assert [i.summary for i in verdict.items] == [
        "Build has completed successfully",
        "Testing has completed successfully",
    ]


def test_missing_required_check_is_pending_not_failing() -> None:
    verdict = evaluate(frozenset({"build", "deploy-preview"}), [check_run("build", id=1)], [])
    assert verdict.state == "pending"
    assert verdict.missing == ["deploy-preview"] and verdict.pending == [] and verdict.failing == []
    missing = next(i for i in verdict.items if i.name == "deploy-preview")
    assert (missing.state, missing.source, missing.url) == (CheckState.MISSING, None, None)


def test_failing_beats_pending_and_missing() -> None:
    runs = [check_run("a", id=1, conclusion="failure"), check_run("b", id=2, status="in_progress", conclusion=None)]
    verdict = evaluate(frozenset({"a", "b", "c"}), runs, [])
    assert (verdict.state, verdict.failing, verdict.pending, verdict.missing) == ("failing", ["a"], ["b"], ["c"])


def test_a_name_may_be_a_check_run_or_a_status() -> None:
    verdict = evaluate(frozenset({"build", "ci/jenkins"}), [check_run("build", id=1)], [status("ci/jenkins", id=2)])
    assert verdict.state == "green"
    assert {i.name: i.source for i in verdict.items} == {"build": "check_run", "ci/jenkins": "status"}


@pytest.mark.parametrize(
    ("conclusion", "state", "expected"),
    [
        ("success", "failure", ("status", CheckState.FAILURE)),
        ("failure", "success", ("check_run", CheckState.FAILURE)),
        ("success", "pending", ("status", CheckState.PENDING)),
        ("success", "success", ("check_run", CheckState.SUCCESS)),
    ],
)
def test_a_name_reported_both_ways_takes_the_worse(
    conclusion: str, state: str, expected: tuple[str, CheckState]
) -> None:
    verdict = evaluate(
        frozenset({"build"}), [check_run("build", id=1, conclusion=conclusion)], [status("build", id=2, state=state)]
    )
    (item,) = verdict.items
    assert (item.source, item.state) == expected


def test_nothing_required_means_everything_reported_except_ignored() -> None:
    runs = [check_run("build", id=1), check_run(OWN_CHECK_NAME, id=2, status="in_progress", conclusion=None)]
    statuses = [status("ci/jenkins", id=3, state="pending")]
    verdict = evaluate(frozenset(), runs, statuses)
    assert verdict.required == {"build", "ci/jenkins"}
    assert verdict.state == "pending" and verdict.pending == ["ci/jenkins"]
    lenient = evaluate(frozenset(), runs, statuses, require_all_when_none=False)
    assert (lenient.state, lenient.items, lenient.required) == ("green", (), frozenset())
    assert evaluate(frozenset(), runs, statuses, ignore=["ci/jenkins", OWN_CHECK_NAME]).state == "green"


def test_nothing_reported_at_all_is_green_with_an_empty_table() -> None:
    verdict = evaluate(frozenset(), [], [])
    assert verdict == ChecksVerdict(state="green", items=(), required=frozenset())
    assert "No checks" in render_table(verdict) and "|" not in render_table(verdict)


def test_the_bots_own_check_never_blocks_itself_even_when_protection_requires_it() -> None:
    runs = [check_run(OWN_CHECK_NAME, id=1, conclusion="failure"), check_run("build", id=2)]
    verdict = evaluate(frozenset({OWN_CHECK_NAME, "build"}), runs, [])
    assert verdict.state == "green" and verdict.required == {"build"}


def test_requiring_only_the_bots_own_check_still_waits_for_ci() -> None:
    runs = [
        check_run(OWN_CHECK_NAME, id=1, status="in_progress", conclusion=None),
        check_run("ci", id=2, conclusion="failure"),
    ]
    assert evaluate(frozenset({OWN_CHECK_NAME}), runs, []).failing == ["ci"]
    assert evaluate(frozenset({OWN_CHECK_NAME}), runs, [], require_all_when_none=False).state == "green"


def test_reports_without_a_name_are_skipped() -> None:
    runs = [check_run("build", id=1), {"id": 2, "status": "completed", "conclusion": "failure"}]
    assert evaluate(frozenset(), runs, [{"id": 3, "state": "failure", "context": ""}]).state == "green"


check_runs_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.integers(0, 50),
            "name": st.sampled_from(["a", "b", "c", OWN_CHECK_NAME, "", "x|y"]),
            "status": st.sampled_from(["queued", "in_progress", "completed", "waiting", None]),
            "conclusion": st.one_of(st.none(), st.sampled_from(["success", "failure", "neutral", "skipped", "stale"])),
            "started_at": st.one_of(st.none(), st.just("garbage"), st.datetimes().map(lambda d: d.isoformat() + "Z")),
        }
    ),
    max_size=12,
)
statuses_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.none(), st.integers(0, 50)),
            "context": st.sampled_from(["a", "b", "ci", None]),
            "state": st.sampled_from(["success", "pending", "failure", "error"]),
            "updated_at": st.one_of(st.none(), st.datetimes().map(lambda d: d.isoformat())),
            "target_url": st.one_of(st.none(), st.text(max_size=20), st.just("https://ci/x (1)|")),
        }
    ),
    max_size=12,
)


@given(
    st.frozensets(st.sampled_from(["a", "b", "c", "ci", OWN_CHECK_NAME]), max_size=4),
    check_runs_strategy,
    statuses_strategy,
    st.booleans(),
)
def test_verdict_is_consistent_with_its_items(
    required: frozenset[str], runs: list[dict[str, Any]], statuses: list[dict[str, Any]], require_all: bool
) -> None:
    verdict = evaluate(required, runs, statuses, require_all_when_none=require_all)
    states = {i.state for i in verdict.items}
    assert verdict.all_green == all(s.passed for s in states)
    assert (verdict.state == "failing") == (CheckState.FAILURE in states)
    assert {i.name for i in verdict.items} == verdict.required
    assert OWN_CHECK_NAME not in verdict.required
    table = render_table(verdict)
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 4 for row in table.splitlines()[2:])


# ---- render_table ----------------------------------------------------------------------------------


def test_table_lists_failing_first_with_emoji_and_links() -> None:
    runs = [
        check_run("build", id=1),
        check_run("lint", id=2, conclusion="timed_out", output={"title": "Lint took too long", "summary": None}),
        check_run("test", id=3, status="in_progress", conclusion=None),
        check_run("docs", id=4, conclusion="skipped", html_url=None, details_url="https://docs.example.com/4"),
    ]
    verdict = evaluate(frozenset({"build", "lint", "test", "docs", "e2e"}), runs, [])
    assert render_table(verdict).splitlines() == [
        "| Check | State | Link |",
        "| --- | --- | --- |",
        "| lint | ❌ timed out: Lint took too long | [details](https://github.com/o/r/runs/2) |",
        "| e2e | ❔ expected, not reported yet |  |",
        "| test | ⏳ in progress | [details](https://github.com/o/r/runs/3) |",
        "| build | ✅ success | [details](https://github.com/o/r/runs/1) |",
        "| docs | ✅ skipped | [details](https://docs.example.com/4) |",
    ]


def test_table_escapes_names_and_neutralises_links() -> None:
    statuses = [
        status("a|b @octo/team *x*", id=1, state="failure", description="boom | <b>", target_url="javascript:alert(1)"),
        status("ok", id=2, target_url="https://ci.example.com/x (y)|z"),
    ]
    table = render_table(evaluate(frozenset(), [], statuses))
    rows = table.splitlines()
    assert rows[2] == "| a\\|b @\u200bocto/team \\*x\\* | ❌ failure: boom \\| \\<b\\> |  |"
    assert rows[3] == "| ok | ✅ success | [details](https://ci.example.com/x%20%28y%29%7Cz) |"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain name", "plain name"),
        ("a|b", "a\\|b"),
        ("`x`", "\\`x\\`"),
        ("line\nbreak", "line break"),
        ("@me", "@\u200bme"),
    ],
)
def test_escape_markdown(text: str, escaped: str) -> None:
    assert escape_markdown(text) == escaped


def test_long_failure_summaries_are_cut() -> None:
    run = check_run("build", id=1, conclusion="failure", output={"title": None, "summary": "x" * 500 + "\nmore"})
    row = render_table(evaluate(frozenset({"build"}), [run], [])).splitlines()[2]
    assert row.count("x") == 119 and "…" in row and "more" not in row
