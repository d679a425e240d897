"""What the bot knows about each PR and its commits' checks, and what changed since a SHA or a review: pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .checks import CheckState, evaluate

MAX_LISTED_COMMITS = 250  # GET .../pulls/{n}/commits lists at most this many
MAX_LABEL_EVENTS = 500  # a PR's label history keeps the newest this many
_MIN_PREFIX = 7
_SHOWN_SHAS = 10  # an error lists at most this many of the PR's commits


@dataclass(frozen=True, slots=True)
class CommitInfo:
    sha: str
    message: str
    author: str | None  # login if known, else the git author name
    authored_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReviewInfo:
    id: int
    login: str
    state: str  # APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED
    commit_id: str | None
    submitted_at: datetime | None


@dataclass(frozen=True, slots=True)
class LabelEvent:
    at: datetime
    action: str  # "labeled" | "unlabeled"
    label: str
    actor: str | None


@dataclass(frozen=True, slots=True)
class CheckRunInfo:
    id: int
    name: str
    status: str
    conclusion: str | None
    app: str | None  # app slug
    details_url: str | None  # the run's details_url, else its page on GitHub
    started_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class StatusInfo:
    context: str
    state: str
    description: str | None
    target_url: str | None
    updated_at: datetime | None
    id: int = 0  # GitHub's id of the status: a newer status of a context has a greater one


@dataclass(frozen=True, slots=True)
class ShaChecks:
    """The latest check run per name and the latest status per context reported on one commit."""

    repo: str
    sha: str
    check_runs: tuple[CheckRunInfo, ...]
    statuses: tuple[StatusInfo, ...]
    synced_at: datetime


@dataclass(frozen=True, slots=True)
class PullState:
    repo: str
    number: int
    installation_id: int
    title: str
    author: str
    state: str  # "open" | "closed" | "merged"
    draft: bool
    base: str
    head_sha: str
    labels: tuple[str, ...]
    commits: tuple[CommitInfo, ...]  # oldest first, as GitHub lists them
    reviews: tuple[ReviewInfo, ...]  # oldest first
    label_events: tuple[LabelEvent, ...]  # oldest first
    required_checks: tuple[str, ...]  # names required on the base (protection + rulesets), as last read
    created_at: datetime | None
    updated_at: datetime | None  # GitHub's updated_at of the PR
    synced_at: datetime  # when this record last matched GitHub (a webhook or a full read)
    commits_complete: bool = True  # False when the commit list is known to be stale or cut short
    version: int = 0

    @property
    def key(self) -> str:
        return f"{self.repo}#{self.number}"


@dataclass(frozen=True, slots=True)
class Changes:
    head_sha: str
    since_sha: str | None
    since_review: ReviewInfo | None
    commits: tuple[CommitInfo, ...]  # commits after since_sha (or after the review's commit_id), oldest first
    labels: tuple[LabelEvent, ...]  # label events after the time of that commit/review
    checks: ShaChecks | None  # the head's latest check results
    synced_at: datetime  # the older of the PR record's and the head checks' synced_at


@dataclass(frozen=True, slots=True)
class ChangesError:
    message: str


# Reading GitHub's bodies (webhook payloads and REST answers share these shapes).


def parse_time(value: object) -> datetime | None:
    """GitHub's timestamps ("...Z" or "+00:00") as aware UTC datetimes; None for anything else."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _login(user: object) -> str | None:
    if isinstance(user, Mapping) and isinstance(user.get("login"), str) and user["login"]:
        return str(user["login"])
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def commit_from_github(node: Mapping[str, Any]) -> CommitInfo:
    """An item of GET .../pulls/{n}/commits."""
    commit = node.get("commit") or {}
    git_author = commit.get("author") or {}
    return CommitInfo(
        sha=str(node["sha"]),
        message=str(commit.get("message") or ""),
        author=_login(node.get("author")) or _text(git_author.get("name")),
        authored_at=parse_time(git_author.get("date")),
    )


