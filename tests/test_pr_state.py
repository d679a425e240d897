"""What the bot keeps per PR: the pure record and its questions, then webhooks and sweeps end to end."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot import prstate
from bot.app import make_app
from bot.config import Settings
from bot.prstate import (
    Changes,
    ChangesError,
    CheckRunInfo,
    CommitInfo,
    LabelEvent,
    PullState,
    ReviewInfo,
    ShaChecks,
    StatusInfo,
    changes_since,
    required_verdict,
)
from tests.fakes.github import FakeGitHub
from tests.helpers import webhook_body
from tests.scenario import INSTALLATION, REPO, Clock, Scenario, _retarget, suite_completed

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
C1, C2, C3, C4 = ("1" * 8 + "a" * 32, "2" * 8 + "b" * 32, "3" * 8 + "c" * 32, "4" * 8 + "d" * 32)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def commit(sha: str, minutes: int) -> CommitInfo:
    return CommitInfo(sha=sha, message=f"commit {sha[:1]}\n\nbody", author="alice", authored_at=at(minutes))


def review(review_id: int, login: str, sha: str | None, minutes: int, state: str = "APPROVED") -> ReviewInfo:
    return ReviewInfo(id=review_id, login=login, state=state, commit_id=sha, submitted_at=at(minutes))


def label(minutes: int, name: str, action: str = "labeled") -> LabelEvent:
    return LabelEvent(at=at(minutes), action=action, label=name, actor="carol")


PULL = PullState(
    repo=REPO,
    number=7,
    installation_id=INSTALLATION,
    title="Faster widgets",
    author="alice",
    state="open",
    draft=False,
    base="main",
    head_sha=C4,
    labels=("Ready for Prod",),
    commits=(commit(C1, 0), commit(C2, 10), commit(C3, 20), commit(C4, 30)),
    reviews=(review(1, "bob", C2, 15, "CHANGES_REQUESTED"), review(2, "dave", C3, 25), review(3, "Bob", C3, 26)),
    label_events=(label(5, "wip"), label(22, "wip", "unlabeled"), label(35, "Ready for Prod")),
    required_checks=("ci/build", "lint", "security"),
    created_at=at(0),
    updated_at=at(35),
    synced_at=at(40),
)
HEAD_CHECKS = ShaChecks(
    repo=REPO,
    sha=C4,
    check_runs=(CheckRunInfo(9, "ci/build", "completed", "success", "github-actions", "https://ci/9", at(31), at(33)),),
    statuses=(StatusInfo("lint", "failure", "2 problems", "https://lint/4", at(32), id=4),),
    synced_at=at(38),
)


# The pure record: what changed since a SHA or a review.


@pytest.mark.parametrize(
    ("since", "commits", "labels"),
    [
        (C1, [C2, C3, C4], ["wip labeled", "wip unlabeled", "Ready for Prod labeled"]),
        (C3[:7], [C4], ["wip unlabeled", "Ready for Prod labeled"]),  # a unique prefix of 7
        (C3.upper(), [C4], ["wip unlabeled", "Ready for Prod labeled"]),
        (C4, [], ["Ready for Prod labeled"]),  # the head itself: nothing new but what happened since
    ],
)
def test_changes_since_a_sha(since: str, commits: list[str], labels: list[str]) -> None:
    found = changes_since(PULL, HEAD_CHECKS, sha=since)
    assert isinstance(found, Changes), found
    assert [c.sha for c in found.commits] == commits
    assert [f"{e.label} {e.action}" for e in found.labels] == labels
    assert found.since_sha in (C1, C3, C4) and found.head_sha == C4 and found.since_review is None
    assert found.checks == HEAD_CHECKS
    assert found.synced_at == at(38)  # the older of the record's and the checks' times


@pytest.mark.parametrize(
    ("reviewer", "review_id", "commits", "labels"),
    [
        ("bob", 3, [C4], ["Ready for Prod labeled"]),  # the LAST of bob's reviews (as "Bob", at C3)
        ("@BOB", 3, [C4], ["Ready for Prod labeled"]),
        ("dave", 2, [C4], ["Ready for Prod labeled"]),  # label events after the review's time (25)
    ],
)
def test_changes_since_a_review(reviewer: str, review_id: int, commits: list[str], labels: list[str]) -> None:
    found = changes_since(PULL, None, reviewer=reviewer)
    assert isinstance(found, Changes), found
    assert found.since_review is not None and found.since_review.id == review_id and found.since_sha == C3
    assert [c.sha for c in found.commits] == commits
    assert [f"{e.label} {e.action}" for e in found.labels] == labels
    assert found.checks is None and found.synced_at == PULL.synced_at


def test_label_events_count_from_the_time_of_the_commit() -> None:
    found = changes_since(PULL, None, sha=C2)  # authored at 10: the wip label came off at 22
    assert isinstance(found, Changes)
    assert [(e.label, e.action) for e in found.labels] == [("wip", "unlabeled"), ("Ready for Prod", "labeled")]


FORCE_PUSHED = replace(PULL, commits=(commit(C1, 0), commit(C4, 30)))  # C2 and C3 rewritten away
AMBIGUOUS = replace(PULL, commits=(*PULL.commits, commit("3" * 8 + "f" * 32, 31)))
STALE = replace(PULL, head_sha="5" * 40, commits_complete=False)


@pytest.mark.parametrize(
    ("pull", "kwargs", "message"),
    [
        (PULL, {}, "give exactly one of sha or reviewer"),
        (PULL, {"sha": C1, "reviewer": "bob"}, "give exactly one of sha or reviewer"),
        (PULL, {"sha": "111"}, "'111' is too short: give at least 7 characters of a commit SHA"),
        (
            PULL,
            {"sha": "abcdef0"},
            "abcdef0 is not a commit of octo-org/widgets#7 (its commits are 1111111, 2222222, 3333333, 4444444)",
        ),
        (PULL, {"reviewer": "erin"}, "erin has not reviewed octo-org/widgets#7"),
        (
            AMBIGUOUS,
            {"sha": "3333333"},
            "3333333 matches 2 commits of octo-org/widgets#7 (33333333ccc, 33333333fff): give more characters",
        ),
        (
            FORCE_PUSHED,
            {"reviewer": "bob"},
            "Bob last reviewed octo-org/widgets#7 at 3333333, which is no longer one of its commits:"
            " a force-push dropped it (its commits are 1111111, 4444444)",
        ),
        (
            FORCE_PUSHED,
            {"sha": C2[:10]},
            "22222222bb is no longer a commit of octo-org/widgets#7: bob reviewed it, and a force-push dropped it"
            " since (its commits are 1111111, 4444444)",
        ),
        (
            STALE,
            {"sha": "5555555"},
            "5555555 is not a commit of octo-org/widgets#7 (its commits are 1111111, 2222222, 3333333, 4444444);"
            " that list is out of date (a push the bot has not read yet), so a refresh may find it",
        ),
    ],
)
def test_changes_since_says_precisely_why_it_cannot_answer(
    pull: PullState, kwargs: dict[str, str], message: str
) -> None:
    found = changes_since(pull, None, **kwargs)
    assert found == ChangesError(message)


def test_checks_of_another_commit_are_not_the_heads() -> None:
    found = changes_since(PULL, replace(HEAD_CHECKS, sha=C3), sha=C3)
    assert isinstance(found, Changes) and found.checks is None and found.synced_at == PULL.synced_at


def test_required_verdict_names_each_required_check_with_its_state_and_link() -> None:
    assert required_verdict(PULL, HEAD_CHECKS) == [
        {"name": "ci/build", "state": "success", "url": "https://ci/9"},
        {"name": "lint", "state": "failure", "url": "https://lint/4"},
        {"name": "security", "state": "missing", "url": None},
    ]
    queued = replace(HEAD_CHECKS, check_runs=(replace(HEAD_CHECKS.check_runs[0], status="queued", conclusion=None),))
    assert required_verdict(PULL, queued)[0]["state"] == "pending"
    # Another commit's results say nothing of the head.
    assert {v["state"] for v in required_verdict(PULL, replace(HEAD_CHECKS, sha=C3))} == {"missing"}


def test_a_newer_run_of_a_name_replaces_the_older_and_a_late_created_does_not_undo_completed() -> None:
    first = CheckRunInfo(10, "ci/build", "completed", "failure", "github-actions", None, at(1), at(2))
    rerun = replace(first, id=11, status="in_progress", conclusion=None, completed_at=None)
    checks = prstate.with_check_runs(prstate.empty_checks(REPO, C4, at(0)), [first], at(3))
    checks = prstate.with_check_runs(checks, [rerun], at(4))
    assert checks.check_runs == (rerun,) and checks.synced_at == at(4)
    done = replace(rerun, status="completed", conclusion="success", completed_at=at(5))
    checks = prstate.with_check_runs(checks, [done, rerun, first], at(6))  # late deliveries, any order
    assert checks.check_runs == (done,)
    old = StatusInfo("lint", "failure", None, None, at(1), id=5)
    new = StatusInfo("lint", "success", None, None, at(2), id=6)
    assert prstate.with_statuses(checks, [new, old], at(7)).statuses == (new,)


def test_records_round_trip_through_their_documents() -> None:
    doc = json.loads(json.dumps(prstate.pull_state_to_doc(PULL)))
    assert prstate.pull_state_from_doc(doc, 3) == replace(PULL, version=3)
    assert prstate.sha_checks_from_doc(json.loads(json.dumps(prstate.sha_checks_to_doc(HEAD_CHECKS)))) == HEAD_CHECKS
    found = changes_since(PULL, HEAD_CHECKS, reviewer="bob")
    assert isinstance(found, Changes)
    assert prstate.changes_from_doc(json.loads(json.dumps(prstate.changes_to_doc(found)))) == found


def test_an_older_payload_changes_nothing() -> None:
    body = {
        "number": 7,
        "title": "Old title",
        "user": {"login": "alice"},
        "state": "open",
        "head": {"sha": C3},
        "base": {"ref": "main"},
        "labels": [],
        "updated_at": "2026-11-20T09:30:00Z",  # before the record's 09:35
    }
    assert prstate.pull_from_github(body, repo=REPO, installation_id=99, now=at(50), current=PULL) is PULL
    body["updated_at"] = "2026-11-20T09:45:00Z"
    newer = prstate.pull_from_github(body, repo=REPO, installation_id=99, now=at(50), current=PULL)
    assert (newer.title, newer.head_sha, newer.labels, newer.synced_at) == ("Old title", C3, (), at(50))
    assert newer.commits_complete is False  # the head moved: the commits must be read again


def test_webhook_review_states_read_like_the_rest_apis() -> None:
    data = json.loads(webhook_body("pull_request_review", "submitted"))
    parsed = prstate.review_from_github(data["review"])
    assert parsed == ReviewInfo(
        id=237895671,
        login="Codertocat",
        state="COMMENTED",
        commit_id="ec26c3e57ca3a959ca5aad62de7213c562f8c821",
        submitted_at=datetime(2019, 5, 15, 15, 20, 38, tzinfo=UTC),
    )
    assert prstate.review_from_github({**data["review"], "state": "PENDING"}) is None


# End to end: the real app and worker, the fake GitHub, signed webhooks.

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
HEAD = C3
TRACKER_READS = (
    "pulls/get",
    "pulls/list-commits",
    "pulls/list-reviews",
    "checks/list-for-ref",
    "repos/list-commit-statuses-for-ref",
)


@dataclass
class GitHubTime:
    """The fake GitHub's clock: real time (its tokens and JWTs are checked against it) plus a step each
    change, so GitHub's one-second timestamps order the changes of one fast test."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def step(self) -> None:
        self.offset += timedelta(seconds=2)


