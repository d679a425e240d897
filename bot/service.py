"""The operations every surface calls (PR comments, labels, chat, API, MCP): a little I/O to observe
GitHub, then the pure release machine, then the effects queued durably for the executor."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import cachetools
import gidgethub
from a2a.types import StreamResponse
from gidgethub.abc import GitHubAPI
from google.protobuf.json_format import ParseDict

from .a2a.client import Update, updates
from .a2a.registry import AgentError, Session
from .a2a.runner import FINAL_STATES, SKILL_ROLLBACK, SKILL_RUN, DevAgents
from .calendar import CalendarError, CalendarEvent
from .calendar.feed import FeedTokens
from .calendar.oauth import GoogleLinks, LinkNotConfigured
from .calendar.planner import HORIZON, Calendars
from .checks import OWN_CHECK_NAME, ChecksVerdict, escape_markdown, evaluate, required_checks
from .checks import _safe_url as safe_url
from .config import Settings
from .credentials import AppCredentials
from .github import GitHubClient
from .logs import redact
from .policy import Busy, Slot, format_slot, slot_problems, zone_named
from .release import (
    OPEN,
    Actor,
    CalendarChanged,
    CancelRequested,
    ChecksChanged,
    Commit,
    Decision,
    Deploy,
    DeployProgress,
    Event,
    EventBooked,
    HeadMoved,
    HoldRequested,
    Merge,
    MergeFinished,
    Prechecked,
    PullClosed,
    PullRecord,
    PullSnapshot,
    Release,
    ReleaseDue,
    RenderProgress,
    Reply,
    RollbackProgress,
    ShipRequested,
    Source,
    State,
    UnholdRequested,
    decide,
    escape_text,
    expected_checks,
    missed_slot,
    parse_release_key,
    permission_reaches,
    waiting_for_checks,
)
from .repo_config import (
    CONFIG_PATH,
    DEFAULT_CONFIG,
    DEFAULT_ENVIRONMENT,
    ConfigError,
    RepoConfig,
    fill_placeholders,
    parse_config,
)
from .secrets import SecretBox, Vault
from .store import JobSpec, Store, VersionConflict
from .store.base import Job

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


NOTIFY_PREFIX = "chat-notify:"  # + repo: the config's notify chats, as last read


def mirror_job(ref: PullRef, now: datetime) -> JobSpec:
    """Bring the PR's chat messages in line with its release (one job per PR: a burst is one pass)."""
    payload = {"repo": ref.repo, "pr": ref.pr, "installation_id": ref.installation_id}
    return JobSpec(f"chat-mirror:{ref.repo}#{ref.pr}", "chat-mirror", payload, due_at=now)


