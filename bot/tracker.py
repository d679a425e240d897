"""Keeps the store's PR records and commit checks current, from webhooks and from reads of GitHub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from .checks import required_checks
from .github import GitHubClient
from .prstate import (
    CheckRunInfo,
    CommitInfo,
    LabelEvent,
    PullState,
    ReviewInfo,
    ShaChecks,
    StatusInfo,
    check_run_from_github,
    commit_from_github,
    empty_checks,
    parse_time,
    pull_from_github,
    review_from_github,
    status_from_github,
    with_check_runs,
    with_commits,
    with_label_event,
    with_reviews,
    with_statuses,
)
from .service import GitHubReader
from .store import Store, VersionConflict
from .store.base import pull_event_data

log = logging.getLogger(__name__)

_MAX_CONFLICT_RETRIES = 5
_MAX_PAGES = 10  # of check runs or statuses for one commit (100 each)
_LIST_PAGE = 200  # PR records read per store page by the sweep
SWEEP_LIMIT = 25  # PRs looked at per sweep: a first sweep after a restart must not spend the rate limit
_FAILED_PAUSE = timedelta(hours=1)  # a PR the sweep could not read (the App lost the repo) waits this long
# Actions whose payload says the head (may have) moved, or the PR came back: the commits are read again.
_READ_COMMITS = frozenset({"opened", "reopened", "synchronize"})

Change = Callable[[PullState | None], PullState]


class PullTracker:
    """The I/O around bot.prstate: webhooks update the records (reading GitHub only for what a payload
    lacks), `refresh` re-reads a PR whole, `sweep` catches what webhooks missed."""

    def __init__(self, store: Store, reader: GitHubReader, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.reader = reader
        self.clock = clock
        # PRs the sweep failed to read, and when: the oldest-synced go first, and these would go first forever.
        self._failed: dict[tuple[str, int], datetime] = {}

    # Webhooks.

    async def on_pull_request(self, gh: GitHubAPI, data: dict[str, Any]) -> PullState:
        """A pull_request webhook. Costs no request unless the head moved, the PR was (re)opened, its base
        changed, or it is new to the store: then its commits (one paginated list) and the base's required
        checks (cached); a PR first seen mid-life is read whole (reviews and head checks too)."""
        repo, installation_id, pr = _repo(data), _installation(data), data["pull_request"]
        number, action = int(pr["number"]), str(data.get("action") or "")
        now = self.clock()
        current = await self.store.get_pull_state(repo, number)
        if current is None and action != "opened":
            return await self._read_whole(gh, repo, number, installation_id, pr, label_event=_label_event(data, now))
        fresh = pull_from_github(pr, repo=repo, installation_id=installation_id, now=now, current=current)
        commits = None
        if action in _READ_COMMITS or current is None or fresh.head_sha != current.head_sha:
            commits = await self._commits(gh, repo, number)
        required = None
        if current is None or fresh.base != current.base or action in _READ_COMMITS:
            required = await self._required(gh, repo, fresh.base)
        total = pr.get("commits") if isinstance(pr.get("commits"), int) else None
        event = _label_event(data, now)

        def change(record: PullState | None) -> PullState:
            updated = pull_from_github(pr, repo=repo, installation_id=installation_id, now=now, current=record)
            if commits is not None:
                updated = with_commits(updated, commits, total=total)
            if required is not None:
                updated = replace(updated, required_checks=required)
            return with_label_event(updated, event) if event is not None else updated

        return await self._save(repo, number, change)

    async def on_review(self, gh: GitHubAPI, data: dict[str, Any]) -> PullState:
        """A pull_request_review webhook (submitted, edited, dismissed): no request for a PR already known."""
        repo, installation_id, pr = _repo(data), _installation(data), data["pull_request"]
        number = int(pr["number"])
        review = review_from_github(data["review"])
        if await self.store.get_pull_state(repo, number) is None:
            return await self._read_whole(gh, repo, number, installation_id, pr, review=review)
        now = self.clock()

        def change(record: PullState | None) -> PullState:
            updated = pull_from_github(pr, repo=repo, installation_id=installation_id, now=now, current=record)
            return with_reviews(updated, [review]) if review is not None else updated

        return await self._save(repo, number, change)

    async def on_check_run(self, gh: GitHubAPI, data: dict[str, Any]) -> ShaChecks:
        """A check_run webhook: the run replaces the older one of its name on its commit. No request."""
        run = check_run_from_github(data["check_run"])
        return await self._update_checks(_repo(data), str(data["check_run"]["head_sha"]), runs=[run])

    async def on_check_suite(self, gh: GitHubAPI, data: dict[str, Any]) -> ShaChecks | None:
        """A completed check_suite: when its commit is the head of a PR the store follows, that commit's check
        runs are read again (one paginated, conditional list), catching any check_run webhook that was lost."""
        repo, sha = _repo(data), str(data["check_suite"]["head_sha"])
        heads, _ = await self.store.list_pull_states(repos=[repo], head_sha=sha, state="open", limit=1)
        if not heads:
            return None
        runs = await self._check_runs(gh, repo, sha)
        return await self._update_checks(repo, sha, runs=runs or ())

    async def on_status(self, gh: GitHubAPI, data: dict[str, Any]) -> ShaChecks:
        """A status webhook: the latest status per context on its commit. No request."""
        return await self._update_checks(_repo(data), str(data["sha"]), statuses=[status_from_github(data)])

    # Reads of GitHub.

    async def refresh(self, gh: GitHubAPI, repo: str, number: int, installation_id: int) -> PullState:
        """Read the PR whole: the PR, its commits, reviews, the base's required checks, and the head's check
        runs and statuses (six conditional GETs when each fits on a page; the required checks are cached)."""
        pr = await gh.getitem(f"/repos/{repo}/pulls/{number}")
        return await self._read_whole(gh, repo, number, installation_id, pr)

    async def reconcile(self, gh: GitHubAPI, repo: str, number: int, installation_id: int) -> bool:
        """Catch what webhooks missed for one PR: four probes (the PR, its reviews, the head's check runs and
        statuses) that GitHub answers 304, free, when nothing changed, and then only synced_at moves; else
        the PR is read whole. True when it was. The caller settles the client's probes once every consumer
        of them has handled the change (see bot.github.GitHubClient.unchanged)."""
        pull = await self.store.get_pull_state(repo, number)
        if pull is not None and await self._unchanged(gh, pull):
            await self._confirm(pull)
            return False
        await self.refresh(gh, repo, number, installation_id)
        return True

    async def sweep(
        self,
        client_for: Callable[[int], GitHubAPI],
        *,
        skip: Collection[tuple[str, int]] = (),
        stale_after: timedelta,
        limit: int = SWEEP_LIMIT,
    ) -> dict[str, int]:
        """`reconcile` the open PRs not synced for `stale_after` (the longest-unsynced first, at most `limit`),
        but those in `skip` (the caller's already). Returns how many were confirmed, refreshed, or failed."""
        now = self.clock()
        self._failed = {key: when for key, when in self._failed.items() if now - when < _FAILED_PAUSE}
        skipped = {(repo.lower(), number) for repo, number in skip} | set(self._failed)
        stale: list[PullState] = []
        after: str | None = None
        while True:
            page, after = await self.store.list_pull_states(state="open", after=after, limit=_LIST_PAGE)
            stale += [p for p in page if (p.repo.lower(), p.number) not in skipped and now - p.synced_at >= stale_after]
            if after is None:
                break
        stale.sort(key=lambda p: p.synced_at)
        counts = {"confirmed": 0, "refreshed": 0, "failed": 0}
        for pull in stale[:limit]:
            gh = client_for(pull.installation_id)
            try:
                refreshed = await self.reconcile(gh, pull.repo, pull.number, pull.installation_id)
                counts["refreshed" if refreshed else "confirmed"] += 1
                if isinstance(gh, GitHubClient):
                    gh.settle()  # handled: the probes' new ETags may be trusted now
            except Exception as exc:  # noqa: BLE001 - one PR's trouble must not stop the sweep
                counts["failed"] += 1
                self._failed[(pull.repo.lower(), pull.number)] = now
                log.warning("re-reading %s failed: %s", pull.key, exc)
        return counts

    async def _unchanged(self, gh: GitHubAPI, pull: PullState) -> bool:
        if not isinstance(gh, GitHubClient):
            return False
        urls = (
            f"/repos/{pull.repo}/pulls/{pull.number}",
            f"/repos/{pull.repo}/pulls/{pull.number}/reviews?per_page=100",
            _check_runs_url(pull.repo, pull.head_sha),
            _statuses_url(pull.repo, pull.head_sha),
        )
        # All four always: each learns its ETag on the first sweep, and the next sweeps cost nothing.
        return all([await gh.unchanged(url) for url in urls])

    async def _confirm(self, pull: PullState) -> None:
        """GitHub says nothing changed: the record (and its head's checks) match it as of now."""
        now = self.clock()
        try:
            await self.store.save_pull_state(replace(pull, synced_at=now))
        except VersionConflict:
            return  # a webhook saved it meanwhile: fresher still
        async with self._sha_lock(pull.repo, pull.head_sha):
            checks = await self.store.get_sha_checks(pull.repo, pull.head_sha)
            await self.store.save_sha_checks(
                replace(checks, synced_at=now) if checks else empty_checks(pull.repo, pull.head_sha, now)
            )

    async def _read_whole(
        self,
        gh: GitHubAPI,
        repo: str,
        number: int,
        installation_id: int,
        pr: dict[str, Any],
        *,
        label_event: LabelEvent | None = None,
        review: ReviewInfo | None = None,
    ) -> PullState:
        """The record from a PR body and the reads it lacks: commits, reviews, required checks, head checks."""
        now = self.clock()
        head, base = str(pr["head"]["sha"]), str(pr["base"]["ref"])
        commits = await self._commits(gh, repo, number)
        reviews = await self._reviews(gh, repo, number)
        required = await self._required(gh, repo, base)
        runs = await self._check_runs(gh, repo, head)
        statuses = await self._statuses(gh, repo, head)
        if runs is not None or statuses is not None:
            # Announced for a record whose head this is already; a new record's own save is announced below.
            await self._update_checks(repo, head, runs=runs or (), statuses=statuses or ())
        total = pr.get("commits") if isinstance(pr.get("commits"), int) else None

        def change(record: PullState | None) -> PullState:
            updated = pull_from_github(pr, repo=repo, installation_id=installation_id, now=now, current=record)
            updated = replace(updated, synced_at=now)  # read just now, whatever the body's age
            if commits is not None:
                updated = with_commits(updated, commits, total=total)
            # Merged by id with what webhooks brought meanwhile (GitHub never deletes a submitted review).
            updated = with_reviews(updated, [*(reviews or ()), *([review] if review else [])])
            updated = replace(updated, required_checks=required)
            return with_label_event(updated, label_event) if label_event is not None else updated

        return await self._save(repo, number, change)

    async def _commits(self, gh: GitHubAPI, repo: str, number: int) -> list[CommitInfo] | None:
        url = f"/repos/{repo}/pulls/{number}/commits?per_page=100"
        nodes = await _listed(gh.getiter(url))
        return None if nodes is None else [commit_from_github(node) for node in nodes]

    async def _reviews(self, gh: GitHubAPI, repo: str, number: int) -> list[ReviewInfo] | None:
        nodes = await _listed(gh.getiter(f"/repos/{repo}/pulls/{number}/reviews?per_page=100"))
        if nodes is None:
            return None
        return [review for review in map(review_from_github, nodes) if review is not None]

    async def _required(self, gh: GitHubAPI, repo: str, base: str) -> tuple[str, ...]:
        try:
            # The reader's cached copy of the branch's protection and rules (shared with the releases).
            protection, rules = await self.reader._protection(gh, repo, base)
        except gidgethub.BadRequest as exc:
            if exc.status_code == 404:
                return ()  # the base branch is gone
            raise
        return tuple(sorted(required_checks(protection, rules)))

    async def _check_runs(self, gh: GitHubAPI, repo: str, sha: str) -> list[CheckRunInfo] | None:
        nodes = await _listed(gh.getiter(_check_runs_url(repo, sha), iterable_key="check_runs"), _MAX_PAGES * 100)
        return None if nodes is None else [check_run_from_github(node) for node in nodes]

    async def _statuses(self, gh: GitHubAPI, repo: str, sha: str) -> list[StatusInfo] | None:
        nodes = await _listed(gh.getiter(_statuses_url(repo, sha)), _MAX_PAGES * 100)
        return None if nodes is None else [status_from_github(node) for node in nodes]

    # The store.

    async def _save(self, repo: str, number: int, change: Change) -> PullState:
        """Read-modify-write with optimistic versioning: another event may have saved in between."""
        for _ in range(_MAX_CONFLICT_RETRIES):
            current = await self.store.get_pull_state(repo, number)
            try:
                return await self.store.save_pull_state(change(current))
            except VersionConflict:
                continue
        raise VersionConflict(f"PR record {repo}#{number} kept changing")

    @contextlib.asynccontextmanager
    async def _sha_lock(self, repo: str, sha: str) -> AsyncIterator[None]:
        """One read-modify-write of a commit's checks at a time, across processes (a store lease): check
        runs and statuses of one commit arrive together, and a last write must not drop the others."""
        name, owner = f"sha-checks:{repo.lower()}@{sha}", secrets.token_hex(8)
        for attempt in range(200):
            if await self.store.acquire_lease(name, owner, now=self.clock(), seconds=30):
                break
            await asyncio.sleep(min(0.005 * (attempt + 1), 0.1))
        else:
            raise TimeoutError(f"the checks of {sha[:7]} in {repo} stayed locked")
        try:
            yield
        finally:
            await self.store.release_lease(name, owner)

    async def _update_checks(
        self,
        repo: str,
        sha: str,
        *,
        runs: Iterable[CheckRunInfo] = (),
        statuses: Iterable[StatusInfo] = (),
    ) -> ShaChecks:
        async with self._sha_lock(repo, sha):
            now = self.clock()
            before = await self.store.get_sha_checks(repo, sha)
            checks = with_statuses(with_check_runs(before or empty_checks(repo, sha, now), runs, now), statuses, now)
            await self.store.save_sha_checks(checks)
        changed = before is None or (before.check_runs, before.statuses) != (checks.check_runs, checks.statuses)
        if changed:
            await self._announce_checks(repo, sha)
        return checks

    async def _announce_checks(self, repo: str, sha: str) -> None:
        """Tell the change feed's readers about the PRs whose head this commit is."""
        after: str | None = None
        while True:
            heads, after = await self.store.list_pull_states(repos=[repo], head_sha=sha, after=after, limit=100)
            for pull in heads:
                await self.store.append_event(
                    "pr", pull.repo, {**pull_event_data(pull, pull.version), "change": "checks"}
                )
            if after is None:
                return


def _repo(data: dict[str, Any]) -> str:
    return str(data["repository"]["full_name"])


def _installation(data: dict[str, Any]) -> int:
    return int(data["installation"]["id"])


def _label_event(data: dict[str, Any], now: datetime) -> LabelEvent | None:
    action = data.get("action")
    label = data.get("label")
    if action not in ("labeled", "unlabeled") or not isinstance(label, dict) or not label.get("name"):
        return None
    sender = data.get("sender") or {}
    # The payload carries no time of its own for the label; the PR's updated_at is GitHub's time of it.
    at = parse_time((data.get("pull_request") or {}).get("updated_at")) or now
    return LabelEvent(at=at, action=str(action), label=str(label["name"]), actor=sender.get("login"))


def _check_runs_url(repo: str, sha: str) -> str:
    # The same URLs as the release checks read: one ETag cache entry serves both.
    return f"/repos/{repo}/commits/{sha}/check-runs?per_page=100"


def _statuses_url(repo: str, sha: str) -> str:
    return f"/repos/{repo}/commits/{sha}/statuses?per_page=100"


async def _listed(items: AsyncIterator[Any], cap: int | None = None) -> list[dict[str, Any]] | None:
    """Every item of a paginated GET (at most `cap`); None when GitHub cannot list it: 404 (no such PR, or
    no access to it) or 422 (a commit it does not know). A payload about a PR the App cannot read then
    still leaves what the payload says, and the delivery is not retried for ever."""
    listed: list[dict[str, Any]] = []
    try:
        async for item in items:
            listed.append(item)
            if cap is not None and len(listed) >= cap:
                break
    except gidgethub.BadRequest as exc:
        if exc.status_code in (404, 422):
            return None
        raise
    return listed