def template(event: str, name: str, sender: str) -> dict[str, Any]:
    return _retarget(json.loads(webhook_body(event, name)), REPO, sender)


def pull_event(fake: FakeGitHub, action: str, *, sender: str = "alice", **extra: Any) -> dict[str, Any]:
    """A pull_request webhook carrying the PR as the fake GitHub has it now."""
    data = template("pull_request", "opened", sender)
    data.update(action=action, number=7, pull_request=fake.pull(REPO, 7), **extra)
    return data


def review_event(fake: FakeGitHub, review_id: int, action: str = "submitted") -> dict[str, Any]:
    node = fake.review(review_id)
    data = template("pull_request_review", "submitted", node["user"]["login"])
    data.update(action=action, pull_request=fake.pull(REPO, 7))
    data["review"] = {**node, "state": node["state"].lower()}  # webhooks spell the state in lower case
    return data


def check_run_event(fake: FakeGitHub, run_id: int, action: str = "completed") -> dict[str, Any]:
    data = template("check_run", "completed", "github-actions[bot]")
    data.update(action=action, check_run=fake.check_run(run_id))
    return data


def status_event(fake: FakeGitHub, status_id: int) -> dict[str, Any]:
    data = template("status", "event.with-installation", "ci-bot")
    node = fake.status(status_id)
    data.update({k: node[k] for k in ("id", "state", "context", "description", "target_url", "updated_at")})
    data["sha"] = fake.statuses[status_id].sha
    return data