def review_from_github(node: Mapping[str, Any]) -> ReviewInfo | None:
    """A review of GET .../pulls/{n}/reviews or a pull_request_review webhook; None for a pending one
    (a draft only its author sees)."""
    state = str(node.get("state") or "").upper()
    if state == "PENDING" or not state:
        return None
    return ReviewInfo(
        id=int(node["id"]),
        login=_login(node.get("user")) or "ghost",
        state=state,
        commit_id=_text(node.get("commit_id")),
        submitted_at=parse_time(node.get("submitted_at")),
    )


def check_run_from_github(run: Mapping[str, Any]) -> CheckRunInfo:
    app = run.get("app")
    return CheckRunInfo(
        id=int(run["id"]),
        name=str(run["name"]),
        status=str(run.get("status") or "queued"),
        conclusion=_text(run.get("conclusion")),
        app=_text(app.get("slug")) if isinstance(app, Mapping) else None,
        details_url=_text(run.get("details_url")) or _text(run.get("html_url")),
        started_at=parse_time(run.get("started_at")),
        completed_at=parse_time(run.get("completed_at")),
    )


def status_from_github(status: Mapping[str, Any]) -> StatusInfo:
    """A commit status from GET .../commits/{ref}/statuses or a `status` webhook."""
    return StatusInfo(
        context=str(status.get("context") or "default"),
        state=str(status["state"]),
        description=_text(status.get("description")),
        target_url=_text(status.get("target_url")),
        updated_at=parse_time(status.get("updated_at") or status.get("created_at")),
        id=int(status.get("id") or 0),
    )


def pull_state_of(pr: Mapping[str, Any]) -> str:
    if pr.get("merged") or pr.get("merged_at"):
        return "merged"
    return "closed" if pr.get("state") == "closed" else "open"


def pull_from_github(
    pr: Mapping[str, Any], *, repo: str, installation_id: int, now: datetime, current: PullState | None = None
) -> PullState:
    """The record brought up to a PR body from GitHub (a webhook's `pull_request` or GET .../pulls/{n}).

    Webhooks arrive out of order: a body older than the record (by GitHub's updated_at) changes nothing.
    A new head leaves the commit list marked stale until the commits are read (`with_commits`)."""
    updated = parse_time(pr.get("updated_at"))
    if current is not None and updated is not None and current.updated_at is not None and updated < current.updated_at:
        return current
    head = str(pr["head"]["sha"])
    base = str(pr["base"]["ref"])
    labels = tuple(str(label["name"]) for label in pr.get("labels") or () if isinstance(label, Mapping))
    fields: dict[str, Any] = {
        "title": str(pr.get("title") or ""),
        "author": _login(pr.get("user")) or "ghost",
        "state": pull_state_of(pr),
        "draft": bool(pr.get("draft")),
        "base": base,
        "head_sha": head,
        "labels": labels,
        "created_at": parse_time(pr.get("created_at")),
        "updated_at": updated,
        "synced_at": now,
    }
    if current is None:
        return PullState(
            repo=repo,
            number=int(pr["number"]),
            installation_id=installation_id,
            commits=(),
            reviews=(),
            label_events=(),
            required_checks=(),
            commits_complete=False,  # not read yet
            **fields,
        )
    if head != current.head_sha:
        fields["commits_complete"] = False
    return replace(current, installation_id=installation_id, **fields)


def with_commits(pull: PullState, commits: Iterable[CommitInfo], *, total: int | None = None) -> PullState:
    """The commit list as just read; complete when it holds the head and GitHub did not cut it short."""
    listed = tuple(commits)
    truncated = len(listed) >= MAX_LISTED_COMMITS and (total is None or total > len(listed))
    complete = any(c.sha == pull.head_sha for c in listed) and not truncated
    return replace(pull, commits=listed, commits_complete=complete)