class GitHubReader:
    """What the service reads from GitHub; GETs go through the per-installation ETag cache."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        app_id: int | None = None,
        *,
        credentials: AppCredentials | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._app_id = app_id
        self._credentials = credentials  # when given, the App id is read from it each time (it may change)
        self._permissions: cachetools.TTLCache[tuple[str, str], str] = cachetools.TTLCache(
            maxsize=10_000, ttl=_PERMISSION_TTL
        )
        self._configs: cachetools.TTLCache[str, LoadedConfig] = cachetools.TTLCache(maxsize=10_000, ttl=_CONFIG_TTL)
        self._required: cachetools.TTLCache[tuple[str, str], tuple[dict[str, Any] | None, list[dict[str, Any]]]] = (
            cachetools.TTLCache(maxsize=10_000, ttl=_PROTECTION_TTL)
        )

    @property
    def app_id(self) -> int | None:
        """The bot's own App, whose check runs are never something to wait for."""
        return self._credentials.app_id if self._credentials is not None else self._app_id

    async def config(self, gh: GitHubAPI, repo: str, *, fresh: bool = False) -> LoadedConfig:
        """The repo's config from its default branch; an invalid file keeps the last good one in force.

        `fresh` skips the short cache (the ETag still makes an unchanged file free): the last
        checks before a release must see a freeze added a minute ago."""
        cached = None if fresh else self._configs.get(repo)
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

    async def pull(self, gh: GitHubAPI, ref: PullRef, *, commits: bool = True) -> PullSnapshot:
        """The PR; with `commits` False its commit list is not read (a check that only compares heads)."""
        data = await gh.getitem(f"/repos/{ref.repo}/pulls/{ref.pr}")
        listed = (
            [
                Commit(c["sha"], _first_line((c.get("commit") or {}).get("message") or ""))
                async for c in gh.getiter(f"/repos/{ref.repo}/pulls/{ref.pr}/commits?per_page=100")
            ]
            if commits
            else []
        )
        return PullSnapshot(
            title=data["title"],
            head_sha=data["head"]["sha"],
            base=data["base"]["ref"],
            state=data["state"],
            draft=bool(data.get("draft")),
            merged=bool(data.get("merged")),
            commits=tuple(listed[-250:]),
            author=(data.get("user") or {}).get("login", ""),
            mergeable=data.get("mergeable"),
            head_ref=data["head"].get("ref", ""),
            head_repo=((data["head"].get("repo") or {}).get("full_name") or ""),
        )

    async def new_commits(self, gh: GitHubAPI, repo: str, base: str, head: str) -> tuple[Commit, ...]:
        """The commits on `head` since `base` (the compare API); none when GitHub cannot say."""
        try:
            data = await gh.getitem(f"/repos/{repo}/compare/{base}...{head}")
        except gidgethub.BadRequest:
            return ()  # a force-push dropped the base, say: the head moved is what matters
        return tuple(
            Commit(c["sha"], _first_line((c.get("commit") or {}).get("message") or ""))
            for c in data.get("commits", [])[-50:]
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


def job_payload(release: Release, **extra: object) -> dict[str, Any]:
    """What every job about a release carries: which PR, which release of it, which installation."""
    return {
        "repo": release.repo,
        "pr": release.pr,
        "number": release.number,
        "installation_id": release.installation_id,
        **extra,
    }


def timer_job(
    kind: str, release: Release, slot_start: datetime, due: datetime, *, run_at: datetime | None = None
) -> JobSpec:
    """The `kind` timer ("tminus", "release") of the release's slot, due at `due` (run at `run_at`, when
    that differs: a retry). It replaces the release's earlier one of that kind, earlier or not: the slot
    may have moved later."""
    payload = job_payload(release, slot_start=slot_start.isoformat(), due_at=due.isoformat())
    return JobSpec(f"{kind}:{release.key}", kind, payload, due_at=run_at or due, keep_earlier=False)


def calendar_key(release: Release) -> str:
    return f"calendar:{release.key}"


_LANE_LEASE_SECONDS = 60.0  # renewed every third of it while a booking decision runs
_RECHECK = timedelta(minutes=5)  # a release blocked before its slot is checked again this often
_DESCRIPTION_DELAY = timedelta(seconds=30)  # a description-only calendar change waits this long (a burst: one write)
# Jobs the service runs itself (the effect executor runs the GitHub writes).
SERVICE_JOBS = frozenset(
    {"calendar", "tminus", "release", "merge", "deploy", "deploy-watch", "agent-rollback", "agent-call"}
)
_LOCK_SECONDS = 3600.0  # the environment lock outlives any merge; a crashed holder's lapses
_AGENT_LOG_EVERY = 1.0  # seconds between progress comment updates from a dev agent's lines
_WAIT_RECHECK = timedelta(minutes=1)  # how often a release waiting for new commits' checks looks again
_LOCK_RETRY = timedelta(minutes=1)
_INSTALLATIONS_TTL = 60.0  # seconds the repository -> installation map is kept
_LOCK_MARGIN = timedelta(minutes=30)  # the lock outlives the deploy timeout by this much
_LOCK_PATIENCE = timedelta(minutes=15)  # how long a due release waits for the environment lock


class ReleaseService:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Callable[[], datetime],
        *,
        calendars: Calendars | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.read = GitHubReader(store, clock, credentials=settings.credentials)
        self.vault = Vault(store, SecretBox(settings.secrets_keys)) if settings.secrets_keys else None
        feed = FeedTokens(self.vault, clock) if self.vault is not None else None
        self.links = GoogleLinks(settings, store, self.vault, clock) if self.vault is not None else None
        self.calendars = calendars or Calendars(store, settings, clock, feed=feed, links=self.links, vault=self.vault)
        self.agents = DevAgents(store, settings, clock, self.vault) if self.vault is not None else None
        # When each running agent session last updated its release, and its pending flush of lines.
        self._agent_rendered: dict[str, float] = {}
        self._agent_flushes: dict[str, asyncio.Task[None]] = {}
        self._installations: tuple[float, dict[str, int], dict[str, int]] = (0.0, {}, {})
        self._names: dict[str, str] = {}  # lower-cased full name -> as GitHub spells it

    @contextlib.asynccontextmanager
    async def lane_lock(self, name: str) -> AsyncIterator[None]:
        """One booking decision per lane (or shared calendar) at a time, across processes: two PRs
        asking for the same slot at once must not both get it. A named lease in the store, renewed
        while held (calendar calls can be slow) and given back at the end."""
        owner = secrets.token_hex(8)
        for attempt in range(400):
            if await self.store.acquire_lease(name, owner, now=self.clock(), seconds=_LANE_LEASE_SECONDS):
                break
            await asyncio.sleep(min(0.01 * (attempt + 1), 0.2))
        else:
            raise TimeoutError(f"the booking lock {name} stayed taken")

        async def renew() -> None:
            while True:
                await asyncio.sleep(_LANE_LEASE_SECONDS / 3)
                try:
                    held = await self.store.acquire_lease(name, owner, now=self.clock(), seconds=_LANE_LEASE_SECONDS)
                except Exception as exc:  # noqa: BLE001 - the next renewal tries again; the lease still runs
                    log.warning("renewing the booking lock %s failed: %s", name, exc)
                    continue
                if not held:
                    log.error("the booking lock %s was lost while held: a double booking is possible", name)
                    return

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await self.store.release_lease(name, owner)

    async def canonical_repo(self, repo: str) -> str | None:
        """The repository's name as GitHub spells it, from the installations (None: not installed)."""
        await self.installation_for(repo)
        return self._names.get(repo.lower())

    async def installation_for(self, repo: str) -> int | None:
        """The installation that covers `repo` (listed in it, or its account's for "all"); cached a minute."""
        fetched, by_repo, by_owner = self._installations
        if time.monotonic() - fetched > _INSTALLATIONS_TTL or repo.lower() not in by_repo:
            by_repo, by_owner = {}, {}
            for inst in await self.store.list_installations():
                if inst.suspended:
                    continue
                for name in inst.repositories:
                    by_repo[name.lower()] = inst.id
                    self._names[name.lower()] = name
                if inst.repository_selection == "all":
                    by_owner[inst.account_login.lower()] = inst.id
            self._installations = (time.monotonic(), by_repo, by_owner)
        owner = repo.split("/", 1)[0].lower()
        return by_repo.get(repo.lower()) or by_owner.get(owner)

    async def actor(self, gh: GitHubAPI, repo: str, login: str, *, is_bot: bool = False) -> Actor:
        return Actor(login=login, permission=await self.read.permission(gh, repo, login), is_bot=is_bot)

    async def apply(
        self,
        ref: PullRef,
        make_event: Callable[[Release | None], Event],
        *,
        reply_key: str | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> Decision:
        """Decide against the PR's current release and save; on a concurrent change, decide again.

        A change is saved together with the jobs that carry out its effects (the store's outbox): a crash
        right after the save cannot lose a reply, a merge, a deploy or a timer."""
        for _ in range(_MAX_CONFLICT_RETRIES):
            current = await self.store.get_active_release(ref.repo, ref.pr)
            if current is None:
                current = await self.store.get_latest_release(ref.repo, ref.pr)
            now = self.clock()
            event = make_event(current)
            decision = decide(current, event, now)
            release = decision.release
            jobs = await self.effect_jobs(ref, decision, reply_key=reply_key, reply_to=reply_to)
            if release is None or release == current:
                # Nothing saved: a retried input decides the same again, so its jobs need no outbox.
                await self.schedule(jobs)
                return Decision(release, decision.effects)
            # Recording where the event is changes nothing the calendar shows: no job for that.
            if not isinstance(event, EventBooked):
                before = current if current and current.key == release.key else None
                jobs += await self.calendar_jobs(release, now, before)
            try:
                release = await self.store.save_release(release, jobs)
            except VersionConflict:
                continue
            return Decision(release, decision.effects)
        raise VersionConflict(f"{ref.repo}#{ref.pr} kept changing under us")

    async def schedule(self, jobs: list[JobSpec]) -> None:
        for job in jobs:
            await self.store.schedule_job(
                job.key, job.kind, job.payload, due_at=job.due_at, keep_earlier=job.keep_earlier, once=job.once
            )

    async def effect_jobs(
        self, ref: PullRef, decision: Decision, *, reply_key: str | None, reply_to: dict[str, Any] | None = None
    ) -> list[JobSpec]:
        """The jobs that carry out a decision. Replies go where the input came from: the PR, or the chat
        (`reply_to`, a chat-reply job's address) for a command from Slack or Telegram."""
        now = self.clock()
        jobs: list[JobSpec] = []
        for i, effect in enumerate(decision.effects):
            match effect:
                case RenderProgress():
                    jobs.append(await self.render_job(ref, now))
                    if self.settings.chat_configured:
                        jobs.append(mirror_job(ref, now))
                case Reply(text=text):
                    if reply_to is not None and reply_to.get("silent"):
                        continue  # the caller shows the decision's replies itself (a button's answer)
                    # Keyed by the input's delivery: a redelivered webhook cannot post it twice.
                    jobs.append(
                        self.answer_job(ref, text, key=f"{reply_key or now.isoformat()}:{i}", reply_to=reply_to)
                    )
                case Merge(sha=sha, method=method):
                    release = decision.release
                    assert release is not None
                    # Once per release, SHA and attempt (the RELEASING entry of the history): a retried
                    # decision cannot merge twice, and a new `/ship` after a refusal is a new attempt.
                    key = f"merge:{release.key}:{sha}:{len(release.audit)}"
                    payload = job_payload(release, sha=sha, method=method)
                    jobs.append(JobSpec(key, "merge", payload, due_at=now, once=True))
                case Deploy(target=target, merge_sha=merge_sha):
                    release = decision.release
                    assert release is not None
                    payload = job_payload(release, target=target, merge_sha=merge_sha)
                    jobs.append(JobSpec(f"deploy:{release.key}:{merge_sha}", "deploy", payload, due_at=now, once=True))
        return jobs

    async def calendar_jobs(self, release: Release, now: datetime, before: Release | None = None) -> list[JobSpec]:
        """After a change: bring the calendar event in line, and set the T-minus timer for the slot.

        A new time, a new event or a final state is written at once; a description-only change (the
        verified SHA, the state, while CI flaps) waits a little, so a burst of them is one write."""
        jobs: list[JobSpec] = []
        wanted = self.calendars.wanted(release)
        booked = release.slot is not None or release.event_id is not None
        if booked and await self.store.get_value(f"calendar:synced:{release.key}") != wanted:
            payload = job_payload(release)
            urgent = (
                release.event_id is None or release.state not in OPEN or before is None or before.slot != release.slot
            )
            due = now if urgent else now + _DESCRIPTION_DELAY
            jobs.append(JobSpec(calendar_key(release), "calendar", payload, due_at=due))
        timed = release.state in OPEN and release.state != State.HELD and release.slot is not None
        was_timed = before is not None and before.state in OPEN and before.state != State.HELD
        unchanged = (
            before is not None
            and was_timed
            and before.slot == release.slot
            and before.prechecked_for == release.prechecked_for
        )
        if timed and not unchanged and release.slot is not None and release.prechecked_for != release.slot.start:
            due = max(now, release.slot.start - timedelta(minutes=release.lead_minutes))
            jobs.append(timer_job("tminus", release, release.slot.start, due))
        moved = before is None or before.slot != release.slot or before.state == State.HELD
        # Waiting at its slot for the checks of new commits, and they passed: release now, not at the next look.
        moved = moved or (before is not None and waiting_for_checks(before) and release.state == State.SCHEDULED)
        if timed and moved and release.slot is not None:
            start = release.slot.start
            jobs.append(timer_job("release", release, start, start, run_at=max(now, start)))
        return jobs

    async def set_timer(
        self, kind: str, release: Release, slot_start: datetime, due: datetime, *, run_at: datetime | None = None
    ) -> None:
        await self.schedule([timer_job(kind, release, slot_start, due, run_at=run_at)])

    async def render_job(self, ref: PullRef, now: datetime) -> JobSpec:
        """Coalesced: a burst of changes becomes one edit, at most one per STICKY_DEBOUNCE seconds."""
        record = await self.store.get_pull_record(ref.repo, ref.pr)
        due = now
        if record is not None and record.rendered_at is not None:
            due = max(now, record.rendered_at + timedelta(seconds=self.settings.sticky_debounce))
        payload = {"repo": ref.repo, "pr": ref.pr, "installation_id": ref.installation_id}
        return JobSpec(render_key(ref.repo, ref.pr), "render", payload, due_at=due)

    async def schedule_render(self, ref: PullRef, now: datetime) -> None:
        await self.schedule([await self.render_job(ref, now)])

    async def react(self, ref: PullRef, comment_id: int, content: str = "eyes") -> None:
        payload = {
            "repo": ref.repo,
            "installation_id": ref.installation_id,
            "comment_id": comment_id,
            "content": content,
        }
        await self.store.schedule_job(f"react:{comment_id}:{content}", "react", payload, due_at=self.clock(), once=True)

    def answer_job(self, ref: PullRef, text: str, *, key: str, reply_to: dict[str, Any] | None) -> JobSpec:
        if reply_to is None:
            return self.reply_job(ref, text, key=key)
        return JobSpec(f"chat-reply:{key}", "chat-reply", {**reply_to, "text": text}, due_at=self.clock(), once=True)

    def reply_job(self, ref: PullRef, text: str, *, key: str) -> JobSpec:
        payload = {"repo": ref.repo, "pr": ref.pr, "installation_id": ref.installation_id, "text": text}
        return JobSpec(f"reply:{key}", "reply", payload, due_at=self.clock(), once=True)

    async def reply(self, ref: PullRef, text: str, *, key: str) -> None:
        await self.schedule([self.reply_job(ref, text, key=key)])

    # Operations ---------------------------------------------------------------------------------

    async def note_notify(self, repo: str, config: RepoConfig) -> None:
        """Keep the config's `notify:` chats where the chat mirror reads them, with no GitHub call."""
        notify = config.notify
        wanted = json.dumps({"slack": notify.slack_channel, "telegram": notify.telegram_chat}, sort_keys=True)
        key = f"{NOTIFY_PREFIX}{repo}"
        if await self.store.get_value(key) != wanted:
            await self.store.set_value(key, wanted, now=self.clock())

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
        force: bool = False,
        loaded: LoadedConfig | None = None,
        postpone_from: datetime | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> Decision:
        loaded = loaded or await self.read.config(gh, ref.repo)
        await self.note_config(ref, loaded)
        await self.note_notify(ref.repo, loaded.config)
        config = loaded.config
        actor = await self.actor(gh, ref.repo, login)
        zone = await self.requester_zone(login, when)
        lane = config.lane(ref.repo)
        if not permission_reaches(actor.permission, config.ship_permission.value):
            # Refuse before reading anything else: no API calls spent on people who may not ship.
            pull = PullSnapshot(title="", head_sha="", base="")
            verdict = ChecksVerdict(state="green")
        else:
            pull = await self.read.pull(gh, ref)
            verdict = await self.read.checks(gh, ref.repo, pull.base, pull.head_sha, config)
        reading_calendars = permission_reaches(actor.permission, config.ship_permission.value) and (
            pull.state == "open" and not pull.merged and not pull.draft
        )
        # Releases sharing a Google calendar take turns across repositories; the built-in calendar per lane.
        lock = f"calendar:{config.calendar.id}" if config.calendar.id else f"lane:{lane}"
        async with self.lane_lock(lock) if reading_calendars else contextlib.nullcontext():
            busy: tuple[Busy, ...] = ()
            account: str | None = None
            calendar_id: str | None = None
            link: str | None = None
            if reading_calendars:
                try:
                    target = await self.calendars.target(config, ref.repo, login)
                    current = await self.store.get_active_release(ref.repo, ref.pr)
                    now = self.clock()
                    found = await self.calendars.busy(
                        config, ref.repo, login, target, start=now, end=now + HORIZON, own=current
                    )
                except CalendarError as exc:
                    # Calendar ids appear in code spans (the schema allows no backticks in them).
                    text = f"@{login} I can't book a release slot: {exc.message}"
                    if exc.advice:
                        text += f"\n\n{exc.advice}"
                    if exc.retry:
                        text += "\n\nThis looks temporary: comment the same command again in a minute."
                    key = f"{delivery or self.clock().isoformat()}:calendar"
                    await self.schedule([self.answer_job(ref, text, key=key, reply_to=reply_to)])
                    return Decision(None, (Reply(text),))
                busy, account, calendar_id = tuple(found), target.account, target.calendar_id
                link = await self.calendars.link_for(target, ref.repo)

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
                    force=force,
                    check_run_blocks_merge=config.check_run_blocks_merge,
                    busy=busy,
                    lane=lane,
                    calendar_account=account,
                    calendar_id=calendar_id,
                    requester_zone=zone,
                    calendar_link=link,
                    postpone_from=postpone_from,
                )

            return await self.apply(ref, event, reply_key=delivery, reply_to=reply_to)

    async def calendar_command(self, gh: GitHubAPI, ref: PullRef, login: str, arg: str | None) -> str:
        """`/ship calendar [link|unlink]`: where releases are booked, and people's own calendars."""
        loaded = await self.read.config(gh, ref.repo)
        config = loaded.config
        if arg is None:
            if config.calendar.id is None:
                where = "the bot's built-in release calendar"
                link = await self.calendars.feed_link(ref.repo)
                subscribe = (
                    f" Subscribe to it from Google Calendar, Outlook or Apple Calendar with this address: {link}"
                    if link
                    else " (an operator sets PUBLIC_URL to give it a subscription address)"
                )
            else:
                where = f"the Google calendar `{config.calendar.id}`"
                subscribe = ""
            linked = self.links is not None and await self.links.credentials_for(login) is not None
            mine = (
                "Your own Google calendar is linked: releases you ask for avoid your busy times."
                if linked
                else "Comment `/ship calendar link` to connect your own Google calendar, so releases you ask "
                "for avoid your busy times."
            )
            return f"@{login} releases of this repository are booked in {where}.{subscribe}\n\n{mine}"
        actor = await self.actor(gh, ref.repo, login)
        need = config.ship_permission.value
        if not permission_reaches(actor.permission, need):
            return (
                f"@{login} only people with **{need}** access (or more) can link a calendar here; "
                f"GitHub reports your access as **{actor.permission or 'none'}**."
            )
        if self.links is None:
            return f"@{login} calendar linking is off: the bot has no SECRETS_KEY to keep tokens encrypted."
        if arg == "unlink":
            self.calendars.forget(login)
            if await self.links.unlink(login):
                return f"@{login} your Google calendar is disconnected; the bot no longer reads it."
            return f"@{login} no Google calendar was linked to your GitHub account."
        try:
            url = await self.links.start(login)
        except LinkNotConfigured as exc:
            return f"@{login} calendar linking is not set up on this bot yet: {exc}"
        return (
            f"@{login} open {url} within 10 minutes to connect your Google calendar. The link works once "
            "and only for you: GitHub confirms who you are before Google asks for your consent. The bot "
            "asks only to see when you are busy and to manage the release events it books."
        )

    async def requester_zone(self, login: str, when: str | None) -> str | None:
        """The zone a person last named in a `/ship` ("friday 3pm America/New_York"), remembered."""
        named = zone_named(when)
        key = f"tz:{login.lower()}"
        if named is not None:
            if await self.store.get_value(key) != named:
                await self.store.set_value(key, named, now=self.clock())
            return named
        return await self.store.get_value(key)

    async def cancel(
        self,
        gh: GitHubAPI,
        ref: PullRef,
        login: str,
        *,
        source: Source,
        delivery: str | None,
        reason: str = "",
        reply_to: dict[str, Any] | None = None,
    ) -> Decision:
        actor = await self.actor(gh, ref.repo, login)
        return await self.apply(
            ref,
            lambda _: CancelRequested(actor, source, delivery, reason=reason),
            reply_key=delivery,
            reply_to=reply_to,
        )

    async def hold(
        self,
        gh: GitHubAPI,
        ref: PullRef,
        login: str,
        *,
        source: Source,
        delivery: str | None,
        reply_to: dict[str, Any] | None = None,
    ) -> Decision:
        loaded = await self.read.config(gh, ref.repo)
        actor = await self.actor(gh, ref.repo, login)
        need = loaded.config.ship_permission.value
        return await self.apply(
            ref, lambda _: HoldRequested(actor, source, delivery, need), reply_key=delivery, reply_to=reply_to
        )

    async def unhold(
        self,
        gh: GitHubAPI,
        ref: PullRef,
        login: str,
        *,
        source: Source,
        delivery: str | None,
        reply_to: dict[str, Any] | None = None,
    ) -> Decision:
        loaded = await self.read.config(gh, ref.repo)
        actor = await self.actor(gh, ref.repo, login)
        need = loaded.config.ship_permission.value
        return await self.apply(
            ref, lambda _: UnholdRequested(actor, source, delivery, need), reply_key=delivery, reply_to=reply_to
        )

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

    async def rollback(
        self, gh: GitHubAPI, ref: PullRef, login: str, *, delivery: str, source: Source = Source.COMMENT
    ) -> str | None:
        """`/ship rollback`: dispatch the repository's rollback workflow for the PR's last release; the
        answer to give (None: the progress comment says it)."""
        loaded = await self.read.config(gh, ref.repo)
        config = loaded.config
        actor = await self.actor(gh, ref.repo, login)
        need = config.ship_permission.value
        if not permission_reaches(actor.permission, need):
            return (
                f"@{login} only people with **{need}** access (or more) to this repository can roll a release "
                f"back; GitHub reports your access as **{actor.permission or 'none'}**."
            )
        release = await self.store.get_latest_release(ref.repo, ref.pr)
        if release is not None and release.state == State.ROLLED_BACK:
            return f"@{login} this release was rolled back already ({release.rollback_url or release.rollback_id})."
        if release is None or release.state not in (State.RELEASED, State.FAILED) or not release.merge_sha:
            return f"@{login} there is no merged release on this PR to roll back."
        workflow = config.deploy.rollback_workflow
        playbook = config.deploy.rollback_playbook
        if not workflow and not playbook:
            return (
                f"@{login} this repository has no rollback configured: set `deploy.rollback_workflow` in "
                "`.github/release-secretary.yml` to a workflow with a `workflow_dispatch` trigger, or "
                "`deploy.rollback_playbook` to a dev agent playbook."
            )
        if release.rollback_id is not None:
            return f"@{login} a rollback is already running or done: {release.rollback_url or release.rollback_id}."
        if not workflow:
            assert playbook is not None
            problems = await self.agent_problems(ref.repo, SKILL_ROLLBACK)
            if problems:
                return f"@{login} the rollback cannot start: {problems[0]}."
            payload = job_payload(release, playbook=playbook, requested_by=login, delivery=delivery)
            await self.store.schedule_job(
                f"agent-rollback:{release.key}", "agent-rollback", payload, due_at=self.clock(), once=True
            )
            return None
        marker = f"rollback:{release.key}"
        if await self.store.get_value(marker) is not None:
            return None  # this request (a retried delivery) already dispatched it
        await self.store.set_value(marker, f"dispatching {delivery}", now=self.clock())
        answer = await gh.post(
            f"/repos/{ref.repo}/actions/workflows/{quote(workflow, safe='')}/dispatches",
            data={"ref": release.base, "return_run_details": True},
        )
        run_id = str((answer or {}).get("workflow_run_id")) if isinstance(answer, dict) else None
        if not run_id or run_id == "None":
            return f"@{login} the rollback workflow `{workflow}` was dispatched; its run's result will follow here."
        url = answer.get("html_url")
        await self.apply(
            ref, lambda _: RollbackProgress(actor, source, delivery, run_id=run_id, url=url), reply_key=delivery
        )
        return None

    async def rollback_progress(
        self, ref: PullRef, *, run_id: str, url: str | None, ok: bool, detail: str, delivery: str | None
    ) -> int:
        count = 0
        for release in await self.store.find_releases(repo=ref.repo, active_only=False, limit=1000):
            if release.rollback_id != run_id:
                continue
            await self.apply(
                PullRef(ref.repo, release.pr, ref.installation_id),
                lambda _: RollbackProgress(
                    Actor("github"), Source.TIMER, delivery, run_id=run_id, url=url, done=True, ok=ok, detail=detail
                ),
                reply_key=f"rollback:{release.key}:{run_id}",
            )
            count += 1
        return count

    async def reconcile(self, gh: GitHubAPI, release: Release) -> str | None:
        """Catch what webhooks missed for one tracked release: a push, a close, new check results, or
        the end of its deploy. Reads are conditional (ETags), so a PR where nothing changed costs no
        rate limit. Returns what it found, or None."""
        ref = PullRef(release.repo, release.pr, release.installation_id)
        if release.state == State.RELEASING:
            return await self._reconcile_deploy(gh, ref, release)
        if release.state not in OPEN:
            return None
        pull_url = f"/repos/{release.repo}/pulls/{release.pr}"
        if isinstance(gh, GitHubClient):
            # The PR, its head's check runs and statuses, as they were? Three probes, free when so.
            # All three always: each learns its ETag on the first sweep, and the next sweeps cost nothing.
            probes = (
                pull_url,
                f"/repos/{release.repo}/commits/{release.head_sha}/check-runs?per_page=100",
                f"/repos/{release.repo}/commits/{release.head_sha}/statuses?per_page=100",
            )
            if all([await gh.unchanged(url) for url in probes]):
                return None
        data = await gh.getitem(pull_url)
        if data.get("state") != "open":
            await self.closed(ref, "github", merged=bool(data.get("merged")), delivery=None)
            return "closed"
        head = data["head"]["sha"]
        if head != release.head_sha:
            await self.head_moved(gh, ref, head, "github", delivery=None)
            return "pushed"
        await self.checks_changed(gh, release.repo, release.installation_id, head, delivery=None)
        after = await self.store.get_active_release(release.repo, release.pr)
        return "checks" if after is not None and after.version != release.version else None

    async def _reconcile_deploy(self, gh: GitHubAPI, ref: PullRef, release: Release) -> str | None:
        kind, _, name = (release.deploy_target or "").partition(" ")
        if kind == "playbook":
            return await self._reconcile_agent_deploy(release)
        if kind != "workflow" or not release.merge_sha:
            return None
        if release.deploy_id is not None:
            listed = [await gh.getitem(f"/repos/{ref.repo}/actions/runs/{release.deploy_id}")]
        else:
            query = f"event=workflow_dispatch&head_sha={release.merge_sha}&per_page=20"
            listed = (await gh.getitem(f"/repos/{ref.repo}/actions/runs?{query}")).get("workflow_runs", [])
        for run in listed:
            if str(run.get("path", "")).rsplit("/", 1)[-1] != name or run.get("status") != "completed":
                continue
            if release.deploy_id is not None and str(run.get("id")) != release.deploy_id:
                continue  # another run of the workflow on that commit (a re-run by hand)
            sha = release.merge_sha
            await self.deploy_progress(
                ref,
                merge_sha=sha,
                deploy_id=str(run.get("id")),
                url=run.get("html_url"),
                done=True,
                ok=run.get("conclusion") == "success",
                detail=f"the {run.get('name') or 'deploy'} workflow run ended {run.get('conclusion')}",
                delivery=None,
                match=lambda r: r.key == release.key,
            )
            return "deployed"
        return None

    async def status_text(self, ref: PullRef, login: str) -> str:
        release = await self.store.get_active_release(ref.repo, ref.pr) or await self.store.get_latest_release(
            ref.repo, ref.pr
        )
        if release is None:
            return f"@{login} no release has been requested on this PR. Comment `/ship` to ask for one."
        tz = ZoneInfo(release.timezone)
        window = format_slot(release.slot, tz) if release.slot else "no window booked"
        # Blockers quote CI check names and calendar event titles: people outside the repo write those.
        blockers = f" Blockers: {'; '.join(map(escape_markdown, release.blockers))}." if release.blockers else ""
        return (
            f"@{login} release #{release.number} of this PR is **{release.state.value}** for {window}; "
            f"head {release.head_sha[:7]}, verified {release.verified_sha[:7] if release.verified_sha else 'not yet'}."
            f"{blockers} The progress comment above has the details."
        )

    # Calendar and timer jobs ---------------------------------------------------------------------

    async def release_for(self, repo: str, pr: int, number: int) -> Release | None:
        latest = await self.store.get_latest_release(repo, pr)
        if latest is None or latest.number == number:
            return latest
        for release in await self.store.find_releases(repo=repo, active_only=False, limit=1000):
            if release.pr == pr and release.number == number:
                return release
        return None

    async def run_job(self, job: Job, gh: GitHubAPI) -> None:
        ref = PullRef(job.payload["repo"], int(job.payload["pr"]), int(job.payload["installation_id"]))
        match job.kind:
            case "calendar":
                await self.sync_calendar(gh, ref, int(job.payload.get("number", 0)))
            case "tminus":
                slot_start = datetime.fromisoformat(job.payload["slot_start"])
                last_try = job.attempts >= self.settings.worker_max_attempts
                try:
                    await self.precheck(
                        gh,
                        ref,
                        slot_start=slot_start,
                        due_at=datetime.fromisoformat(job.payload["due_at"]),
                        last_try=last_try,
                    )
                except Exception as exc:
                    if not last_try:
                        raise  # retried with backoff
                    # The check itself keeps failing (GitHub down?): a release nobody could verify
                    # must not go ahead quietly. Block it and tell the requester.
                    await self.precheck_failed(ref, slot_start, f"{type(exc).__name__}: {exc}"[:200])
            case "agent-rollback":
                await self.agent_rollback(gh, ref, job.payload)
            case "agent-call":
                await self.agent_call(job.payload)
            case "release" | "merge" | "deploy" | "deploy-watch":
                try:
                    await self._release_step(job, gh, ref)
                except Exception as exc:
                    if job.attempts < self.settings.worker_max_attempts:
                        raise  # retried with backoff
                    # It keeps failing (GitHub down for long): the release must not sit there quietly.
                    await self.step_failed(job, ref, redact(f"{type(exc).__name__}: {exc}")[:200])
            case _:
                raise ValueError(f"unknown job kind {job.kind!r}")

    # The release at its slot --------------------------------------------------------------------

    async def deploy_watch(self, gh: GitHubAPI, ref: PullRef, number: int, merge_sha: str) -> Decision | None:
        """The deploy's time is up: if nothing (webhook or sweep) finished it, look once more, then fail it."""
        release = await self.release_for(ref.repo, ref.pr, number)
        if release is None or release.state != State.RELEASING or release.merge_sha != merge_sha:
            return None
        if await self._reconcile_deploy(gh, ref, release) == "deployed":
            return None
        timeout = (await self.read.config(gh, ref.repo)).config.deploy.timeout
        minutes = int(timeout.total_seconds() // 60)
        unit = "minute" if minutes == 1 else "minutes"
        decision = await self.deploy_failed(
            ref, release, merge_sha, f"no result from {release.deploy_target} after {minutes} {unit}"
        )
        await self._cancel_agent_deploy(release)  # after: its "canceled" must not be taken for the reason
        return decision

    async def _release_step(self, job: Job, gh: GitHubAPI, ref: PullRef) -> None:
        payload = job.payload
        if job.kind == "release":
            slot_start = datetime.fromisoformat(payload["slot_start"])
            await self.release_due(gh, ref, slot_start=slot_start, due_at=datetime.fromisoformat(payload["due_at"]))
        elif job.kind == "merge":
            await self.merge(gh, ref, int(payload["number"]), sha=payload["sha"], method=payload["method"])
        elif job.kind == "deploy-watch":
            await self.deploy_watch(gh, ref, int(payload["number"]), payload["merge_sha"])
        else:
            number, target, merge_sha = int(payload["number"]), payload["target"], payload["merge_sha"]
            await self.start_deploy(gh, ref, number, target=target, merge_sha=merge_sha)

    async def step_failed(self, job: Job, ref: PullRef, error: str) -> None:
        """The last attempt of a release step failed: block (not merged) or fail (merged), and say so."""
        release = await self.store.get_active_release(ref.repo, ref.pr)
        if release is None:
            return
        if job.kind in ("deploy", "deploy-watch") and release.state == State.RELEASING and release.merge_sha:
            await self.deploy_failed(ref, release, release.merge_sha, f"the deploy could not be started: {error}")
            return
        if job.kind == "merge" and release.state == State.RELEASING and release.merge_sha is None:
            sha = str(job.payload["sha"])
            await self.apply(
                ref,
                lambda _: MergeFinished(
                    Actor("github"), Source.TIMER, None, sha=sha, merged=False, status=None, message=error
                ),
                reply_key=f"merge-failed:{release.key}:{len(release.audit)}",
            )
            await self.store.release_lease(f"env:{release.lane}", release.key)
            return
        if job.kind == "release" and release.slot is not None and release.state in OPEN:
            slot_start = release.slot.start
            await self.apply(
                ref,
                lambda current: ReleaseDue(
                    Actor("release-secretary"),
                    Source.TIMER,
                    None,
                    slot_start=slot_start,
                    head_sha=current.head_sha if current else release.head_sha,
                    checks=(current.checks if current and current.checks else ChecksVerdict(state="pending")),
                    merge_method="",
                    conflicts=(f"the release could not be checked at its slot ({error}); nothing was merged",),
                ),
                reply_key=f"release-failed:{release.key}:{slot_start.isoformat()}",
            )

    async def release_due(
        self, gh: GitHubAPI, ref: PullRef, *, slot_start: datetime, due_at: datetime
    ) -> Decision | None:
        """T: read everything again; with the environment free and all still good, merge the verified SHA."""
        release = await self.store.get_active_release(ref.repo, ref.pr)
        if release is None or release.slot is None or release.slot.start != slot_start:
            return None
        if release.state not in (State.SCHEDULED, State.BLOCKED, State.VERIFYING):
            return None
        now = self.clock()
        lock = f"env:{release.lane}"
        if not await self.store.acquire_lease(lock, release.key, now=now, seconds=_LOCK_SECONDS):
            if now < slot_start + _LOCK_PATIENCE:
                # Another release of this environment is still going: wait for it, a little.
                await self.set_timer("release", release, slot_start, due_at, run_at=now + _LOCK_RETRY)
                return None
            conflicts: tuple[str, ...] = (
                f"another release of {release.lane} was still running {int(_LOCK_PATIENCE.total_seconds() // 60)} "
                "minutes after this slot began",
            )
            locked = True
        else:
            conflicts, locked = (), False
        handed_off = False
        try:
            loaded = await self.read.config(gh, ref.repo, fresh=True)
            config = loaded.config
            pull = await self.read.pull(gh, ref, commits=False)
            if pull.state != "open":
                return None  # merged or closed outside the release: the pull_request webhook says so
            rule = config.new_commits
            checked_config = config
            if rule.action == "wait":
                expected = expected_checks(release, pull.head_sha)
                checked_config = replace(config, required_checks=config.required_checks | expected)
            verdict = await self.read.checks(gh, ref.repo, pull.base, pull.head_sha, checked_config)
            if not locked:
                try:
                    conflicts += tuple(await self.calendars.conflicts(release, config))
                except CalendarError as exc:
                    if exc.retry:
                        raise
                    conflicts += (f"the calendar could not be checked: {exc.message}",)
            if config.deploy.playbook:
                # Merging without the deploy the repository asked for would leave prod half-released:
                # the agent must be there, and able to run playbooks, before anything merges.
                conflicts += await self.agent_problems(ref.repo, SKILL_RUN)
            proposal = None
            stale = pull.head_sha != (release.verified_sha or release.head_sha)
            if conflicts or verdict.state != "green" or stale or missed_slot(release, now):
                after = now + config.policy().lead_time
                proposal = await self.calendars.next_free(
                    config, ref.repo, release.requested_by, after=after, own=release
                )
            # Late only on the first look at this slot: the rechecks of a wait are not the workers being down.
            late = now - due_at
            new_commits: tuple[Commit, ...] = ()
            verified = release.verified_sha or release.head_sha
            if pull.head_sha != verified:
                new_commits = await self.read.new_commits(gh, ref.repo, verified, pull.head_sha)
            decision = await self.apply(
                ref,
                lambda _: ReleaseDue(
                    Actor("release-secretary"),
                    Source.TIMER,
                    None,
                    slot_start=slot_start,
                    head_sha=pull.head_sha,
                    checks=verdict,
                    merge_method=config.merge_method.value,
                    conflicts=conflicts,
                    mergeable=pull.mergeable,
                    proposal=proposal,
                    late_by=late if late > timedelta(minutes=1) else None,
                    deploy_target=config.deploy.target,
                    new_commits=new_commits,
                    new_commits_action=rule.action,
                    wait_for=rule.wait if rule.action == "wait" else None,
                ),
                # Per decision point: a retry after the save decides differently and says nothing twice.
                reply_key=f"release-due:{release.key}:{slot_start.isoformat()}:{len(release.audit)}",
            )
            if decision.release is not None and waiting_for_checks(decision.release):
                if rule.test_workflow:
                    await self.dispatch_tests(gh, ref, decision.release, pull, rule.test_workflow)
                # Looked at again each minute; checks turning green bring the next look forward.
                await self.set_timer("release", release, slot_start, due_at, run_at=now + _WAIT_RECHECK)
            handed_off = decision.release is not None and decision.release.state == State.RELEASING
            if handed_off:
                # Held through the merge and the deploy: as long as the deploy may take, and a margin.
                # The deploy's timeout then fails the release and frees it before the lease could lapse.
                hold = (config.deploy.timeout + _LOCK_MARGIN).total_seconds()
                await self.store.acquire_lease(lock, release.key, now=self.clock(), seconds=hold)
        finally:
            if not handed_off:  # the merge (and deploy) now hold the environment until they end
                await self.store.release_lease(lock, release.key)
        return decision

    async def dispatch_tests(
        self, gh: GitHubAPI, ref: PullRef, release: Release, pull: PullSnapshot, workflow: str
    ) -> None:
        """The repository's test workflow on the PR's branch, once per head, when a release waits for the
        checks of new commits (for tests that do not run on every push)."""
        marker = f"tests:{release.key}:{pull.head_sha}"
        if await self.store.get_value(marker):
            return
        if pull.head_repo and pull.head_repo != ref.repo:
            log.info("%s: not dispatching %s on a fork's branch", release.key, workflow)
            return
        try:
            path = f"/repos/{ref.repo}/actions/workflows/{quote(workflow, safe='')}/dispatches"
            await gh.post(path, data={"ref": pull.head_ref})
        except gidgethub.BadRequest as exc:
            if exc.status_code in (401, 403, 429) or exc.status_code >= 500:
                raise
            detail = exc.args[0] if exc.args else ""
            await self.reply(
                ref,
                f"@{release.requested_by} new_commits.test_workflow `{escape_text(workflow)}` could not be started "
                f"({exc.status_code}: {escape_text(str(detail))}); the release still waits for the checks that run "
                "on their own.",
                key=f"tests-refused:{marker}",
            )
        await self.store.set_value(marker, "dispatched", now=self.clock())

    async def merge(self, gh: GitHubAPI, ref: PullRef, number: int, *, sha: str, method: str) -> Decision | None:
        """The SHA-pinned merge, exactly once: noted before the request, and after a crash (or a 405
        for a PR that is already merged) the PR itself says whether the merge of that SHA went
        through. 405, 409 and 422 are final answers, never retried."""
        release = await self.release_for(ref.repo, ref.pr, number)
        if release is None or release.state != State.RELEASING:
            return None
        marker = f"merge:{release.key}"
        data: dict[str, Any] | None = None
        refused: tuple[int, str] | None = None
        noted = await self.store.get_value(marker) or ""
        config = (await self.read.config(gh, ref.repo)).config
        if config.deploy.merge_by == "agent" and config.deploy.playbook and not noted.startswith("merged "):
            return await self._agent_merge(gh, ref, release, sha, config, marker)
        if noted.startswith("merged ") or noted == f"started {sha}":
            data = await self._adopted_merge(gh, ref, sha)
        if data is None:
            await self.store.set_value(marker, f"started {sha}", now=self.clock())
            body = {"sha": sha, "merge_method": method, "commit_title": f"{release.title} (#{ref.pr})"}
            try:
                data = await gh.put(f"/repos/{ref.repo}/pulls/{ref.pr}/merge", data=body)
            except gidgethub.BadRequest as exc:
                if exc.status_code not in (405, 409, 422):
                    raise
                refused = (int(exc.status_code), str(exc.args[0]) if exc.args else "")
            if refused is not None and refused[0] == 405:
                data = await self._adopted_merge(gh, ref, sha)  # "not mergeable" because it is merged?
        if data is None:
            assert refused is not None
            status, message = refused
            return await self._not_merged(ref, release, marker, sha, Actor("github"), message, status)
        merge_sha = str(data.get("sha") or "")
        summary = "" if release.deploy_target else self.summary(release, sha, merge_sha, method)
        decision = await self.apply(
            ref,
            lambda _: MergeFinished(
                Actor("github"), Source.TIMER, None, sha=sha, merged=True, merge_sha=merge_sha, summary=summary
            ),
            reply_key=f"summary:{release.key}",
        )
        await self.store.set_value(marker, f"merged {merge_sha}", now=self.clock())
        if not release.deploy_target:
            await self.store.release_lease(f"env:{release.lane}", release.key)
        return decision

    async def _agent_merge(
        self, gh: GitHubAPI, ref: PullRef, release: Release, sha: str, config: RepoConfig, marker: str
    ) -> Decision | None:
        """`deploy.merge_by: agent`: the playbook merges (pinned to {sha}, the verified SHA) and deploys;
        the bot then asks the PR what was merged. Its deploy step reports the same session's outcome."""
        assert self.agents is not None and config.deploy.playbook is not None
        session: Session | None = None
        failure = ""
        try:
            session = await self._follow_agent(
                release,
                marker,
                sha,
                skill=SKILL_RUN,
                playbook=config.deploy.playbook,
                parameters=self.playbook_parameters(config, release, ""),
                requested_by=release.requested_by,
            )
        except AgentError as exc:
            if exc.retry:
                raise
            failure = exc.message
        if session is not None:
            failure = session.outcome("without merging")
        pull = await gh.getitem(f"/repos/{ref.repo}/pulls/{ref.pr}")
        head = (pull.get("head") or {}).get("sha")
        if not pull.get("merged") or not pull.get("merge_commit_sha"):
            return await self._not_merged(ref, release, marker, sha, Actor("dev-agent"), failure[:1500])
        merge_sha = str(pull["merge_commit_sha"])
        await self.store.set_value(marker, f"merged {merge_sha}", now=self.clock())
        decision = await self.apply(
            ref,
            lambda _: MergeFinished(Actor("dev-agent"), Source.TIMER, None, sha=sha, merged=True, merge_sha=merge_sha),
            reply_key=f"summary:{release.key}",
        )
        if session is not None:
            # Its deploy step (the same playbook, finished) reports the session's outcome.
            await self.store.set_value(f"deploy:{release.key}", f"agent {merge_sha} {session.key}", now=self.clock())
        if head != sha:
            # Merged, but not what was verified: the release must not count as a success.
            merged = await self.release_for(ref.repo, ref.pr, release.number) or release
            detail = f"the dev agent merged {str(head)[:7]}, not the verified {sha[:7]}: check what shipped"
            return await self.deploy_failed(ref, merged, merge_sha, detail)
        return decision

    async def _not_merged(
        self,
        ref: PullRef,
        release: Release,
        marker: str,
        sha: str,
        actor: Actor,
        message: str,
        status: int | None = None,
    ) -> Decision:
        """The merge of `sha` did not happen (GitHub refused it, or the agent did not do it): noted, the
        release blocked with the reason, the environment free again."""
        await self.store.set_value(marker, f"refused {sha}", now=self.clock())
        decision = await self.apply(
            ref,
            lambda _: MergeFinished(actor, Source.TIMER, None, sha=sha, merged=False, status=status, message=message),
            reply_key=f"merge-refused:{release.key}:{sha}:{len(release.audit)}",
        )
        await self.store.release_lease(f"env:{release.lane}", release.key)
        return decision

    async def _adopted_merge(self, gh: GitHubAPI, ref: PullRef, sha: str) -> dict[str, Any] | None:
        """The merge of `sha`, if the PR is merged and its head is that SHA (an earlier run's merge)."""
        pull = await gh.getitem(f"/repos/{ref.repo}/pulls/{ref.pr}")
        if pull.get("merged") and pull.get("merge_commit_sha") and (pull.get("head") or {}).get("sha") == sha:
            return {"sha": pull["merge_commit_sha"], "merged": True}
        return None

    async def start_deploy(
        self, gh: GitHubAPI, ref: PullRef, number: int, *, target: str, merge_sha: str
    ) -> Decision | None:
        """Start the deploy target on the merge commit, once: a dispatch noted before it is sent is
        looked for (the workflow run) before it is sent again."""
        release = await self.release_for(ref.repo, ref.pr, number)
        if release is None or release.state != State.RELEASING or release.merge_sha != merge_sha:
            return None
        kind, _, name = target.partition(" ")
        marker = f"deploy:{release.key}"
        noted = await self.store.get_value(marker) or ""
        if noted.startswith(f"created {merge_sha} "):
            # Created before a crash, perhaps before the release learnt its id: its statuses match by id.
            deployment_id = noted.split(" ", 2)[2]
            return await self.apply(
                ref,
                lambda _: DeployProgress(
                    Actor("github"), Source.TIMER, None, merge_sha=merge_sha, deploy_id=deployment_id
                ),
            )
        if noted == f"dispatched {merge_sha}":
            return None  # sent before a crash; the run's events (or the reconcile sweep) tell the rest
        # A deploy that never reports (no statuses, a lost run) must not hold the release and the
        # environment for ever: look at it when its time is up.
        timeout = (await self.read.config(gh, ref.repo)).config.deploy.timeout
        watch = job_payload(release, merge_sha=merge_sha)
        await self.store.schedule_job(
            f"deploy-watch:{release.key}", "deploy-watch", watch, due_at=self.clock() + timeout, once=True
        )
        try:
            return await self._start_deploy(gh, ref, release, kind, name, merge_sha, marker, noted)
        except gidgethub.BadRequest as exc:
            if exc.status_code in (401, 403, 429) or exc.status_code >= 500:
                raise  # worth retrying (credentials refreshed, a limit waited out)
            # A workflow without a workflow_dispatch trigger (422), a file that is not there (404):
            # people must fix the repository; the release is merged but not deployed.
            detail = f"GitHub refused to start it ({exc.status_code}): {exc.args[0] if exc.args else ''}".rstrip(": ")
            return await self.deploy_failed(ref, release, merge_sha, detail)

    async def deploy_failed(self, ref: PullRef, release: Release, merge_sha: str, detail: str) -> Decision:
        decision = await self.apply(
            ref,
            lambda _: DeployProgress(
                Actor("github"), Source.TIMER, None, merge_sha=merge_sha, done=True, ok=False, detail=detail
            ),
            reply_key=f"deploy:{release.key}:done",
        )
        await self.store.release_lease(f"env:{release.lane}", release.key)
        return decision

    async def _reconcile_agent_deploy(self, release: Release) -> str | None:
        """A playbook deploy nobody follows (its worker died, its pushes lost): ask the agent."""
        noted = await self.store.get_value(f"deploy:{release.key}") or ""
        if self.agents is None or not noted.startswith("agent "):
            return None
        session = await self.agents.registry.session(noted.split(" ", 2)[2])
        if session is None or not session.task_id:
            return None
        if session.state not in FINAL_STATES:
            try:
                await self.agents.refresh(session, self.agent_update)
            except AgentError as exc:
                log.warning("asking the dev agent about %s failed: %s", release.key, exc.message)
                return None
        else:
            await self.agent_update(session, Update(task_id=session.task_id, state=session.state, final=True))
        return "deployed" if session.state in FINAL_STATES else None

    async def _cancel_agent_deploy(self, release: Release) -> None:
        """A playbook past the deploy's timeout is stopped on the agent (its process group killed)."""
        noted = await self.store.get_value(f"deploy:{release.key}") or ""
        if self.agents is None or not noted.startswith("agent "):
            return
        session = await self.agents.registry.session(noted.split(" ", 2)[2])
        if session is None:
            return
        try:
            await self.agents.cancel(session)
        except Exception as exc:  # noqa: BLE001 - the release fails either way; the agent's own timeout still applies
            log.warning("cancelling dev agent task %s failed: %s", session.task_id, exc)

    async def agent_problems(self, repo: str, skill: str) -> tuple[str, ...]:
        """Why the repository's dev agent cannot run `skill` now (none: it can)."""
        if self.agents is None:
            return ("the dev agent needs SECRETS_KEY (the bot's signing key for it is stored encrypted)",)
        try:
            await self.agents.agent_for(repo, skill)
        except AgentError as exc:
            return (exc.message,)
        return ()

    async def _agent_deploy(
        self, gh: GitHubAPI, ref: PullRef, release: Release, playbook: str, merge_sha: str, marker: str
    ) -> Decision | None:
        """The playbook on the dev agent, followed to its end: lines reach the progress comment (at most
        one update every few seconds), the outcome the release. A retry after a crash follows the
        session the first attempt stored instead of starting the playbook again."""
        assert self.agents is not None
        config = (await self.read.config(gh, ref.repo)).config
        parameters = self.playbook_parameters(config, release, merge_sha)
        try:
            # A session that ended already (merge_by: agent merged and deployed in one run) reports its end.
            session = await self._follow_agent(
                release,
                marker,
                merge_sha,
                skill=SKILL_RUN,
                playbook=playbook,
                parameters=parameters,
                requested_by=release.requested_by,
            )
        except AgentError as exc:
            if exc.retry:
                raise
            return await self.deploy_failed(ref, release, merge_sha, exc.message)
        log.info("dev agent session %s of %s ended %s", session.id, release.key, session.state)
        return None

    async def _follow_agent(
        self,
        release: Release,
        marker: str,
        sha: str,
        *,
        skill: str,
        playbook: str,
        parameters: dict[str, str],
        requested_by: str,
        on_session: Callable[[Session], Awaitable[None]] | None = None,
    ) -> Session:
        """Run a skill on the release's dev agent, or follow the session an earlier attempt noted under
        `marker` (for `sha`) instead of starting it again. `on_session` runs once the session is known,
        on every attempt (the attempt that started it may have died before it ran)."""
        assert self.agents is not None
        noted = await self.store.get_value(marker) or ""
        previous = None
        if noted.startswith(f"agent {sha} "):
            previous = await self.agents.registry.session(noted.split(" ", 2)[2])
        if previous is not None and on_session is not None:
            await on_session(previous)

        async def started(session: Session) -> None:
            await self.store.set_value(marker, f"agent {sha} {session.key}", now=self.clock())
            if on_session is not None:
                await on_session(session)

        return await self.agents.run(
            previous,
            repo=release.repo,
            release=release.key,
            skill=skill,
            playbook=playbook,
            parameters=parameters,
            requested_by=requested_by,
            on_start=started,
            on_update=self.agent_update,
        )

    async def agent_call(self, payload: dict[str, Any]) -> None:
        """A skill asked for through the API or MCP (`call_dev_agent`): run once on the release's dev agent
        (the agent checks its allowlist); its session, lines and outcome are read with the release."""
        release = await self.release_for(payload["repo"], int(payload["pr"]), int(payload["number"]))
        if release is None:
            return
        sha = release.merge_sha or release.head_sha
        try:
            await self._follow_agent(
                release,
                f"agent-call:{payload['call_id']}",
                sha,
                skill=payload["skill"],
                playbook=payload["playbook"],
                parameters=dict(payload["parameters"]),
                requested_by=payload["requested_by"],
            )
        except AgentError as exc:
            if exc.retry:
                raise
            log.warning("dev agent call %s refused: %s", payload["call_id"], exc)

    async def agent_rollback(self, gh: GitHubAPI, ref: PullRef, payload: dict[str, Any]) -> None:
        """`/ship rollback` on the dev agent: the rollback playbook with the release's parameters."""
        assert self.agents is not None
        release = await self.release_for(ref.repo, ref.pr, int(payload["number"]))
        if release is None or not release.merge_sha:
            return
        config = (await self.read.config(gh, ref.repo)).config
        parameters = self.playbook_parameters(config, release, release.merge_sha)
        marker = f"rollback:{release.key}"

        async def mark(session: Session) -> None:
            """The release knows its rollback."""
            actor = Actor(payload["requested_by"])
            run_id = f"agent:{session.id}"
            await self.apply(
                ref,
                lambda _: RollbackProgress(actor, Source.COMMENT, payload.get("delivery"), run_id=run_id),
                reply_key=f"rollback-start:{release.key}",
            )

        try:
            await self._follow_agent(
                release,
                marker,
                release.merge_sha,
                skill=SKILL_ROLLBACK,
                playbook=payload["playbook"],
                parameters=parameters,
                requested_by=payload["requested_by"],
                on_session=mark,
            )
        except AgentError as exc:
            if exc.retry:
                raise
            await self.reply(ref, f"@{payload['requested_by']} the rollback failed: {exc.message}.", key=marker)

    def playbook_parameters(self, config: RepoConfig, release: Release, merge_sha: str) -> dict[str, str]:
        values = {
            "merge_sha": merge_sha,  # empty when the agent merges (deploy.merge_by: agent)
            "sha": release.verified_sha or release.head_sha,
            "repo": release.repo,
            "pr": str(release.pr),
            "environment": config.deploy.environment or DEFAULT_ENVIRONMENT,
        }
        return {k: fill_placeholders(v, values) for k, v in config.deploy.parameters.items()}

    async def agent_update(self, session: Session, update: Update) -> None:
        """A dev agent session moved: its release's progress comment follows (lines at most every few
        seconds), and its final state ends the deploy."""
        if session.state in FINAL_STATES:
            self._agent_rendered.pop(session.id, None)
            self._agent_flushes.pop(session.id, None)
        repo, pr, number = parse_release_key(session.release)
        release = await self.release_for(repo, pr, number)
        if release is not None and session.skill == SKILL_ROLLBACK:
            if session.state in FINAL_STATES:
                ok = session.state == "completed"
                ref = PullRef(repo, pr, release.installation_id)
                await self.rollback_progress(
                    ref, run_id=f"agent:{session.id}", url=None, ok=ok, detail=session.outcome(), delivery=None
                )
            return
        if release is None or release.state != State.RELEASING:
            return
        ref = PullRef(repo, pr, release.installation_id)
        key = release.key
        if release.merge_sha is None:
            # deploy.merge_by: agent, still merging: its lines show; its end is the merge job's to read.
            if session.state not in FINAL_STATES and self._agent_lines_due(session, update):
                lines, total = tuple(session.log[-8:]), len(session.log)
                await self.apply(
                    ref,
                    lambda _: DeployProgress(
                        Actor("dev-agent"), Source.TIMER, None, merge_sha="", log=lines, log_total=total
                    ),
                )
            return

        def match(candidate: Release) -> bool:
            return candidate.key == key

        if session.state in FINAL_STATES:
            ok = session.state == "completed"
            detail = "" if ok else session.outcome()
            await self.deploy_progress(
                ref,
                merge_sha=release.merge_sha,
                deploy_id=session.task_id,
                url=None,
                done=True,
                ok=ok,
                detail=detail[:1500],
                delivery=None,
                match=match,
                lines=tuple(session.log[-8:]),
                log_total=len(session.log),
            )
            return
        if not self._agent_lines_due(session, update):
            return
        await self.deploy_progress(
            ref,
            merge_sha=release.merge_sha,
            deploy_id=session.task_id,
            url=None,
            done=False,
            ok=False,
            detail="",
            delivery=None,
            match=match,
            lines=tuple(session.log[-8:]),
            log_total=len(session.log),
        )

    def _agent_lines_due(self, session: Session, update: Update) -> bool:
        """Wall-clock spacing (GitHub's write pacing is in real seconds): lines come fast, and the release
        takes them a batch at a time; lines held back are flushed when the interval is over, so the
        last ones before a quiet spell still show."""
        rendered = self._agent_rendered.get(session.id)
        now = time.monotonic()
        if update.line is not None and rendered is not None and now - rendered < _AGENT_LOG_EVERY:
            flush = self._agent_flushes.get(session.id)
            if flush is None or flush.done():
                delay = _AGENT_LOG_EVERY - (now - rendered)
                self._agent_flushes[session.id] = asyncio.create_task(self._flush_agent_lines(session.key, delay))
            return False
        self._agent_rendered[session.id] = now
        return True

    async def _flush_agent_lines(self, session_key: str, delay: float) -> None:
        await asyncio.sleep(delay)
        assert self.agents is not None
        session = await self.agents.registry.session(session_key)
        if session is None or session.state in FINAL_STATES:
            return  # the final update showed them
        self._agent_rendered.pop(session.id, None)
        try:
            await self.agent_update(session, Update(task_id=session.task_id or "", state=session.state))
        except Exception as exc:  # noqa: BLE001 - the next line or the final state shows them anyway
            log.warning("showing the lines of agent session %s failed: %s", session.id, exc)

    async def agent_push(self, body: dict[str, Any]) -> None:
        """A verified push notification from a dev agent (queued by the web process)."""
        assert self.agents is not None
        response = ParseDict(body["event"], StreamResponse(), ignore_unknown_fields=True)
        session = await self.agents.registry.session(body["session"])
        if session is None:
            return
        for update in updates(response):
            await self.agents.absorb(session, update, self.agent_update)

    async def _start_deploy(
        self,
        gh: GitHubAPI,
        ref: PullRef,
        release: Release,
        kind: str,
        name: str,
        merge_sha: str,
        marker: str,
        noted: str,
    ) -> Decision | None:
        if kind == "playbook":
            return await self._agent_deploy(gh, ref, release, name, merge_sha, marker)
        if kind == "workflow":
            if noted == f"dispatching {merge_sha}":
                runs = await gh.getitem(
                    f"/repos/{ref.repo}/actions/runs?event=workflow_dispatch&head_sha={merge_sha}&per_page=20"
                )
                if any(str(r.get("path", "")).rsplit("/", 1)[-1] == name for r in runs.get("workflow_runs", [])):
                    return None  # it was sent; its workflow_run events tell the rest
            await self.store.set_value(marker, f"dispatching {merge_sha}", now=self.clock())
            # return_run_details: GitHub creates the run at once and says which it is.
            answer = await gh.post(
                f"/repos/{ref.repo}/actions/workflows/{quote(name, safe='')}/dispatches",
                data={"ref": release.base, "return_run_details": True},
            )
            await self.store.set_value(marker, f"dispatched {merge_sha}", now=self.clock())
            run_id = (answer or {}).get("workflow_run_id") if isinstance(answer, dict) else None
            if run_id is None:
                return None  # an older GitHub: the workflow_run events name the run
            url = answer.get("html_url")
            return await self.apply(
                ref,
                lambda _: DeployProgress(
                    Actor("github"), Source.TIMER, None, merge_sha=merge_sha, deploy_id=str(run_id), url=url
                ),
            )
        if kind == "deployment":
            body = {
                "ref": merge_sha,
                "environment": name,
                "auto_merge": False,
                "required_contexts": [],  # the bot verified the checks; the merge commit has none yet
                "description": f"Release of {release.repo}#{release.pr} by Release Secretary",
                "payload": {"release": release.key, "pull_request": release.pr},
            }
            deployment_id = None
            if noted == f"creating {merge_sha}":
                # Sent before a crash, perhaps: GitHub has it if so (our payload names the release).
                query = urlencode({"sha": merge_sha, "environment": name, "per_page": 30})
                async for found in gh.getiter(f"/repos/{ref.repo}/deployments?{query}"):
                    payload = found.get("payload")
                    if isinstance(payload, dict) and payload.get("release") == release.key:
                        deployment_id = str(found["id"])
                        break
            if deployment_id is None:
                await self.store.set_value(marker, f"creating {merge_sha}", now=self.clock())
                deployment = await gh.post(f"/repos/{ref.repo}/deployments", data=body)
                deployment_id = str(deployment["id"])
            await self.store.set_value(marker, f"created {merge_sha} {deployment_id}", now=self.clock())
            return await self.apply(
                ref,
                lambda _: DeployProgress(
                    Actor("github"), Source.TIMER, None, merge_sha=merge_sha, deploy_id=deployment_id
                ),
            )
        raise ValueError(f"unknown deploy target {kind} {name}")

    async def deploy_progress(
        self,
        ref: PullRef,
        *,
        merge_sha: str | None,
        deploy_id: str | None,
        url: str | None,
        done: bool,
        ok: bool,
        detail: str,
        delivery: str | None,
        match: Callable[[Release], bool],
        lines: tuple[str, ...] = (),
        log_total: int = 0,
    ) -> int:
        """A workflow run, deployment status or dev agent reported on: the releasing releases it belongs to
        follow."""
        count = 0
        for release in await self.store.find_releases(repo=ref.repo):
            if release.state != State.RELEASING or not release.merge_sha or not match(release):
                continue
            summary = ""
            if done and ok:
                summary = self.summary(release, release.verified_sha or release.head_sha, release.merge_sha, "")
                log = safe_url(url)
                target = escape_markdown(release.deploy_target or "")
                summary += f"\n**Deploy**: {target}" + (f" ([log]({log}))" if log else "") + "\n"
            sha = release.merge_sha
            await self.apply(
                PullRef(ref.repo, release.pr, ref.installation_id),
                lambda _, sha=sha, summary=summary: DeployProgress(  # type: ignore[misc]
                    Actor("github"),
                    Source.TIMER,
                    delivery,
                    merge_sha=sha,
                    deploy_id=deploy_id,
                    url=url,
                    done=done,
                    ok=ok,
                    detail=detail,
                    summary=summary,
                    log=lines,
                    log_total=log_total,
                ),
                reply_key=f"deploy:{release.key}:{'done' if done else 'progress'}",
            )
            if done:
                await self.store.release_lease(f"env:{release.lane}", release.key)
            count += 1
        return count

    def summary(self, release: Release, sha: str, merge_sha: str, method: str) -> str:
        """The summary comment: what shipped, when, after which checks, at whose request."""
        tz = ZoneInfo(release.timezone)
        window = format_slot(release.slot, tz) if release.slot else "now"
        now = self.clock()
        took = now - release.slot.start if release.slot and now > release.slot.start else timedelta(0)
        checks = release.checks
        green = ", ".join(escape_markdown(i.name) for i in checks.items) if checks and checks.items else "none"
        lines = [
            f"### ✅ Released `{release.repo}#{release.pr}`",
            "",
            "| | |",
            "| --- | --- |",
            f"| **Merged** | `{sha[:7]}` as `{merge_sha[:7]}`{f' ({method})' if method else ''} |",
            f"| **Requested by** | @{release.requested_by} |",
            f"| **Window** | {window} |",
            f"| **Required checks** | {green} |",
            f"| **Took** | {int(took.total_seconds())} s from the start of the window |",
            "",
        ]
        commits = release.commits[-20:]
        if commits:
            lines += ["**Commits**", ""]
            lines += [f"- `{c.sha[:7]}` {escape_markdown(c.message)}" for c in commits]
            if len(release.commits) > len(commits):
                lines.append(f"- … and {len(release.commits) - len(commits)} earlier")
        return "\n".join(lines) + "\n"

    async def _written(self, release: Release) -> Slot | None:
        """Where the bot last put (or last saw, and followed) the release's event."""
        raw = await self.store.get_value(f"calendar:written:{release.key}")
        if not raw:
            return None
        start, _, end = raw.partition(" ")
        return Slot(datetime.fromisoformat(start), datetime.fromisoformat(end))

    async def _note_written(self, release: Release, slot: Slot) -> None:
        value = f"{slot.start.isoformat()} {slot.end.isoformat()}"
        await self.store.set_value(f"calendar:written:{release.key}", value, now=self.clock())

    async def sync_calendar(self, gh: GitHubAPI, ref: PullRef, number: int) -> None:
        """Bring the release's calendar event in line with it; say so on the PR if people must act.

        A person may have moved or deleted the event since the bot last wrote it: that is noticed
        first (and the release follows or asks), never overwritten."""
        release = await self.release_for(ref.repo, ref.pr, number) if number else None
        release = release or await self.store.get_latest_release(ref.repo, ref.pr)
        if release is None:
            return
        wanted = self.calendars.wanted(release)
        synced_key = f"calendar:synced:{release.key}"
        booked = release.event_id is not None or release.slot is None or release.state == State.CANCELLED
        if booked and await self.store.get_value(synced_key) == wanted:
            return
        try:
            if release.event_id is not None and release.state != State.CANCELLED and not _embedded(release):
                seen = await self.calendars.observe(release, await self._written(release))
                if seen is not True:
                    await self._calendar_changed(gh, release, seen)
                    return  # the release's reaction (follow, block) schedules what is left to write
            event = await self.calendars.sync(release)
        except CalendarError as exc:
            if exc.retry:
                raise  # the worker retries with backoff, then parks it with the error
            text = f"@{release.requested_by} the release's calendar event could not be updated: {exc.message}"
            if exc.advice:
                text += f"\n\n{exc.advice}"
            await self.reply(ref, text, key=f"calendar-error:{release.key}:{wanted}")
            await self.store.set_value(synced_key, wanted, now=self.clock())
            return
        if event is not None and release.slot is not None and not event.cancelled:
            await self._note_written(release, release.slot)
            link = await self.calendars.feed_link(release.repo) if _embedded(release) else event.link
            slot_start = release.slot.start
            # Recorded on the release before the digest: a crash in between re-runs this job, which
            # then finds the event up to date and records it again.
            await self.apply(
                ref,
                lambda _: EventBooked(
                    Actor("calendar"),
                    Source.TIMER,
                    None,
                    slot_start=slot_start,
                    calendar_account=release.calendar_account or "embedded",
                    calendar_id=event.calendar,
                    event_id=event.id,
                    event_link=link,
                ),
            )
        await self.store.set_value(synced_key, wanted, now=self.clock())

    async def precheck(
        self, gh: GitHubAPI, ref: PullRef, *, slot_start: datetime, due_at: datetime, last_try: bool = False
    ) -> Decision | None:
        """T-minus: is the release still good to go at its slot? If not, say what and offer the next
        slot; and look again every few minutes until the slot, so a cleared conflict un-blocks it."""
        release = await self.store.get_active_release(ref.repo, ref.pr)
        if release is None or release.slot is None or release.slot.start != slot_start or release.state == State.HELD:
            return None
        loaded = await self.read.config(gh, ref.repo, fresh=True)
        config = loaded.config
        pull = await self.read.pull(gh, ref, commits=False)
        if pull.state != "open":
            return None  # the closed/merged webhook decides what happens to the release
        verdict = await self.read.checks(gh, ref.repo, pull.base, pull.head_sha, config)
        try:
            conflicts = tuple(await self.calendars.conflicts(release, config))
        except CalendarError as exc:
            if exc.retry and not last_try:
                raise  # an outage is retried, not taken for a conflict
            conflicts = (f"the calendar could not be checked: {exc.message}",)
        if config.deploy.playbook:  # found missing now, not at the slot: there is time to fix it
            conflicts += await self.agent_problems(ref.repo, SKILL_RUN)
        now = self.clock()
        proposal = None
        if conflicts or verdict.state != "green" or pull.head_sha != (release.verified_sha or release.head_sha):
            after = max(now + config.policy().lead_time, release.slot.end)
            proposal = await self.calendars.next_free(config, ref.repo, release.requested_by, after=after, own=release)
        late = now - due_at
        decision = await self.apply(
            ref,
            lambda _: Prechecked(
                Actor("release-secretary"),
                Source.TIMER,
                None,
                slot_start=slot_start,
                head_sha=pull.head_sha,
                checks=verdict,
                conflicts=conflicts,
                proposal=proposal,
                late_by=late if late > timedelta(minutes=1) else None,
            ),
            reply_key=f"tminus:{release.key}:{slot_start.isoformat()}",
        )
        after_check = decision.release
        if (
            after_check is not None
            and after_check.state == State.BLOCKED
            and after_check.slot is not None
            and after_check.slot.start == slot_start
            and after_check.prechecked_for == slot_start
            and now < slot_start
        ):
            # Blocked before its slot: look again shortly (a freeze event removed, CI fixed). The
            # reply above is sent once per slot, however many times this runs.
            await self._recheck_later(after_check, slot_start)
        return decision

    async def _recheck_later(self, release: Release, slot_start: datetime) -> None:
        now = self.clock()
        if now >= slot_start:
            return
        await self.set_timer("tminus", release, slot_start, min(now + _RECHECK, slot_start))

    async def precheck_failed(self, ref: PullRef, slot_start: datetime, error: str) -> Decision | None:
        release = await self.store.get_active_release(ref.repo, ref.pr)
        if release is None or release.slot is None or release.slot.start != slot_start:
            return None
        decision = await self.apply(
            ref,
            lambda current: Prechecked(
                Actor("release-secretary"),
                Source.TIMER,
                None,
                slot_start=slot_start,
                head_sha=current.head_sha if current else release.head_sha,
                checks=(current.checks if current and current.checks else ChecksVerdict(state="pending")),
                conflicts=(f"the pre-release check could not run ({redact(error)}); nobody verified the release",),
            ),
            # Its own key: an earlier check's message must not swallow this one.
            reply_key=f"tminus-failed:{release.key}:{slot_start.isoformat()}",
        )
        # It may work next time (GitHub back): look again, as for any blocked release.
        await self._recheck_later(release, slot_start)
        return decision

    async def watch_calendar(self, gh: GitHubAPI, release: Release) -> Decision | None:
        """Has a person moved or deleted the release's event? The release follows, or asks."""
        fresh = await self.store.get_active_release(release.repo, release.pr)
        if fresh is None or fresh.key != release.key or fresh.event_id is None or _embedded(fresh):
            return None  # nobody but the bot edits the embedded calendar
        if await self.store.get_value(f"calendar:synced:{fresh.key}") != self.calendars.wanted(fresh):
            return None  # a write is pending: that job looks at the event first, then writes
        try:
            seen = await self.calendars.observe(fresh, await self._written(fresh))
        except CalendarError as exc:
            log.warning("cannot look at the calendar event of %s: %s", fresh.key, exc.message)
            return None
        if seen is True:
            return None
        return await self._calendar_changed(gh, fresh, seen)

    async def _calendar_changed(self, gh: GitHubAPI, release: Release, seen: CalendarEvent | bool | None) -> Decision:
        assert release.event_id is not None and seen is not True
        ref = PullRef(release.repo, release.pr, release.installation_id)
        config = (await self.read.config(gh, release.repo)).config
        now = self.clock()
        moved_to = None
        problems: tuple[str, ...] = ()
        if isinstance(seen, CalendarEvent):
            moved_to = Slot(seen.start, seen.end)
            try:
                target = await self.calendars.target(config, release.repo, release.requested_by)
                busy = await self.calendars.busy(
                    config,
                    release.repo,
                    release.requested_by,
                    target,
                    start=now,
                    end=now + HORIZON,
                    own=release,
                    own_event=moved_to,
                )
            except CalendarError as exc:
                busy = []
                problems = (f"the calendars could not be read: {exc.message}",)
            policy = replace(config.policy(), slot=seen.end - seen.start) if seen.end > seen.start else config.policy()
            problems += tuple(slot_problems(seen.start, policy, now, busy=busy))
        proposal = None
        if moved_to is None or problems:
            proposal = await self.calendars.next_free(
                config, release.repo, release.requested_by, after=now + config.policy().lead_time, own=None
            )
        if moved_to is None:
            # The event is gone: whatever is booked next must be written again, even for the same slot.
            await self.store.delete_value(f"calendar:synced:{release.key}")
            await self.store.delete_value(f"calendar:written:{release.key}")
        else:
            # The calendar has this time now; the release takes it (or is blocked on it): not a new move.
            await self._note_written(release, moved_to)
        event_id = release.event_id
        return await self.apply(
            ref,
            lambda _: CalendarChanged(
                Actor("calendar"),
                Source.TIMER,
                None,
                event_id=event_id,
                moved_to=moved_to,
                problems=problems,
                proposal=proposal,
                timezone=config.timezone.key,
            ),
            reply_key=f"calendar-change:{release.key}:{moved_to.start.isoformat() if moved_to else 'deleted'}",
        )


def _embedded(release: Release) -> bool:
    return release.calendar_account in (None, "embedded")
