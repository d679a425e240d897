"""The operations every surface calls (PR comments, labels, chat, API, MCP): a little I/O to observe
GitHub, then the pure release machine, then the effects queued durably for the executor."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import cachetools
import gidgethub
from gidgethub.abc import GitHubAPI

from .checks import OWN_CHECK_NAME, ChecksVerdict, evaluate, required_checks
from .config import Settings
from .policy import format_slot
from .release import (
    Actor,
    CancelRequested,
    ChecksChanged,
    Commit,
    Decision,
    Event,
    HeadMoved,
    HoldRequested,
    PullClosed,
    PullRecord,
    PullSnapshot,
    Release,
    RenderProgress,
    Reply,
    ShipRequested,
    Source,
    UnholdRequested,
    decide,
    permission_reaches,
)
from .repo_config import CONFIG_PATH, DEFAULT_CONFIG, ConfigError, RepoConfig, parse_config
from .store import Store, VersionConflict

log = logging.getLogger(__name__)

_MAX_CONFLICT_RETRIES = 5
_PERMISSION_TTL = 60.0  # seconds a collaborator permission is trusted
# The repo's config and its branch's required checks change rarely; within these seconds they are
# reused without even the (free) conditional request, which saves a round trip on every event.
_CONFIG_TTL = 30.0
_PROTECTION_TTL = 60.0
_MAX_CHECK_PAGES = 10


@dataclass(frozen=True)
class PullRef:
    repo: str
    pr: int
    installation_id: int

    @property
    def owner_name(self) -> tuple[str, str]:
        owner, _, name = self.repo.partition("/")
        return owner, name


@dataclass(frozen=True)
class LoadedConfig:
    config: RepoConfig
    problems: tuple[str, ...] = ()  # why the file in the repo was not used (it is invalid)


def render_key(repo: str, pr: int) -> str:
    return f"render:{repo}#{pr}"


class GitHubReader:
    """What the service reads from GitHub; GETs go through the per-installation ETag cache."""

    def __init__(self, store: Store, clock: Callable[[], datetime], app_id: int | None = None) -> None:
        self.store = store
        self.clock = clock
        self.app_id = app_id
        self._permissions: cachetools.TTLCache[tuple[str, str], str] = cachetools.TTLCache(
            maxsize=10_000, ttl=_PERMISSION_TTL
        )
        self._configs: cachetools.TTLCache[str, LoadedConfig] = cachetools.TTLCache(maxsize=10_000, ttl=_CONFIG_TTL)
        self._required: cachetools.TTLCache[tuple[str, str], tuple[dict[str, Any] | None, list[dict[str, Any]]]] = (
            cachetools.TTLCache(maxsize=10_000, ttl=_PROTECTION_TTL)
        )

    async def config(self, gh: GitHubAPI, repo: str) -> LoadedConfig:
        """The repo's config from its default branch; an invalid file keeps the last good one in force."""
        cached = self._configs.get(repo)
        if cached is None:
            cached = self._configs[repo] = await self._read_config(gh, repo)
        return cached

    async def _read_config(self, gh: GitHubAPI, repo: str) -> LoadedConfig:
        try:
            content = await gh.getitem(f"/repos/{repo}/contents/{CONFIG_PATH}")
        except gidgethub.BadRequest as exc:
            if exc.status_code == 404:
                return LoadedConfig(DEFAULT_CONFIG)
            raise
        text = base64.b64decode(content.get("content") or "").decode("utf-8", errors="replace")
        parsed = parse_config(text)
        key = f"config:last-good:{repo}"
        if isinstance(parsed, RepoConfig):
            if await self.store.get_value(key) != text:
                await self.store.set_value(key, text, now=self.clock())
            return LoadedConfig(parsed)
        last_good = await self.store.get_value(key)
        fallback = parse_config(last_good) if last_good is not None else DEFAULT_CONFIG
        config = fallback if isinstance(fallback, RepoConfig) else DEFAULT_CONFIG
        return LoadedConfig(config, problems=_problem_lines(parsed))

    async def permission(self, gh: GitHubAPI, repo: str, login: str) -> str:
        cached = self._permissions.get((repo, login))
        if cached is not None:
            return cached
        try:
            data = await gh.getitem(f"/repos/{repo}/collaborators/{login}/permission")
        except gidgethub.BadRequest as exc:
            if exc.status_code == 404:  # not a collaborator (or not a user at all)
                return "none"
            raise
        # role_name knows maintain and triage; permission folds them into write and read.
        role = data.get("role_name") or data.get("permission") or "none"
        permission = str(role if role in ("admin", "maintain", "write", "triage", "read") else data["permission"])
        self._permissions[(repo, login)] = permission
        return permission

    async def pull(self, gh: GitHubAPI, ref: PullRef) -> PullSnapshot:
        data = await gh.getitem(f"/repos/{ref.repo}/pulls/{ref.pr}")
        commits = [
            Commit(c["sha"], _first_line((c.get("commit") or {}).get("message") or ""))
            async for c in gh.getiter(f"/repos/{ref.repo}/pulls/{ref.pr}/commits?per_page=100")
        ]
        return PullSnapshot(
            title=data["title"],
            head_sha=data["head"]["sha"],
            base=data["base"]["ref"],
            state=data["state"],
            draft=bool(data.get("draft")),
            merged=bool(data.get("merged")),
            commits=tuple(commits[-250:]),
            author=(data.get("user") or {}).get("login", ""),
        )

    async def _protection(
        self, gh: GitHubAPI, repo: str, base: str
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        cached = self._required.get((repo, base))
        if cached is not None:
            return cached
        # The branch's own view of its protection needs only read access, unlike the protection
        # endpoint (administration: read), so the App keeps to least privilege.
        branch = await gh.getitem(f"/repos/{repo}/branches/{base}")
        protection: dict[str, Any] | None = branch.get("protection") if branch.get("protected") else None
        rules = [rule async for rule in gh.getiter(f"/repos/{repo}/rules/branches/{base}?per_page=100")]
        self._required[(repo, base)] = (protection, rules)
        return protection, rules

    async def checks(self, gh: GitHubAPI, repo: str, base: str, head_sha: str, config: RepoConfig) -> ChecksVerdict:
        protection, rules = await self._protection(gh, repo, base)
        runs: list[dict[str, Any]] = []
        async for run in gh.getiter(
            f"/repos/{repo}/commits/{head_sha}/check-runs?per_page=100", iterable_key="check_runs"
        ):
            # Our own `Release` run is never something to wait for; a CI job that happens to be
            # called "Release" is.
            if (run.get("app") or {}).get("id") != self.app_id:
                runs.append(run)
            if len(runs) >= 100 * _MAX_CHECK_PAGES:
                break
        statuses = [s async for s in gh.getiter(f"/repos/{repo}/commits/{head_sha}/statuses?per_page=100")]
        # Branch protection may require our own check (that is how check_run_blocks_merge works):
        # the bot never waits on itself. Our runs are already left out of `runs` by app id.
        required = required_checks(protection, rules, config.required_checks, (*config.ignore_checks, OWN_CHECK_NAME))
        return evaluate(
            required,
            runs,
            statuses,
            require_all_when_none=config.require_all_checks_when_none_required,
            ignore=tuple(config.ignore_checks),
        )


def _checks_event(head_sha: str, verdict: ChecksVerdict, delivery: str | None) -> Callable[[Release | None], Event]:
    def event(_: Release | None) -> Event:
        return ChecksChanged(Actor(login="github"), Source.CHECKS, delivery, head_sha=head_sha, checks=verdict)

    return event


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _problem_lines(error: ConfigError) -> tuple[str, ...]:
    return tuple(f"{'line ' + str(p.line) + ': ' if p.line else ''}{p.message}" for p in error.problems[:10])


class ReleaseService:
    def __init__(self, store: Store, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.read = GitHubReader(store, clock, settings.github_app_id)

    async def actor(self, gh: GitHubAPI, repo: str, login: str, *, is_bot: bool = False) -> Actor:
        return Actor(login=login, permission=await self.read.permission(gh, repo, login), is_bot=is_bot)

    async def apply(
        self, ref: PullRef, make_event: Callable[[Release | None], Event], *, reply_key: str | None = None
    ) -> Decision:
        """Decide against the PR's current release and save; on a concurrent change, decide again."""
        for _ in range(_MAX_CONFLICT_RETRIES):
            current = await self.store.get_active_release(ref.repo, ref.pr)
            if current is None:
                current = await self.store.get_latest_release(ref.repo, ref.pr)
            now = self.clock()
            decision = decide(current, make_event(current), now)
            release = decision.release
            try:
                if release is not None and release != current:
                    release = await self.store.save_release(release)
            except VersionConflict:
                continue
            await self.queue_effects(ref, decision, reply_key=reply_key)
            return Decision(release, decision.effects)
        raise VersionConflict(f"{ref.repo}#{ref.pr} kept changing under us")

    async def queue_effects(self, ref: PullRef, decision: Decision, *, reply_key: str | None) -> None:
        now = self.clock()
        for i, effect in enumerate(decision.effects):
            match effect:
                case RenderProgress():
                    await self.schedule_render(ref, now)
                case Reply(text=text):
                    # Keyed by the input's delivery: a redelivered webhook cannot post it twice.
                    await self.reply(ref, text, key=f"{reply_key or now.isoformat()}:{i}")

    async def schedule_render(self, ref: PullRef, now: datetime) -> None:
        """Coalesced: a burst of changes becomes one edit, at most one per STICKY_DEBOUNCE seconds."""
        record = await self.store.get_pull_record(ref.repo, ref.pr)
        due = now
        if record is not None and record.rendered_at is not None:
            due = max(now, record.rendered_at + timedelta(seconds=self.settings.sticky_debounce))
        payload = {"repo": ref.repo, "pr": ref.pr, "installation_id": ref.installation_id}
        await self.store.schedule_job(render_key(ref.repo, ref.pr), "render", payload, due_at=due)

    async def react(self, ref: PullRef, comment_id: int, content: str = "eyes") -> None:
        payload = {
            "repo": ref.repo,
            "installation_id": ref.installation_id,
            "comment_id": comment_id,
            "content": content,
        }
        await self.store.schedule_job(f"react:{comment_id}:{content}", "react", payload, due_at=self.clock(), once=True)

    async def reply(self, ref: PullRef, text: str, *, key: str) -> None:
        payload = {"repo": ref.repo, "pr": ref.pr, "installation_id": ref.installation_id, "text": text}
        await self.store.schedule_job(f"reply:{key}", "reply", payload, due_at=self.clock(), once=True)

    # Operations ---------------------------------------------------------------------------------

    async def note_config(self, ref: PullRef, loaded: LoadedConfig) -> None:
        """Keep the PR's record of config problems current; the sticky comment shows them."""
        record = await self.store.get_pull_record(ref.repo, ref.pr)
        if (record.config_problems if record else ()) == loaded.problems:
            return
        base = record or PullRecord(repo=ref.repo, pr=ref.pr)
        try:
            await self.store.save_pull_record(replace(base, config_problems=loaded.problems))
        except VersionConflict:
            return  # someone else just saved it; the next event notes it again
        await self.schedule_render(ref, self.clock())

    async def ship(
        self,
        gh: GitHubAPI,
        ref: PullRef,
        login: str,
        *,
        source: Source,
        delivery: str | None,
        when: str | None = None,
        immediately: bool = False,
        dry_run: bool = False,
        loaded: LoadedConfig | None = None,
    ) -> Decision:
        loaded = loaded or await self.read.config(gh, ref.repo)
        await self.note_config(ref, loaded)
        config = loaded.config
        actor = await self.actor(gh, ref.repo, login)
        if not permission_reaches(actor.permission, config.ship_permission.value):
            # Refuse before reading anything else: no API calls spent on people who may not ship.
            pull = PullSnapshot(title="", head_sha="", base="")
            verdict = ChecksVerdict(state="green")
        else:
            pull = await self.read.pull(gh, ref)
            verdict = await self.read.checks(gh, ref.repo, pull.base, pull.head_sha, config)

        def event(_: Release | None) -> Event:
            return ShipRequested(
                actor=actor,
                source=source,
                delivery=delivery,
                repo=ref.repo,
                pr=ref.pr,
                installation_id=ref.installation_id,
                pull=pull,
                checks=verdict,
                policy=config.policy(),
                ship_permission=config.ship_permission.value,
                when_text=when,
                immediately=immediately,
                dry_run=dry_run,
                check_run_blocks_merge=config.check_run_blocks_merge,
            )

        return await self.apply(ref, event, reply_key=delivery)

    async def cancel(
        self, gh: GitHubAPI, ref: PullRef, login: str, *, source: Source, delivery: str | None, reason: str = ""
    ) -> Decision:
        actor = await self.actor(gh, ref.repo, login)
        return await self.apply(
            ref, lambda _: CancelRequested(actor, source, delivery, reason=reason), reply_key=delivery
        )

    async def hold(self, gh: GitHubAPI, ref: PullRef, login: str, *, source: Source, delivery: str | None) -> Decision:
        loaded = await self.read.config(gh, ref.repo)
        actor = await self.actor(gh, ref.repo, login)
        need = loaded.config.ship_permission.value
        return await self.apply(ref, lambda _: HoldRequested(actor, source, delivery, need), reply_key=delivery)

    async def unhold(
        self, gh: GitHubAPI, ref: PullRef, login: str, *, source: Source, delivery: str | None
    ) -> Decision:
        loaded = await self.read.config(gh, ref.repo)
        actor = await self.actor(gh, ref.repo, login)
        need = loaded.config.ship_permission.value
        return await self.apply(ref, lambda _: UnholdRequested(actor, source, delivery, need), reply_key=delivery)

    async def head_moved(
        self, gh: GitHubAPI, ref: PullRef, head_sha: str, login: str, *, delivery: str | None
    ) -> Decision | None:
        current = await self.store.get_active_release(ref.repo, ref.pr)
        if current is None or current.head_sha == head_sha:
            return None  # nothing to re-verify: no GitHub calls for PRs without a release
        loaded = await self.read.config(gh, ref.repo)
        pull = await self.read.pull(gh, ref)
        verdict = await self.read.checks(gh, ref.repo, pull.base, pull.head_sha, loaded.config)
        actor = Actor(login=login)
        await self.apply(ref, lambda _: HeadMoved(actor, Source.PUSH, delivery, head_sha=pull.head_sha, pull=pull))
        # Checks of the new head may already be in: evaluate them right away.
        return await self.apply(
            ref, lambda _: ChecksChanged(actor, Source.CHECKS, delivery, head_sha=pull.head_sha, checks=verdict)
        )

    async def checks_changed(
        self, gh: GitHubAPI, repo: str, installation_id: int, head_sha: str, *, delivery: str | None
    ) -> int:
        """Re-evaluate only the releases whose head is this SHA; return how many there were."""
        releases = await self.store.find_releases(repo=repo, head_sha=head_sha)
        if not releases:
            return 0
        loaded = await self.read.config(gh, repo)
        for release in releases:
            verdict = await self.read.checks(gh, repo, release.base, head_sha, loaded.config)
            ref = PullRef(repo, release.pr, installation_id)
            await self.apply(ref, _checks_event(head_sha, verdict, delivery))
        return len(releases)

    async def closed(self, ref: PullRef, login: str, *, merged: bool, delivery: str | None) -> Decision:
        actor = Actor(login=login)
        return await self.apply(ref, lambda _: PullClosed(actor, Source.PULL_REQUEST, delivery, merged=merged))

    async def status_text(self, ref: PullRef, login: str) -> str:
        release = await self.store.get_active_release(ref.repo, ref.pr) or await self.store.get_latest_release(
            ref.repo, ref.pr
        )
        if release is None:
            return f"@{login} no release has been requested on this PR. Comment `/ship` to ask for one."
        tz = ZoneInfo(release.timezone)
        window = format_slot(release.slot, tz) if release.slot else "no window booked"
        blockers = f" Blockers: {'; '.join(release.blockers)}." if release.blockers else ""
        return (
            f"@{login} release #{release.number} of this PR is **{release.state.value}** for {window}; "
            f"head {release.head_sha[:7]}, verified {release.verified_sha[:7] if release.verified_sha else 'not yet'}."
            f"{blockers} The progress comment above has the details."
        )