def _review_order(review: ReviewInfo) -> tuple[datetime, int]:
    return (review.submitted_at or datetime.min.replace(tzinfo=UTC), review.id)


def with_reviews(pull: PullState, reviews: Iterable[ReviewInfo]) -> PullState:
    """Reviews merged in by id (a dismissal or an edit replaces the review it changes)."""
    by_id = {r.id: r for r in pull.reviews}
    by_id.update((r.id, r) for r in reviews)
    return replace(pull, reviews=tuple(sorted(by_id.values(), key=_review_order)))


def with_label_event(pull: PullState, event: LabelEvent) -> PullState:
    """The event added once (a redelivered webhook adds nothing), in time order."""
    if event in pull.label_events:
        return pull
    events = sorted((*pull.label_events, event), key=lambda e: e.at)
    return replace(pull, label_events=tuple(events[-MAX_LABEL_EVENTS:]))


def _newer_run(new: CheckRunInfo, old: CheckRunInfo) -> bool:
    if new.id != old.id:
        return new.id > old.id  # a re-run is a new run, with a greater id
    # The same run again: a late "created" must not undo its "completed".
    return new.status == "completed" or old.status != "completed"


def with_check_runs(checks: ShaChecks, runs: Iterable[CheckRunInfo], now: datetime) -> ShaChecks:
    """Keep the latest run per name: a newer run of a name replaces the older."""
    latest = {r.name: r for r in checks.check_runs}
    for run in runs:
        old = latest.get(run.name)
        if old is None or _newer_run(run, old):
            latest[run.name] = run
    return replace(checks, check_runs=tuple(sorted(latest.values(), key=lambda r: r.name)), synced_at=now)


def with_statuses(checks: ShaChecks, statuses: Iterable[StatusInfo], now: datetime) -> ShaChecks:
    """Keep the latest status per context (GitHub numbers statuses in the order they were set)."""
    latest = {s.context: s for s in checks.statuses}
    for status in statuses:
        old = latest.get(status.context)
        if old is None or (status.id, status.updated_at or _EPOCH) >= (old.id, old.updated_at or _EPOCH):
            latest[status.context] = status
    return replace(checks, statuses=tuple(sorted(latest.values(), key=lambda s: s.context)), synced_at=now)


_EPOCH = datetime.fromtimestamp(0, UTC)


def empty_checks(repo: str, sha: str, now: datetime) -> ShaChecks:
    return ShaChecks(repo=repo, sha=sha, check_runs=(), statuses=(), synced_at=now)


# What changed.


def _short(sha: str) -> str:
    return sha[:_MIN_PREFIX]


def _listing(pull: PullState) -> str:
    shas = [_short(c.sha) for c in pull.commits]
    if not shas:
        return "the bot knows none of its commits yet"
    if len(shas) > _SHOWN_SHAS:
        return f"its commits are {', '.join(shas[:_SHOWN_SHAS])} and {len(shas) - _SHOWN_SHAS} more"
    return f"its commits are {', '.join(shas)}"


_STALE = "; that list is out of date (a push the bot has not read yet), so a refresh may find it"


def _incomplete(pull: PullState) -> str:
    return "" if pull.commits_complete else _STALE