@pytest.fixture
async def scenario(aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub) -> Scenario:
    github_time = GitHubTime()
    fake_github.clock = github_time
    for n, sha in enumerate((C1, C2, C3)):
        fake_github.set_commit(sha, f"Step {n + 1}\n\nWhy it matters.", author_login="alice")
    fake_github.set_commit(C2, "Step 2 by a contributor without an account", author_login=None, author_name="Zed")
    fake_github.add_pull(
        REPO, 7, head_sha=HEAD, commits=[C1, C2, C3], title="Faster widgets", user_login="alice", labels=["bug"]
    )
    fake_github.set_permission(REPO, "alice", "write")
    fake_github.set_branch_protection(REPO, "main", ["ci/build"])
    checks = {"required_status_checks": [{"context": "lint"}], "strict_required_status_checks_policy": False}
    fake_github.set_branch_rules(REPO, "main", [{"type": "required_status_checks", "parameters": checks}])
    clock = Clock()
    client = await aiohttp_client(make_app(app_settings, clock=clock))
    return Scenario(client, app_settings, fake_github, clock)


def step(scenario: Scenario) -> None:
    clock = scenario.fake.clock
    assert isinstance(clock, GitHubTime)
    clock.step()


def reads(fake: FakeGitHub) -> dict[str, int]:
    return {op: len(fake.calls(op)) for op in (*TRACKER_READS, "repos/get-branch", "repos/get-branch-rules")}


