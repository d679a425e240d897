"""The operations the REST API and the MCP tools share: reads from the store, writes through the service.

Every operation takes the caller (a token acting as a GitHub login on some repositories). A repository
outside the token's list does not exist for it (404). Writes need the `write` scope and then pass through
the same service calls as a `/ship` comment, so GitHub's permission rule decides exactly as on the PR.
Reads are answered from the store: the PR records webhooks keep current, the releases, the change feed.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
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
MISSING_TTL: Final = timedelta(minutes=10)  # a PR number GitHub said does not exist is not asked again
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
            repo = await self._visible(caller, repo)
        repos = [repo] if repo else list(caller.repos)
        try:
            pulls, next_cursor = await self.store.list_pull_states(
                repos=repos, state=state, label=label, after=cursor, limit=min(max(limit, 1), MAX_PAGE)
            )
        except ValueError as exc:  # a cursor this list never gave, or a pattern the store cannot read
            raise ApiError(400, "Bad Request", str(exc)) from exc
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
            repo = await self._visible(caller, repo)
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
        rows.sort(key=_release_order)
        if cursor:
            # The cursor is a position in the order, not a row: a row that changed since is no gap.
            after = _uncursor(cursor)
            if after is None:
                raise ApiError(400, "Bad Request", "the cursor is not one this list gave")
            rows = [r for r in rows if _release_order(r) > after]
        size = min(max(limit, 1), MAX_PAGE)
        page = rows[:size]
        more = len(rows) > size
        return models.ReleasePage(
            items=[_release_summary(r) for r in page],
            next_cursor=_cursor(_release_order(page[-1])) if more and page else None,
        )

    async def get_release(self, caller: Caller, repo: str, number: int, release_number: int) -> models.Release:
        self._read(caller)
        repo = await self._visible(caller, repo)
        release = await self.service.release_for(repo, number, release_number)
        if release is None or release.number != release_number:
            raise not_found(f"{repo}#{number} has no release number {release_number}")
        return await self._release_model(release)

    # Writes ---------------------------------------------------------------------------------------

    async def schedule_release(
        self, caller: Caller, repo: str, number: int, body: models.ScheduleRequest
    ) -> models.ActionResult:
        ref, gh = await self._writable(caller, repo, number)
        before = await self.store.get_latest_release(ref.repo, ref.pr)
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
        return await self._result(ref, decision, before, dry_run=body.dry_run)

    async def tag_pr_for_release(
        self, caller: Caller, repo: str, number: int, body: models.TagRequest
    ) -> models.ActionResult:
        ref, gh = await self._writable(caller, repo, number)
        repo = ref.repo
        loaded = await self.service.read.config(gh, repo)
        before = await self.store.get_latest_release(ref.repo, ref.pr)
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
        result = await self._result(ref, decision, before)
        if result.release is not None:
            # The label, so people on the PR see it was tagged (the bot ignores its own label events).
            label = body.label or loaded.config.label
            try:
                await gh.post(f"/repos/{repo}/issues/{ref.pr}/labels", data={"labels": [label]})
            except gidgethub.HTTPException as exc:
                log.warning("could not add the label %r to %s#%s: %s", label, repo, number, exc)
        return result

    async def cancel_release(
        self, caller: Caller, repo: str, number: int, body: models.CancelRequest
    ) -> models.ActionResult:
        ref, gh = await self._writable(caller, repo, number)
        before = await self.store.get_latest_release(ref.repo, ref.pr)
        decision = await self.service.cancel(
            gh,
            ref,
            caller.login,
            source=caller.via,
            delivery=f"{caller.via}:{caller.token_id}:{secrets.token_hex(8)}",
            reason=body.reason or "",
            reply_to=_API_SILENT,
        )
        return await self._result(ref, decision, before)

    async def comment_on_pr(
        self, caller: Caller, repo: str, number: int, body: models.CommentRequest
    ) -> models.PostedComment:
        ref, gh = await self._writable(caller, repo, number)
        repo, number = ref.repo, ref.pr
        # The bot speaks for the caller on the PR: as much access as a `/ship` needs, not merely read.
        need = (await self.service.read.config(gh, repo)).config.ship_permission.value
        permission = await self.service.read.permission(gh, repo, caller.login)
        if not permission_reaches(permission, need):
            raise ApiError(
                403,
                "Forbidden",
                f"@{caller.login} needs {need} access to {repo} to comment through the bot; "
                f"GitHub reports {permission}",
            )
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
        ref, gh = await self._writable(caller, repo, number)
        repo, number = ref.repo, ref.pr
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
        if body.skill == "rollback_release":
            # A rollback has rules of its own (a merged release, once): the same path as `/ship rollback`.
            said = await self.service.rollback(
                gh,
                ref,
                caller.login,
                delivery=f"{caller.via}:{caller.token_id}:{secrets.token_hex(8)}",
                source=caller.via,
            )
            if said:
                raise ApiError(409, "Conflict", said)
            return models.AgentCall(call_id="rollback", release=release.key, state="queued")
        if body.skill == "run_playbook" and release.merge_sha is None:
            raise ApiError(
                409,
                "Conflict",
                f"{release.key} is {release.state.value} and not merged: a playbook runs for a merged release "
                "(the release itself runs the deploy at its slot)",
            )
        owned = sorted(set(body.parameters) & _SERVER_PARAMETERS)
        if owned:
            raise ApiError(
                422,
                "Unprocessable Content",
                f"the bot fills {', '.join(owned)} itself from the release (the verified and merged SHAs)",
            )
        playbook = body.playbook or loaded.config.deploy.playbook
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
            parameters={**body.parameters, **_release_parameters(release)},
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

    async def _visible(self, caller: Caller, repo: str) -> str:
        """The repository as GitHub spells it (names compare without case; releases are stored by the
        canonical name, so acme/WebShop must not become a second repository)."""
        if repo.count("/") != 1 or any(c in repo for c in "*?[") or not caller.sees(repo):
            # Outside the token's list, a repository does not exist: its existence is not revealed.
            raise not_found(f"no repository {repo} here")
        return await self.service.canonical_repo(repo) or repo

    async def _pull(self, caller: Caller, repo: str, number: int) -> prstate.PullState:
        repo = await self._visible(caller, repo)
        pull = await self.store.get_pull_state(repo, number)
        missing = f"pr-missing:{repo.lower()}#{number}"
        if pull is None and self.tracker is not None and await self._recently_missing(missing) is False:
            installation = await self._installation(repo)
            if installation is not None and self.github is not None:
                gh = self.github.installation_client(installation)
                try:
                    pull = await self.tracker.refresh(gh, repo, number, installation)
                except gidgethub.BadRequest as exc:
                    if exc.status_code.value != 404:
                        raise ApiError(502, "Bad Gateway", f"GitHub answered {exc.status_code.value}") from exc
                    # Remembered a while: walking PR numbers must not spend the installation's rate limit.
                    await self.store.set_value(missing, self.clock().isoformat(), now=self.clock())
                except gidgethub.GitHubException as exc:
                    raise ApiError(502, "Bad Gateway", f"GitHub could not be read: {exc}") from exc
        if pull is None:
            raise not_found(f"{repo} has no pull request #{number} that the bot knows of")
        return pull

    async def _recently_missing(self, key: str) -> bool:
        seen = await self.store.get_value(key)
        return seen is not None and self.clock() - datetime.fromisoformat(seen) < MISSING_TTL

    async def _sha_checks(self, caller: Caller, repo: str, sha: str) -> prstate.ShaChecks:
        self._read(caller)
        repo = await self._visible(caller, repo)
        checks = await self.store.get_sha_checks(repo, sha)
        if checks is None:
            raise not_found(f"no check results are known for {sha[:40]} in {repo}")
        return checks

    async def _writable(self, caller: Caller, repo: str, number: int) -> tuple[PullRef, GitHubAPI]:
        repo = await self._visible(caller, repo)
        if not caller.may("write"):
            raise ApiError(403, "Forbidden", f"the token {caller.name!r} lacks the write scope")
        installation = await self._installation(repo)
        if installation is None or self.github is None:
            raise not_found(f"Release Secretary is not installed on {repo}")
        return PullRef(repo, number, installation), self.github.installation_client(installation)

    async def _installation(self, repo: str) -> int | None:
        return await self.service.installation_for(repo)

    async def _result(
        self, ref: PullRef, decision: Decision, before: CoreRelease | None, *, dry_run: bool = False
    ) -> models.ActionResult:
        replies = [e for e in decision.effects if isinstance(e, Reply)]
        refused = next((r for r in replies if r.forbidden), None)
        if refused is not None:
            raise ApiError(403, "Forbidden", refused.text)
        after = await self.store.get_latest_release(ref.repo, ref.pr)
        unchanged = after is None or (
            before is not None and after.key == before.key and after.version == before.version
        )
        if unchanged and replies and not dry_run:
            # Nothing was done, and the bot said why (a time in the past, a draft PR, nothing to cancel).
            raise ApiError(409, "Conflict", " ".join(r.text for r in replies))
        release = decision.release or after
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


def _release_order(release: CoreRelease) -> tuple[str, int, int]:
    """Repository, then newest PR first, then newest release first."""
    return (release.repo.lower(), -release.pr, -release.number)


def _cursor(order: tuple[str, int, int]) -> str:
    """An opaque, URL-safe page cursor: the position after which the next page starts."""
    return base64.urlsafe_b64encode(json.dumps(list(order)).encode()).decode().rstrip("=")


def _uncursor(cursor: str) -> tuple[str, int, int] | None:
    try:
        repo, pr, number = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return (str(repo), int(pr), int(number))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


# Parameters of a dev agent call that the bot fills from the release itself.
_SERVER_PARAMETERS: Final = frozenset({"sha", "merge_sha", "repo", "pr", "release"})


def _release_parameters(release: CoreRelease) -> dict[str, str]:
    owned = {"sha": release.verified_sha or release.head_sha, "repo": release.repo, "pr": str(release.pr)}
    owned["release"] = release.key
    if release.merge_sha:
        owned["merge_sha"] = release.merge_sha
    return owned


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
