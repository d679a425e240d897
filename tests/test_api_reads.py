"""The API's reads, answered from the store that webhooks keep current: a PR with its commits, reviews and
required checks, what changed since a SHA or a review, statuses and check runs; none of them asks GitHub."""

from __future__ import annotations

import json
from typing import Any

from bot.api.tokens import ApiTokens
from bot.store.base import Installation
from tests.fakes.github import FakeGitHub
from tests.scenario import INSTALLATION, REPO, Scenario
from tests.test_pr_state import (
    C1,
    HEAD,
    check_run_event,
    pull_event,
    review_event,
    scenario,
    status_event,
    step,
)

__all__ = ["scenario"]  # the PR-state scenario: PR 7 with commits C1..C3, required ci/build and lint


async def call(s: Scenario, path: str, token: str) -> tuple[int, dict[str, Any]]:
    response = await s.client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"})
    return response.status, json.loads(await response.text())


async def tracked(s: Scenario) -> str:
    await s.store.save_installation(Installation(id=INSTALLATION, account_login="octo-org", repositories=(REPO,)))
    await s.deliver("pull_request", pull_event(s.fake, "opened"))
    step(s)
    review_id = s.fake.add_review(REPO, 7, user_login="bob", state="APPROVED", commit_id=C1)
    await s.deliver("pull_request_review", review_event(s.fake, review_id))
    run_id = s.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    await s.deliver("check_run", check_run_event(s.fake, run_id))
    status_id = s.fake.add_status(REPO, HEAD, "lint", "failure", description="2 problems")
    await s.deliver("status", status_event(s.fake, status_id))
    token, _ = await ApiTokens(s.store, s.clock).create(name="mm", login="alice", repos=[REPO], scopes=["read"])
    return token


def requests(fake: FakeGitHub) -> int:
    return len(fake.requests)


async def test_reads_come_from_the_store_and_ask_github_nothing(scenario: Scenario) -> None:
    token = await tracked(scenario)
    before = requests(scenario.fake)
    status, pr = await call(scenario, f"/repos/{REPO}/prs/7", token)
    assert status == 200, pr
    assert (pr["title"], pr["author"], pr["state"], pr["head_sha"]) == ("Faster widgets", "alice", "open", HEAD)
    assert [c["sha"] for c in pr["commits"]][-1] == HEAD and len(pr["commits"]) == 3
    assert [(r["login"], r["state"]) for r in pr["reviews"]] == [("bob", "APPROVED")]
    assert {(c["name"], c["state"]) for c in pr["required_checks"]} == {("ci/build", "success"), ("lint", "failure")}
    assert pr["synced_at"] and pr["release"] is None
    status, page = await call(scenario, f"/prs?repo={REPO}", token)
    assert status == 200 and [p["number"] for p in page["items"]] == [7] and page["next_cursor"] is None
    status, statuses = await call(scenario, f"/repos/{REPO}/commits/{HEAD}/statuses", token)
    assert [(s["context"], s["state"]) for s in statuses["statuses"]] == [("lint", "failure")]
    status, runs = await call(scenario, f"/repos/{REPO}/commits/{HEAD}/check-runs", token)
    assert [(r["name"], r["conclusion"]) for r in runs["check_runs"]] == [("ci/build", "success")]
    assert requests(scenario.fake) == before  # not one GitHub request for any of it


async def test_what_changed_since_a_sha_and_since_a_review(scenario: Scenario) -> None:
    token = await tracked(scenario)
    status, since_c1 = await call(scenario, f"/repos/{REPO}/prs/7/changes?since_sha={C1[:7]}", token)
    assert status == 200 and len(since_c1["commits"]) == 2 and since_c1["since_sha"].startswith(C1[:7])
    status, since_bob = await call(scenario, f"/repos/{REPO}/prs/7/changes?reviewer=bob", token)
    assert status == 200 and since_bob["since_review"]["login"] == "bob" and len(since_bob["commits"]) == 2
    assert {s["context"] for s in since_bob["statuses"]} == {"lint"}
    status, problem = await call(scenario, f"/repos/{REPO}/prs/7/changes?reviewer=carol", token)
    assert status == 422 and "carol" in problem["detail"]
    status, problem = await call(scenario, f"/repos/{REPO}/prs/7/changes?since_sha=abcdef1", token)
    assert status == 422 and "abcdef1" in problem["detail"]
    status, problem = await call(scenario, f"/repos/{REPO}/prs/7/changes?since_sha=xyz", token)
    assert status == 400 and "since_sha" in problem["detail"]


async def test_unknown_things_are_404_with_a_precise_detail(scenario: Scenario) -> None:
    token = await tracked(scenario)
    status, problem = await call(scenario, f"/repos/{REPO}/commits/{'e' * 40}/statuses", token)
    assert status == 404 and "no check results" in problem["detail"]
    status, problem = await call(scenario, "/repos/acme/api/prs/1", token)
    assert status == 404 and "no repository acme/api" in problem["detail"]
