"""The one executor of writes to GitHub: the sticky comment, the `Release` check run, replies and
reactions. Work arrives as durable jobs, so a crash between deciding and writing loses nothing, and
every write is idempotent (edit in place, found again by its marker, keyed by delivery)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import gidgethub
from gidgethub.abc import GitHubAPI

from .checks import OWN_CHECK_NAME
from .github import GitHubApp
from .release import PullRecord
from .render import MARKER, render_check_run, render_sticky
from .store import Store, VersionConflict
from .store.base import Job

log = logging.getLogger(__name__)

_MAX_BODY = 65_000  # GitHub refuses comments over 65,536 characters


# A write whose installation's turn is further off than this waits in the queue, not in a worker slot.
_DEFER_AFTER = 0.05


class NotYet(Exception):
    """The job's write must wait `seconds` for its installation's turn: run it again then."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"not yet: {seconds:.2f}s")
        self.seconds = seconds


class EffectExecutor:
    def __init__(self, store: Store, github: GitHubApp, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.github = github
        self.clock = clock
        self.writes = 0

    async def run(self, job: Job) -> None:
        installation = int(job.payload["installation_id"])
        wait = self.github.pacer(installation).write_wait()
        if wait > _DEFER_AFTER:
            raise NotYet(wait)
        gh = self.github.installation_client(installation)
        match job.kind:
            case "render":
                await self.render(gh, job.payload["repo"], int(job.payload["pr"]))
            case "checkrun":
                await self.check_run(gh, job.payload["repo"], int(job.payload["pr"]))
            case "reply":
                await self.reply(gh, job)
            case "react":
                await gh.post(
                    f"/repos/{job.payload['repo']}/issues/comments/{job.payload['comment_id']}/reactions",
                    data={"content": job.payload["content"]},
                )
                self.writes += 1
            case _:
                raise ValueError(f"unknown job kind {job.kind!r}")

    async def reply(self, gh: GitHubAPI, job: Job) -> None:
        """Post a reply exactly once: it carries a hidden mark of its job, and a retry (the worker died
        between GitHub's answer and noting the job done) looks for that mark before posting again."""
        repo, pr = job.payload["repo"], int(job.payload["pr"])
        mark = f"<!-- release-secretary:reply {hashlib.sha256(job.key.encode()).hexdigest()[:16]} -->"
        if job.attempts > 1:
            async for comment in gh.getiter(f"/repos/{repo}/issues/{pr}/comments?per_page=100"):
                if self._ours(comment) and mark in str(comment.get("body", "")):
                    return  # posted by the run that died
        text = job.payload["text"][: _MAX_BODY - len(mark) - 1]
        await self.comment(gh, repo, pr, f"{text}\n{mark}")

    async def comment(self, gh: GitHubAPI, repo: str, pr: int, text: str) -> int:
        data = await gh.post(f"/repos/{repo}/issues/{pr}/comments", data={"body": text[:_MAX_BODY]})
        self.writes += 1
        return int(data["id"])

    async def render(self, gh: GitHubAPI, repo: str, pr: int) -> None:
        """Edit the sticky comment to the release's current state, then queue the check run's update.

        The check run is its own job: with writes spaced per installation, the comment (what people
        read) never waits for it."""
        started = self.clock()
        release = await self.store.get_active_release(repo, pr) or await self.store.get_latest_release(repo, pr)
        record = await self.store.get_pull_record(repo, pr) or PullRecord(repo=repo, pr=pr)
        tz = ZoneInfo(release.timezone if release else "UTC")
        body = render_sticky(release, tz, config_problems=record.config_problems)
        if body == record.rendered:
            return
        comment_id = await self._write_sticky(gh, repo, pr, record.comment_id, body)
        await self._save_record(record, comment_id=comment_id, rendered=body, rendered_at=started)
        if release is not None:
            # Due when the installation's next write is allowed: waiting in the queue, not in a worker slot.
            due = started + timedelta(seconds=self.github.settings.github_write_interval)
            payload = {"repo": repo, "pr": pr, "installation_id": release.installation_id}
            await self.store.schedule_job(f"checkrun:{repo}#{pr}", "checkrun", payload, due_at=due)

    async def check_run(self, gh: GitHubAPI, repo: str, pr: int) -> None:
        release = await self.store.get_active_release(repo, pr) or await self.store.get_latest_release(repo, pr)
        record = await self.store.get_pull_record(repo, pr)
        if release is None or record is None:
            return
        view = render_check_run(release, ZoneInfo(release.timezone), config_problems=record.config_problems)
        output = {"title": view.title[:250], "summary": view.summary[:_MAX_BODY]}
        fields: dict[str, Any] = {"status": view.status, "output": output}
        if view.conclusion is not None:
            fields["conclusion"] = view.conclusion
        run_id = record.check_runs.get(release.head_sha)
        if run_id is not None:
            await gh.patch(f"/repos/{repo}/check-runs/{run_id}", data=fields)
        else:
            created = await gh.post(
                f"/repos/{repo}/check-runs", data={"name": OWN_CHECK_NAME, "head_sha": release.head_sha, **fields}
            )
            await self._save_record(record, check_runs={**record.check_runs, release.head_sha: int(created["id"])})
        self.writes += 1

    async def _write_sticky(self, gh: GitHubAPI, repo: str, pr: int, known: int | None, body: str) -> int:
        if known is not None:
            try:
                await gh.patch(f"/repos/{repo}/issues/comments/{known}", data={"body": body[:_MAX_BODY]})
                self.writes += 1
                return known
            except gidgethub.BadRequest as exc:
                if exc.status_code != 404:
                    raise
                log.info("sticky comment %s is gone; looking for another or writing a new one", known)
        # The store may have lost the id (or never saved it after a crash): find ours by its marker.
        async for comment in gh.getiter(f"/repos/{repo}/issues/{pr}/comments?per_page=100"):
            if self._ours(comment) and str(comment.get("body", "")).startswith(MARKER):
                await gh.patch(f"/repos/{repo}/issues/comments/{comment['id']}", data={"body": body[:_MAX_BODY]})
                self.writes += 1
                return int(comment["id"])
        return await self.comment(gh, repo, pr, body)

    def _ours(self, comment: dict[str, Any]) -> bool:
        """Written by this App: another bot echoing our marker must not be adopted."""
        app = comment.get("performed_via_github_app") or {}
        if app.get("id") is not None:
            return bool(app.get("id") == self.github.app_id)
        return (comment.get("user") or {}).get("type") == "Bot"

    async def _save_record(self, record: PullRecord, **changes: Any) -> None:
        for _ in range(5):
            try:
                await self.store.save_pull_record(replace(record, **changes))
                return
            except VersionConflict:
                fresh = await self.store.get_pull_record(record.repo, record.pr)
                record = fresh or PullRecord(repo=record.repo, pr=record.pr)
        raise VersionConflict(f"pull record {record.repo}#{record.pr} kept changing")
