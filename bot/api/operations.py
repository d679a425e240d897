"""The operations the REST API and the MCP tools share: reads from the store, writes through the service.

Every operation takes the caller (a token acting as a GitHub login on some repositories). A repository
outside the token's list does not exist for it (404). Writes need the `write` scope and then pass through
the same service calls as a `/ship` comment, so GitHub's permission rule decides exactly as on the PR.
Reads are answered from the store: the PR records webhooks keep current, the releases, the change feed.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import gidgethub
from gidgethub.abc import GitHubAPI

from .. import prstate
from ..github import GitHubApp
from ..release import Decision, Reply, permission_reaches
from ..release import Release as CoreRelease
from ..service import PullRef, ReleaseService, job_payload
from ..store import JobSpec, Store
from . import models
from .tokens import Caller

log = logging.getLogger(__name__)

MAX_PAGE: Final = 100
_API_SILENT: Final = {"silent": True}  # the decision's replies are the API's answer, not PR comments


class ApiError(Exception):
    """An operation refused: answered as problem details (REST) or a tool error (MCP)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def not_found(what: str) -> ApiError:
    return ApiError(404, "Not Found", what)


@dataclass(frozen=True, slots=True)
class Target:
    repo: str
    number: int


class Operations:
    def __init__(
        self,
        store: Store,
        service: ReleaseService,
        github: GitHubApp | None,
        clock: Callable[[], datetime],
        tracker: Any = None,  # bot.tracker.PullTracker: refreshes a PR the store does not know yet
    ) -> None:
        self.store = store
        self.service = service
        self.github = github
        self.clock = clock
        self.tracker = tracker

    # Reads ----------------------------------------------------------------------------------------

    async def list_prs(
        self,
        caller: Caller,
        *,
        repo: str | None = None,
        state: str | None = None,
        label: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> models.PullPage:
        self._read(caller)
        if repo is not None:
            self._visible(caller, repo)
        repos = [repo] if repo else list(caller.repos)
        pulls, next_cursor = await self.store.list_pull_states(
            repos=repos, state=state, label=label, after=cursor, limit=min(max(limit, 1), MAX_PAGE)
        )
        items = []
        for pull in pulls:
            if not caller.sees(pull.repo):
                continue  # an owner/* pattern of another token cannot widen this one
            latest = await self.store.get_latest_release(pull.repo, pull.number)
            items.append(_pull_summary(pull, latest))
        return models.PullPage(items=items, next_cursor=next_cursor)

    async def get_pr(self, caller: Caller, repo: str, number: int) -> models.Pull:
        self._read(caller)
        pull = await self._pull(caller, repo, number)
        checks = await self.store.get_sha_checks(pull.repo, pull.head_sha)
        latest = await self.store.get_latest_release(pull.repo, pull.number)
        summary = _pull_summary(pull, latest)
        return models.Pull(
            **summary.model_dump(),
            commits=[_commit(c) for c in pull.commits],
            reviews=[_review(r) for r in pull.reviews],
            required_checks=[models.RequiredCheck(**item) for item in prstate.required_verdict(pull, checks)],
            release=await self._release_model(latest) if latest else None,
        )

    async def changes(
        self, caller: Caller, repo: str, number: int, *, since_sha: str | None = None, reviewer: str | None = None
    ) -> models.Changes:
        self._read(caller)
        pull = await self._pull(caller, repo, number)
        checks = await self.store.get_sha_checks(pull.repo, pull.head_sha)
        found = prstate.changes_since(pull, checks, sha=since_sha, reviewer=reviewer)
        if isinstance(found, prstate.ChangesError):
            raise ApiError(422, "Unprocessable Content", found.message)
        return models.Changes(
            repo=pull.repo,
            number=pull.number,
            head_sha=found.head_sha,
            since_sha=found.since_sha,
            since_review=_review(found.since_review) if found.since_review else None,
            commits=[_commit(c) for c in found.commits],
            labels=[
                models.LabelChange(at=e.at, action=e.action, label=e.label, actor=e.actor)  # type: ignore[arg-type]
                for e in found.labels
            ],
            check_runs=[_check_run(r) for r in (found.checks.check_runs if found.checks else ())],
            statuses=[_status(s) for s in (found.checks.statuses if found.checks else ())],
            synced_at=found.synced_at,
        )

    async def list_check_runs(self, caller: Caller, repo: str, sha: str) -> models.CheckRuns:
        checks = await self._sha_checks(caller, repo, sha)
        return models.CheckRuns(
            repo=checks.repo,
            sha=checks.sha,
            check_runs=[_check_run(r) for r in checks.check_runs],
            synced_at=checks.synced_at,
        )

    async def list_commit_statuses(self, caller: Caller, repo: str, sha: str) -> models.CommitStatuses:
        checks = await self._sha_checks(caller, repo, sha)
        return models.CommitStatuses(
            repo=checks.repo, sha=checks.sha, statuses=[_status(s) for s in checks.statuses], synced_at=checks.synced_at
        )

    async def list_releases(
        self,
        caller: Caller,
        *,
        repo: str | None = None,
        state: str | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> models.ReleasePage:
        self._read(caller)
        if repo is not None:
            self._visible(caller, repo)
        found = await self.store.find_releases(repo=repo, active_only=False, limit=5000)
        rows = []
        for release in found:
            if not caller.sees(release.repo) or (state is not None and release.state.value != state):
                continue
            if window_start is not None and (release.slot is None or release.slot.end <= window_start):
                continue
            if window_end is not None and (release.slot is None or release.slot.start >= window_end):
                continue
            rows.append(release)
        rows.sort(key=lambda r: (r.repo, -r.pr, -r.number))
        start = 0
        if cursor:
            keys = [r.key for r in rows]
            after = _uncursor(cursor)
            if after not in keys:
                raise ApiError(400, "Bad Request", "the cursor is not one this list gave (it may have expired)")
            start = keys.index(after) + 1
        size = min(max(limit, 1), MAX_PAGE)
        page = rows[start : start + size]
        more = start + size < len(rows)
        return models.ReleasePage(
            items=[_release_summary(r) for r in page], next_cursor=_cursor(page[-1].key) if more and page else None
        )

    async def get_release(self, caller: Caller, repo: str, number: int, release_number: int) -> models.Release:
        self._read(caller)
        self._visible(caller, repo)
        release = await self.service.release_for(repo, number, release_number)
        if release is None or release.number != release_number:
            raise not_found(f"{repo}#{number} has no release number {release_number}")
        return await self._release_model(release)

    # Writes ---------------------------------------------------------------------------------------

    async def schedule_release(
        self, caller: Caller, repo: str, number: int, body: models.ScheduleRequest
    ) -> models.ActionResult:
        ref, gh = await self._writable(caller, repo, number)
        decision = await self.service.ship(
            gh,
            ref,
            caller.login,
            source=caller.via,
            delivery=f"{caller.via}:{caller.token_id}:{secrets.token_hex(8)}",
            when=body.when,
            immediately=body.now,
            dry_run=body.dry_run,
            reply_to=_API_SILENT,
        )
        return await self._result(ref, decision)

    async def tag_pr_for_release(
        self, caller: Caller, repo: str, number: int, body: models.TagRequest
    ) -> models.ActionResult:
        ref, gh = await self._writable(caller, repo, number)
        loaded = await self.service.read.config(gh, repo)
        when: str | None = None
        if body.calendar_event_id is not None:
            event = await self.store.get_calendar_event(loaded.config.lane(repo), body.calendar_event_id)
            if event is None:
                raise ApiError(
                    422,
                    "Unprocessable Content",
                    f"the release calendar of {repo} has no event {body.calendar_event_id!r} (only events of the "
                    "built-in calendar can be named)",
                )
            when = f"{event.start.astimezone(loaded.config.policy().timezone):%Y-%m-%d %H:%M}"
        decision = await self.service.ship(
            gh,
            ref,
            caller.login,
            source=caller.via,
            delivery=f"{caller.via}:{caller.token_id}:{secrets.token_hex(8)}",
            when=when,
            loaded=loaded,
            reply_to=_API_SILENT,
        )
        result = await self._result(ref, decision)
        if result.release is not None:
            # The label, so people on the PR see it was tagged (the bot ignores its own label events).
            label = body.label or loaded.config.label
            try:
                await gh.post(f"/repos/{repo}/issues/{number}/labels", data={"labels": [label]})
            except gidgethub.HTTPException as exc:
                log.warning("could not add the label %r to %s#%s: %s", label, repo, number, exc)
        return result

    async def cancel_release(
        self, caller: Caller, repo: str, number: int, body: models.CancelRequest
    ) -> models.ActionResult:
        ref, gh = await self._writable(caller, repo, number)
        decision = await self.service.cancel(
            gh,
            ref,
            caller.login,
            source=caller.via,
            delivery=f"{caller.via}:{caller.token_id}:{secrets.token_hex(8)}",
            reason=body.reason or "",
            reply_to=_API_SILENT,
        )
        return await self._result(ref, decision)

    async def comment_on_pr(
        self, caller: Caller, repo: str, number: int, body: models.CommentRequest
    ) -> models.PostedComment:
        _, gh = await self._writable(caller, repo, number)
        permission = await self.service.read.permission(gh, repo, caller.login)
        if not permission_reaches(permission, "read"):
            raise ApiError(403, "Forbidden", f"@{caller.login} cannot read {repo} on GitHub, so cannot comment there")
        # Posted by the App; whose words they are is said first, so nobody takes them for the bot's.
        text = f"**@{caller.login}** (through Micromanager):\n\n{body.body}"
        try:
            comment = await gh.post(f"/repos/{repo}/issues/{number}/comments", data={"body": text[:65000]})
        except gidgethub.BadRequest as exc:
            raise ApiError(
                exc.status_code.value, "GitHub refused the comment", str(exc) or exc.status_code.phrase
            ) from exc
        return models.PostedComment(id=int(comment["id"]), url=str(comment.get("html_url") or ""))

    async def call_dev_agent(
        self, caller: Caller, repo: str, number: int, body: models.AgentCallRequest
    ) -> models.AgentCall:
        _, gh = await self._writable(caller, repo, number)
        loaded = await self.service.read.config(gh, repo)
        permission = await self.service.read.permission(gh, repo, caller.login)
        need = loaded.config.ship_permission.value
        if not permission_reaches(permission, need):
            raise ApiError(
                403,
                "Forbidden",
                f"@{caller.login} needs {need} access to {repo} to call its dev agent; GitHub reports {permission}",
            )
        release = await self.store.get_latest_release(repo, number)
        if release is None:
            raise ApiError(409, "Conflict", f"{repo}#{number} has no release: a dev agent works for a release")
        playbook = body.playbook or loaded.config.deploy.playbook
        if body.skill == "rollback_release":
            playbook = body.playbook or loaded.config.deploy.rollback_playbook
        if not playbook:
            raise ApiError(
                422,
                "Unprocessable Content",
                f"name a playbook: {repo}'s config has no deploy.playbook (or rollback_playbook) to default to",
            )
        problems = await self.service.agent_problems(repo, body.skill)
        if problems:
            raise ApiError(409, "Conflict", problems[0])
        call_id = secrets.token_hex(8)
        payload = job_payload(
            release,
            call_id=call_id,
            skill=body.skill,
            playbook=playbook,
            parameters=dict(body.parameters),
            requested_by=caller.login,
        )
        await self.service.schedule(
            [JobSpec(f"agent-call:{call_id}", "agent-call", payload, due_at=self.clock(), once=True)]
        )
        return models.AgentCall(call_id=call_id, release=release.key, state="queued")

    # Helpers --------------------------------------------------------------------------------------

    def _read(self, caller: Caller) -> None:
        if not caller.may("read"):
            raise ApiError(403, "Forbidden", f"the token {caller.name!r} lacks the read scope")

    def _visible(self, caller: Caller, repo: str) -> None:
        if "/" not in repo or not caller.sees(repo):
            # Outside the token's list, a repository does not exist: its existence is not revealed.
            raise not_found(f"no repository {repo} here")

    async def _pull(self, caller: Caller, repo: str, number: int) -> prstate.PullState:
        self._visible(caller, repo)
        pull = await self.store.get_pull_state(repo, number)
        if pull is None and self.tracker is not None:
            installation = await self._installation(repo)
            if installation is not None and self.github is not None:
                gh = self.github.installation_client(installation)
                try:
                    pull = await self.tracker.refresh(gh, repo, number, installation)
                except gidgethub.BadRequest as exc:
                    if exc.status_code.value != 404:
                        raise
        if pull is None:
            raise not_found(f"{repo} has no pull request #{number} that the bot knows of")
        return pull

    async def _sha_checks(self, caller: Caller, repo: str, sha: str) -> prstate.ShaChecks:
        self._read(caller)
        self._visible(caller, repo)
        checks = await self.store.get_sha_checks(repo, sha)
        if checks is None:
            raise not_found(f"no check results are known for {sha[:40]} in {repo}")
        return checks

    async def _writable(self, caller: Caller, repo: str, number: int) -> tuple[PullRef, GitHubAPI]:
        self._visible(caller, repo)
        if not caller.may("write"):
            raise ApiError(403, "Forbidden", f"the token {caller.name!r} lacks the write scope")
        installation = await self._installation(repo)
        if installation is None or self.github is None:
            raise not_found(f"Release Secretary is not installed on {repo}")
        return PullRef(repo, number, installation), self.github.installation_client(installation)

    async def _installation(self, repo: str) -> int | None:
        return await self.service.installation_for(repo)

    async def _result(self, ref: PullRef, decision: Decision) -> models.ActionResult:
        replies = [e for e in decision.effects if isinstance(e, Reply)]
        refused = next((r for r in replies if r.forbidden), None)
        if refused is not None:
            raise ApiError(403, "Forbidden", refused.text)
        release = decision.release or await self.store.get_latest_release(ref.repo, ref.pr)
        return models.ActionResult(
            release=await self._release_model(release) if release else None, messages=[r.text for r in replies]
        )

    async def _release_model(self, release: CoreRelease) -> models.Release:
        sessions = []
        agents = self.service.agents
        if agents is not None:
            for session in await agents.registry.sessions(limit=200):
                if session.release == release.key:
                    sessions.append(
                        models.AgentSession(
                            id=session.id,
                            skill=session.skill,
                            playbook=session.playbook,
                            state=session.state,
                            requested_by=session.requested_by,
                            started_at=session.started_at,
                            result=session.result,
                            last_lines=session.log[-20:],
                        )
                    )
        summary = _release_summary(release)
        return models.Release(
            **summary.model_dump(),
            blockers=list(release.blockers),
            deploy_target=release.deploy_target,
            deploy_url=release.deploy_url,
            deploy_log=list(release.deploy_log),
            failure=release.failure,
            audit=[
                models.AuditEntry(
                    at=t.at,
                    from_state=t.from_state.value if t.from_state else None,
                    to_state=t.to_state.value,
                    actor=t.actor,
                    reason=t.reason,
                    source=t.source,
                )
                for t in release.audit
            ],
            agent_sessions=sessions,
        )


def _cursor(key: str) -> str:
    """An opaque, URL-safe page cursor."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _uncursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def _pull_summary(pull: prstate.PullState, latest: CoreRelease | None) -> models.PullSummary:
    return models.PullSummary(
        repo=pull.repo,
        number=pull.number,
        title=pull.title,
        author=pull.author,
        state=pull.state,
        draft=pull.draft,
        labels=list(pull.labels),
        head_sha=pull.head_sha,
        base=pull.base,
        updated_at=pull.updated_at,
        release_state=latest.state.value if latest else None,
        synced_at=pull.synced_at,
    )


def _release_summary(release: CoreRelease) -> models.ReleaseSummary:
    return models.ReleaseSummary(
        repo=release.repo,
        pr=release.pr,
        number=release.number,
        state=release.state.value,
        title=release.title,
        requested_by=release.requested_by,
        head_sha=release.head_sha,
        verified_sha=release.verified_sha,
        slot_start=release.slot.start if release.slot else None,
        slot_end=release.slot.end if release.slot else None,
        timezone=release.timezone,
        calendar_event_id=release.event_id,
        merge_sha=release.merge_sha,
        updated_at=release.updated_at,
    )


def _commit(c: prstate.CommitInfo) -> models.Commit:
    return models.Commit(sha=c.sha, message=c.message, author=c.author, authored_at=c.authored_at)


def _review(r: prstate.ReviewInfo) -> models.Review:
    return models.Review(id=r.id, login=r.login, state=r.state, commit_id=r.commit_id, submitted_at=r.submitted_at)


def _check_run(r: prstate.CheckRunInfo) -> models.CheckRun:
    return models.CheckRun(
        id=r.id,
        name=r.name,
        status=r.status,
        conclusion=r.conclusion,
        app=r.app,
        details_url=r.details_url,
        started_at=r.started_at,
        completed_at=r.completed_at,
    )


def _status(s: prstate.StatusInfo) -> models.CommitStatus:
    return models.CommitStatus(
        context=s.context, state=s.state, description=s.description, target_url=s.target_url, updated_at=s.updated_at
    )