async def pr_events(scenario: Scenario, after: int = 0) -> list[dict[str, Any]]:
    return [e.data for e in await scenario.store.read_events(after=after) if e.topic == "pr"]


async def test_an_opened_pr_is_recorded_with_its_commits_and_required_checks(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", pull_event(scenario.fake, "opened"))
    pull = await scenario.store.get_pull_state(REPO, 7)
    assert pull is not None
    assert (pull.title, pull.author, pull.state, pull.draft, pull.base, pull.head_sha) == (
        "Faster widgets",
        "alice",
        "open",
        False,
        "main",
        HEAD,
    )
    assert pull.labels == ("bug",) and pull.installation_id == INSTALLATION
    assert [(c.sha, c.message.splitlines()[0], c.author) for c in pull.commits] == [
        (C1, "Step 1", "alice"),
        (C2, "Step 2 by a contributor without an account", "Zed"),  # no account: the git name
        (C3, "Step 3", "alice"),
    ]
    assert all(c.authored_at is not None for c in pull.commits) and pull.commits_complete
    assert pull.required_checks == ("ci/build", "lint")  # protection and rulesets
    assert pull.version == 1 and pull.synced_at == scenario.clock()
    # One list of commits and the base's rules: nothing the payload already said.
    counts = reads(scenario.fake)
    assert counts["pulls/list-commits"] == 1 and counts["pulls/get"] == 0 and counts["pulls/list-reviews"] == 0
    assert await pr_events(scenario) == [{"repo": REPO, "pr": 7, "state": "open", "head_sha": HEAD, "version": 1}]
    assert scenario.fake.violations == []


async def test_label_changes_review_and_checks_cost_no_reads_and_reading_the_record_none(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", pull_event(scenario.fake, "opened"))
    before = reads(scenario.fake)

    step(scenario)
    scenario.fake.label_pull(REPO, 7, "needs-qa")
    await scenario.deliver(
        "pull_request", pull_event(scenario.fake, "labeled", sender="carol", label={"name": "needs-qa"})
    )
    step(scenario)
    scenario.fake.unlabel_pull(REPO, 7, "bug")
    await scenario.deliver(
        "pull_request", pull_event(scenario.fake, "unlabeled", sender="carol", label={"name": "bug"})
    )

    step(scenario)
    review_id = scenario.fake.add_review(REPO, 7, user_login="bob", state="APPROVED", commit_id=HEAD)
    await scenario.deliver("pull_request_review", review_event(scenario.fake, review_id))

    run_id = scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="in_progress", conclusion=None)
    await scenario.deliver("check_run", check_run_event(scenario.fake, run_id, "created"))
    step(scenario)
    rerun = scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")
    await scenario.deliver("check_run", check_run_event(scenario.fake, rerun))
    await scenario.deliver("check_run", check_run_event(scenario.fake, run_id, "created"))  # late, older: ignored
    status_id = scenario.fake.add_status(REPO, HEAD, "lint", "failure", description="2 problems")
    await scenario.deliver("status", status_event(scenario.fake, status_id))

    assert reads(scenario.fake) == before  # every change came in its payload
    requests = len(scenario.fake.requests)
    pull = await scenario.store.get_pull_state(REPO, 7)
    checks = await scenario.store.get_sha_checks(REPO, HEAD)
    assert pull is not None and checks is not None
    verdict = required_verdict(pull, checks)
    changes = changes_since(pull, checks, reviewer="bob")
    assert len(scenario.fake.requests) == requests  # reading what the bot knows asks GitHub nothing

    assert pull.labels == ("needs-qa",)
    assert [(e.action, e.label, e.actor) for e in pull.label_events] == [
        ("labeled", "needs-qa", "carol"),
        ("unlabeled", "bug", "carol"),
    ]
    assert [(r.login, r.state, r.commit_id) for r in pull.reviews] == [("bob", "APPROVED", HEAD)]
    assert [(r.id, r.status, r.conclusion, r.app) for r in checks.check_runs] == [
        (rerun, "completed", "success", "github-actions")
    ]
    assert [(s.context, s.state, s.description) for s in checks.statuses] == [("lint", "failure", "2 problems")]
    assert [(v["name"], v["state"]) for v in verdict] == [("ci/build", "success"), ("lint", "failure")]
    assert isinstance(changes, Changes) and changes.commits == () and changes.checks == checks
    # The change feed heard of every change, checks included (for the PR whose head it is).
    events = await pr_events(scenario)
    assert [e.get("change") for e in events] == [None, None, None, None, "checks", "checks", "checks"]
    assert [e["version"] for e in events] == [1, 2, 3, 4, 4, 4, 4]
    assert scenario.fake.violations == []


async def test_a_push_moves_the_head_and_reads_the_commits_again(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", pull_event(scenario.fake, "opened"))
    step(scenario)
    review_id = scenario.fake.add_review(REPO, 7, user_login="bob", state="CHANGES_REQUESTED", commit_id=HEAD)
    await scenario.deliver("pull_request_review", review_event(scenario.fake, review_id))
    step(scenario)
    scenario.fake.push_to_pull(REPO, 7, C4, message="Address review")
    await scenario.deliver("pull_request", pull_event(scenario.fake, "synchronize", before=HEAD, after=C4))

    pull = await scenario.store.get_pull_state(REPO, 7)
    assert pull is not None and pull.head_sha == C4 and pull.commits_complete
    assert [c.sha for c in pull.commits] == [C1, C2, C3, C4]
    assert len(scenario.fake.calls("pulls/list-commits")) == 2
    changes = changes_since(pull, await scenario.store.get_sha_checks(REPO, C4), reviewer="bob")
    assert isinstance(changes, Changes)
    assert [(c.sha, c.message) for c in changes.commits] == [(C4, "Address review")]
    assert (await pr_events(scenario))[-1] == {"repo": REPO, "pr": 7, "state": "open", "head_sha": C4, "version": 3}

    # A force-push rewrites history: bob's reviewed commit is gone, and the answer says so.
    step(scenario)
    scenario.fake.force_push_to_pull(REPO, 7, [C1, "5" * 40])
    await scenario.deliver("pull_request", pull_event(scenario.fake, "synchronize", before=C4, after="5" * 40))
    pull = await scenario.store.get_pull_state(REPO, 7)
    assert pull is not None
    found = changes_since(pull, None, reviewer="bob")
    assert isinstance(found, ChangesError) and "a force-push dropped it" in found.message
    assert scenario.fake.violations == []


async def test_a_pr_first_seen_mid_life_is_read_whole(scenario: Scenario) -> None:
    review_id = scenario.fake.add_review(REPO, 7, user_login="bob", state="COMMENTED", commit_id=C2)
    scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="failure")
    scenario.fake.add_status(REPO, HEAD, "lint", "pending")
    step(scenario)
    scenario.fake.label_pull(REPO, 7, "needs-qa")
    await scenario.deliver("pull_request", pull_event(scenario.fake, "labeled", label={"name": "needs-qa"}))

    pull = await scenario.store.get_pull_state(REPO, 7)
    checks = await scenario.store.get_sha_checks(REPO, HEAD)
    assert pull is not None and checks is not None
    assert [c.sha for c in pull.commits] == [C1, C2, C3]
    assert [(r.id, r.login, r.state) for r in pull.reviews] == [(review_id, "bob", "COMMENTED")]
    assert [(e.action, e.label) for e in pull.label_events] == [("labeled", "needs-qa")]
    assert [(r.name, r.conclusion) for r in checks.check_runs] == [("ci/build", "failure")]
    assert [(s.context, s.state) for s in checks.statuses] == [("lint", "pending")]
    assert [v["state"] for v in required_verdict(pull, checks)] == ["failure", "pending"]
    assert scenario.fake.violations == []


async def test_the_sweep_catches_what_webhooks_missed_and_confirms_the_rest_for_free(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", pull_event(scenario.fake, "opened"))
    synced = scenario.clock()
    step(scenario)
    scenario.fake.set_pull_title(REPO, 7, "Faster widgets, now with sprockets")  # its webhook is lost
    scenario.clock.advance(minutes=10)

    found = await scenario.worker.reconcile()
    pull = await scenario.store.get_pull_state(REPO, 7)
    assert pull is not None and pull.title == "Faster widgets, now with sprockets"
    assert pull.synced_at == scenario.clock() > synced and found == {}  # (no release was involved)
    assert (await pr_events(scenario))[-1]["version"] == 2

    # Nothing changed since: four probes GitHub answers 304 (no rate limit), no reads, no feed entry.
    scenario.clock.advance(minutes=10)
    first = len(scenario.fake.requests)
    events = await pr_events(scenario)
    assert await scenario.worker.reconcile() == {}
    probes = scenario.fake.requests[first:]
    assert [r.status for r in probes] == [304, 304, 304, 304]
    pull = await scenario.store.get_pull_state(REPO, 7)
    assert pull is not None and pull.synced_at == scenario.clock() and pull.version == 3
    assert await pr_events(scenario) == events
    assert scenario.fake.violations == []


async def test_a_completed_suite_on_a_heads_commit_reads_its_runs_again(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", pull_event(scenario.fake, "opened"))
    scenario.fake.add_check_run(REPO, HEAD, "ci/build", status="completed", conclusion="success")  # webhook lost
    await scenario.deliver("check_suite", suite_completed(HEAD))
    checks = await scenario.store.get_sha_checks(REPO, HEAD)
    assert checks is not None and [(r.name, r.conclusion) for r in checks.check_runs] == [("ci/build", "success")]
    assert (await pr_events(scenario))[-1] == {
        "repo": REPO,
        "pr": 7,
        "state": "open",
        "head_sha": HEAD,
        "version": 1,
        "change": "checks",
    }
    # A commit that is no followed PR's head: nothing to read again.
    calls = len(scenario.fake.calls("checks/list-for-ref"))
    await scenario.deliver("check_suite", suite_completed(C1))
    assert len(scenario.fake.calls("checks/list-for-ref")) == calls
    assert await scenario.store.get_sha_checks(REPO, C1) is None
    assert scenario.fake.violations == []


async def test_a_pr_the_sweep_cannot_read_waits_instead_of_going_first_every_time(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", pull_event(scenario.fake, "opened"))
    scenario.clock.advance(minutes=10)
    scenario.fake.fail_next("GET", r"/repos/octo-org/widgets/pulls/7$", 404, times=2)  # the repo left the App
    scenario.fake.set_pull_title(REPO, 7, "Renamed meanwhile")
    await scenario.worker.reconcile()
    requests = len(scenario.fake.requests)
    scenario.clock.advance(minutes=10)
    await scenario.worker.reconcile()
    assert len(scenario.fake.requests) == requests  # set aside for an hour
    scenario.clock.advance(hours=1)
    await scenario.worker.reconcile()
    pull = await scenario.store.get_pull_state(REPO, 7)
    assert pull is not None and pull.title == "Renamed meanwhile" and pull.synced_at == scenario.clock()


async def test_a_release_and_the_record_both_catch_a_lost_push_in_one_sweep(scenario: Scenario) -> None:
    await scenario.deliver("pull_request", pull_event(scenario.fake, "opened"))
    step(scenario)
    scenario.fake.label_pull(REPO, 7, "Ready for Prod")
    await scenario.deliver("pull_request", pull_event(scenario.fake, "labeled", label={"name": "Ready for Prod"}))
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.head_sha == HEAD
    scenario.clock.advance(minutes=10)
    assert await scenario.worker.reconcile() == {}  # learns the ETags; nothing to catch

    step(scenario)
    scenario.fake.push_to_pull(REPO, 7, C4, message="Sneaky fix")  # its webhook is lost
    scenario.clock.advance(minutes=10)
    # The release and the record probe the same URLs: each still sees the push the other handled.
    assert await scenario.worker.reconcile() == {"pushed": 1}
    pull = await scenario.store.get_pull_state(REPO, 7)
    assert pull is not None and pull.head_sha == C4 and [c.message for c in pull.commits][-1] == "Sneaky fix"
    release = await scenario.store.get_active_release(REPO, 7)
    assert release is not None and release.head_sha == C4

    # The new head's check runs and statuses are probed for the first time (GitHub answers in full), and then
    # nothing changed: both confirm for free.
    scenario.clock.advance(minutes=10)
    assert await scenario.worker.reconcile() == {}
    scenario.clock.advance(minutes=10)
    first = len(scenario.fake.requests)
    assert await scenario.worker.reconcile() == {}
    assert {r.status for r in scenario.fake.requests[first:]} == {304}
    assert scenario.fake.violations == []


async def test_check_results_arriving_together_are_all_kept(tmp_path: Any) -> None:
    """Webhooks of one commit handled at once (the worker runs many): none overwrites another."""
    import asyncio

    from bot.store.sqlite import SqliteStore
    from bot.tracker import PullTracker

    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        tracker = PullTracker(store, None, lambda: datetime(2026, 11, 26, tzinfo=UTC))  # type: ignore[arg-type]
        sha = "a" * 40

        def run(i: int) -> dict[str, Any]:
            node = {"id": i, "name": f"job{i}", "status": "completed", "conclusion": "success", "head_sha": sha}
            return {"repository": {"full_name": REPO}, "installation": {"id": 1}, "check_run": node}

        def status(i: int) -> dict[str, Any]:
            return {
                "repository": {"full_name": REPO},
                "installation": {"id": 1},
                "sha": sha,
                "id": i,
                "state": "success",
                "context": f"ctx{i}",
                "updated_at": "2026-11-26T00:00:00Z",
            }

        await asyncio.gather(*(tracker.on_check_run(None, run(i)) for i in range(1, 6)))  # type: ignore[arg-type]
        await asyncio.gather(*(tracker.on_status(None, status(i)) for i in range(1, 6)))  # type: ignore[arg-type]
        checks = await store.get_sha_checks(REPO, sha)
        assert checks is not None
        assert sorted(r.name for r in checks.check_runs) == [f"job{i}" for i in range(1, 6)]
        assert sorted(s.context for s in checks.statuses) == [f"ctx{i}" for i in range(1, 6)]
    finally:
        await store.close()