def changes_since(
    pull: PullState, head_checks: ShaChecks | None, *, sha: str | None = None, reviewer: str | None = None
) -> Changes | ChangesError:
    """Commits, label events and the head's checks since a commit of the PR (`sha`, or a unique prefix of
    at least 7 characters) or since the last review by `reviewer`. Exactly one of the two."""
    if (sha is None) == (reviewer is None):
        return ChangesError("give exactly one of sha or reviewer")
    review: ReviewInfo | None = None
    if reviewer is not None:
        found = _last_review(pull, reviewer)
        if isinstance(found, ChangesError):
            return found
        review = found
        assert review.commit_id is not None
        index = _index_of(pull, review.commit_id)
        if index is None and not pull.commits_complete:
            return ChangesError(
                f"{review.login} last reviewed {pull.key} at {_short(review.commit_id)}, which is not among the"
                f" commits the bot has of it ({_listing(pull)}){_STALE}"
            )
        if index is None:
            return ChangesError(
                f"{review.login} last reviewed {pull.key} at {_short(review.commit_id)}, which is no longer one"
                f" of its commits: a force-push dropped it ({_listing(pull)})"
            )
        since_sha = pull.commits[index].sha
        since_time = review.submitted_at
    else:
        assert sha is not None
        resolved = _resolve(pull, sha)
        if isinstance(resolved, ChangesError):
            return resolved
        index = resolved
        since_sha = pull.commits[index].sha
        since_time = pull.commits[index].authored_at
    checks = head_checks if head_checks is not None and head_checks.sha == pull.head_sha else None
    labels = tuple(e for e in pull.label_events if since_time is None or e.at > since_time)
    synced = min(pull.synced_at, checks.synced_at) if checks is not None else pull.synced_at
    return Changes(
        head_sha=pull.head_sha,
        since_sha=since_sha,
        since_review=review,
        commits=pull.commits[index + 1 :],
        labels=labels,
        checks=checks,
        synced_at=synced,
    )


def _index_of(pull: PullState, sha: str) -> int | None:
    for i, commit in enumerate(pull.commits):
        if commit.sha == sha:
            return i
    return None


def _resolve(pull: PullState, sha: str) -> int | ChangesError:
    wanted = sha.strip().lower()
    if len(wanted) < _MIN_PREFIX:
        return ChangesError(f"{sha!r} is too short: give at least {_MIN_PREFIX} characters of a commit SHA")
    matches = [i for i, c in enumerate(pull.commits) if c.sha.lower().startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        found = ", ".join(pull.commits[i].sha[: len(wanted) + 4] for i in matches)
        return ChangesError(f"{sha} matches {len(matches)} commits of {pull.key} ({found}): give more characters")
    reviewed = [r for r in pull.reviews if r.commit_id and r.commit_id.lower().startswith(wanted)]
    if reviewed and pull.commits_complete:
        return ChangesError(
            f"{sha} is no longer a commit of {pull.key}: {reviewed[-1].login} reviewed it, and a force-push"
            f" dropped it since ({_listing(pull)})"
        )
    return ChangesError(f"{sha} is not a commit of {pull.key} ({_listing(pull)}){_incomplete(pull)}")


def _last_review(pull: PullState, login: str) -> ReviewInfo | ChangesError:
    wanted = login.strip().removeprefix("@").casefold()
    theirs = [r for r in pull.reviews if r.login.casefold() == wanted]
    if not theirs:
        return ChangesError(f"{login} has not reviewed {pull.key}")
    last = max(theirs, key=_review_order)
    if last.commit_id is None:
        return ChangesError(f"{last.login}'s last review of {pull.key} names no commit")
    return last


def required_verdict(pull: PullState, checks: ShaChecks | None) -> list[dict[str, Any]]:
    """Per required check of the PR's base: its name, state ("success" | "failure" | "pending" | "missing")
    and link, from the head's latest results (a check run and a status of one name: the worse counts)."""
    if checks is not None and checks.sha != pull.head_sha:
        checks = None
    runs = [_run_body(r) for r in checks.check_runs] if checks else []
    statuses = [_status_body(s) for s in checks.statuses] if checks else []
    verdict = evaluate(frozenset(pull.required_checks), runs, statuses, require_all_when_none=False, ignore=())
    return [{"name": item.name, "state": _VERDICT_STATES[item.state], "url": item.url} for item in verdict.items]


_VERDICT_STATES = {
    CheckState.SUCCESS: "success",
    CheckState.NEUTRAL: "success",
    CheckState.SKIPPED: "success",
    CheckState.PENDING: "pending",
    CheckState.FAILURE: "failure",
    CheckState.MISSING: "missing",
}


def _run_body(run: CheckRunInfo) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "conclusion": run.conclusion,
        "details_url": run.details_url,
        "started_at": _iso(run.started_at),
    }


def _status_body(status: StatusInfo) -> dict[str, Any]:
    return {
        "id": status.id,
        "context": status.context,
        "state": status.state,
        "target_url": status.target_url,
        "description": status.description,
        "updated_at": _iso(status.updated_at),
    }


# JSON-able documents (the store's, and the API's).


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _required_time(value: object) -> datetime:
    parsed = _time(value)
    if parsed is None:
        raise ValueError(f"not a time: {value!r}")
    return parsed


def commit_to_doc(commit: CommitInfo) -> dict[str, Any]:
    return {
        "sha": commit.sha,
        "message": commit.message,
        "author": commit.author,
        "authored_at": _iso(commit.authored_at),
    }


def commit_from_doc(doc: Mapping[str, Any]) -> CommitInfo:
    return CommitInfo(
        sha=doc["sha"],
        message=doc.get("message") or "",
        author=doc.get("author"),
        authored_at=_time(doc.get("authored_at")),
    )


def review_to_doc(review: ReviewInfo) -> dict[str, Any]:
    return {
        "id": review.id,
        "login": review.login,
        "state": review.state,
        "commit_id": review.commit_id,
        "submitted_at": _iso(review.submitted_at),
    }


def review_from_doc(doc: Mapping[str, Any]) -> ReviewInfo:
    return ReviewInfo(
        id=int(doc["id"]),
        login=doc["login"],
        state=doc["state"],
        commit_id=doc.get("commit_id"),
        submitted_at=_time(doc.get("submitted_at")),
    )


def label_event_to_doc(event: LabelEvent) -> dict[str, Any]:
    return {"at": event.at.isoformat(), "action": event.action, "label": event.label, "actor": event.actor}


def label_event_from_doc(doc: Mapping[str, Any]) -> LabelEvent:
    return LabelEvent(at=_required_time(doc["at"]), action=doc["action"], label=doc["label"], actor=doc.get("actor"))


def check_run_to_doc(run: CheckRunInfo) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "conclusion": run.conclusion,
        "app": run.app,
        "details_url": run.details_url,
        "started_at": _iso(run.started_at),
        "completed_at": _iso(run.completed_at),
    }


def check_run_from_doc(doc: Mapping[str, Any]) -> CheckRunInfo:
    return CheckRunInfo(
        id=int(doc["id"]),
        name=doc["name"],
        status=doc["status"],
        conclusion=doc.get("conclusion"),
        app=doc.get("app"),
        details_url=doc.get("details_url"),
        started_at=_time(doc.get("started_at")),
        completed_at=_time(doc.get("completed_at")),
    )


def status_to_doc(status: StatusInfo) -> dict[str, Any]:
    return {
        "context": status.context,
        "state": status.state,
        "description": status.description,
        "target_url": status.target_url,
        "updated_at": _iso(status.updated_at),
        "id": status.id,
    }


def status_from_doc(doc: Mapping[str, Any]) -> StatusInfo:
    return StatusInfo(
        context=doc["context"],
        state=doc["state"],
        description=doc.get("description"),
        target_url=doc.get("target_url"),
        updated_at=_time(doc.get("updated_at")),
        id=int(doc.get("id") or 0),
    )


def sha_checks_to_doc(checks: ShaChecks) -> dict[str, Any]:
    return {
        "repo": checks.repo,
        "sha": checks.sha,
        "check_runs": [check_run_to_doc(r) for r in checks.check_runs],
        "statuses": [status_to_doc(s) for s in checks.statuses],
        "synced_at": checks.synced_at.isoformat(),
    }


def sha_checks_from_doc(doc: Mapping[str, Any]) -> ShaChecks:
    return ShaChecks(
        repo=doc["repo"],
        sha=doc["sha"],
        check_runs=tuple(check_run_from_doc(r) for r in doc.get("check_runs") or ()),
        statuses=tuple(status_from_doc(s) for s in doc.get("statuses") or ()),
        synced_at=_required_time(doc["synced_at"]),
    )


def pull_state_to_doc(pull: PullState) -> dict[str, Any]:
    """The record without its version (the store keeps that beside it, as for releases)."""
    return {
        "repo": pull.repo,
        "number": pull.number,
        "installation_id": pull.installation_id,
        "title": pull.title,
        "author": pull.author,
        "state": pull.state,
        "draft": pull.draft,
        "base": pull.base,
        "head_sha": pull.head_sha,
        "labels": list(pull.labels),
        "commits": [commit_to_doc(c) for c in pull.commits],
        "reviews": [review_to_doc(r) for r in pull.reviews],
        "label_events": [label_event_to_doc(e) for e in pull.label_events],
        "required_checks": list(pull.required_checks),
        "created_at": _iso(pull.created_at),
        "updated_at": _iso(pull.updated_at),
        "synced_at": pull.synced_at.isoformat(),
        "commits_complete": pull.commits_complete,
    }


def pull_state_from_doc(doc: Mapping[str, Any], version: int = 0) -> PullState:
    return PullState(
        repo=doc["repo"],
        number=int(doc["number"]),
        installation_id=int(doc["installation_id"]),
        title=doc.get("title") or "",
        author=doc.get("author") or "",
        state=doc["state"],
        draft=bool(doc.get("draft")),
        base=doc.get("base") or "",
        head_sha=doc["head_sha"],
        labels=tuple(doc.get("labels") or ()),
        commits=tuple(commit_from_doc(c) for c in doc.get("commits") or ()),
        reviews=tuple(review_from_doc(r) for r in doc.get("reviews") or ()),
        label_events=tuple(label_event_from_doc(e) for e in doc.get("label_events") or ()),
        required_checks=tuple(doc.get("required_checks") or ()),
        created_at=_time(doc.get("created_at")),
        updated_at=_time(doc.get("updated_at")),
        synced_at=_required_time(doc["synced_at"]),
        commits_complete=bool(doc.get("commits_complete", True)),
        version=version,
    )


def changes_to_doc(changes: Changes) -> dict[str, Any]:
    return {
        "head_sha": changes.head_sha,
        "since_sha": changes.since_sha,
        "since_review": review_to_doc(changes.since_review) if changes.since_review else None,
        "commits": [commit_to_doc(c) for c in changes.commits],
        "labels": [label_event_to_doc(e) for e in changes.labels],
        "checks": sha_checks_to_doc(changes.checks) if changes.checks else None,
        "synced_at": changes.synced_at.isoformat(),
    }


def changes_from_doc(doc: Mapping[str, Any]) -> Changes:
    review = doc.get("since_review")
    checks = doc.get("checks")
    return Changes(
        head_sha=doc["head_sha"],
        since_sha=doc.get("since_sha"),
        since_review=review_from_doc(review) if review else None,
        commits=tuple(commit_from_doc(c) for c in doc.get("commits") or ()),
        labels=tuple(label_event_from_doc(e) for e in doc.get("labels") or ()),
        checks=sha_checks_from_doc(checks) if checks else None,
        synced_at=_required_time(doc["synced_at"]),
    )


def changes_error_to_doc(error: ChangesError) -> dict[str, Any]:
    return {"error": error.message}


def changes_error_from_doc(doc: Mapping[str, Any]) -> ChangesError:
    return ChangesError(doc["error"])


def label_key(label: str) -> str:
    """How labels compare: GitHub's label names are case-insensitive."""
    return label.casefold()


def labels_index(labels: Sequence[str]) -> list[str]:
    """The record's labels as the store indexes them: case-folded, each once, sorted."""
    return sorted({label_key(label) for label in labels})
