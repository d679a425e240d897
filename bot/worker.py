"""The worker: claims stored webhook deliveries under leases, dispatches them, retries, parks failures.

Any number of workers may share a store. A claim is a lease: a worker that dies mid-job simply stops
renewing nothing, its lease expires, and another worker (or the same one after a restart) takes the
delivery over. Every claim counts as an attempt, so an event that crashes its worker is parked too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

import gidgethub
import orjson
from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from chatops.runtime import CHAT_JOBS, Chat

from .config import Settings
from .context import HandlerContext, utcnow
from .effects import EffectExecutor, NotYet
from .github import GitHubApp, RateLimitWaitTooLong
from .logs import log_context, redact
from .redelivery import sweep_failed_deliveries
from .service import SERVICE_JOBS, ReleaseService
from .store import Delivery, Store
from .store.base import Job
from .tracker import PullTracker

log = logging.getLogger(__name__)

_MAX_BACKOFF = 3600.0


async def _after(previous: asyncio.Task[None], work: Coroutine[Any, Any, None]) -> None:
    try:
        await asyncio.wait([previous])
    except BaseException:
        work.close()  # cancelled at shutdown before it started: never run, and no "never awaited"
        raise
    await work


_OUTBOX_EVERY = timedelta(seconds=10)
_PURGE_EVERY = timedelta(minutes=10)
DELIVERY_RETENTION = timedelta(days=7)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def backoff(attempts: int, base: float) -> float:
    """Exponential backoff with full jitter on the upper half, capped at an hour."""
    ceiling = min(_MAX_BACKOFF, base * 2.0 ** max(0, attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def subject_of(repo: str | None, data: dict[str, Any]) -> str | None:
    """What an event is about, so events about one thing run one at a time: a PR, or a commit's checks."""
    if not repo:
        return None
    number = (data.get("pull_request") or data.get("issue") or {}).get("number")
    if number is not None:
        return f"{repo}#{number}"
    sha = (data.get("check_suite") or data.get("check_run") or {}).get("head_sha") or data.get("sha")
    return f"{repo}@{sha}" if sha else None


def _permanent(exc: BaseException) -> bool:
    """A 4xx that no retry can fix (locked PR, deleted comment, refused body); not auth or rate limits."""
    return isinstance(exc, gidgethub.HTTPException) and exc.status_code in (400, 404, 410, 422)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, gidgethub.HTTPException):
        text = f"GitHub answered {exc.status_code}: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(text)[:2000]


class Worker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        router: routing.Router,
        github: GitHubApp | None,
        *,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        chat: Chat | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.router = router
        self.github = github
        self.clock = clock
        self.owner = owner or worker_id()
        self.service = ReleaseService(store, settings, clock)
        self.ctx = HandlerContext(store=store, settings=settings, clock=clock, service=self.service)
        self.tracker = PullTracker(store, self.service.read, clock)
        self.executor = EffectExecutor(store, github, clock) if github is not None else None
        # Slack and Telegram: the web app's when it runs in this process, else the worker's own.
        self._own_chat = chat is None and settings.chat_configured
        self.chat = chat or (Chat(store, settings, clock, self.service, github) if self._own_chat else None)
        self.wakeup = asyncio.Event()
        self.processed = 0
        self._last_purge: datetime | None = None
        self._last_outbox: datetime | None = None
        self._last_sweep: datetime | None = None
        self._last_watch: datetime | None = None
        self._last_reconcile: datetime | None = None
        self._reconciling: asyncio.Task[dict[str, int]] | None = None
        self._watching: asyncio.Task[int] | None = None
        self._last_heartbeat: datetime | None = None
        self._delivery_keys: dict[str, asyncio.Task[None]] = {}
        self._subjects: dict[str, tuple[asyncio.Lock, int]] = {}
        self._job_keys: dict[str, asyncio.Task[None]] = {}
        self._seqs: dict[str, int] = {}  # the request (job seq) each running job key is on

    def notify(self) -> None:
        """Called by the web side of the same process when a delivery was stored."""
        self.wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """A pool, not batches: a slot freed by a finished task is refilled at once, so one slow job
        (say, a write waiting out GitHub's pacing) never holds up the deliveries behind it."""
        log.info("worker started", extra={"worker": self.owner, "store": self.settings.store_kind})
        if self.chat is not None and self._own_chat:
            await self.chat.start(intake=False)
        inflight: set[asyncio.Task[None]] = set()
        # Its own task: a long sweep or a slow store call in this loop must not let leases lapse.
        heartbeat = asyncio.create_task(self._heartbeat_loop(stop))
        while not stop.is_set():
            claimed = 0
            try:
                if self.github is not None and not self.github.credentials.configured:
                    await self.github.credentials.refresh()  # an App registered by the web process (rate-limited)
                claimed = await self._fill(inflight)
                await self._maybe_purge()
                await self._maybe_recover_outbox()
                await self._maybe_sweep()
                self._maybe_watch_calendars()
                self._maybe_reconcile()
                if claimed == 0 or len(inflight) >= self.settings.worker_concurrency:
                    await self._idle(stop, inflight)
            except Exception:
                # The store went away for a moment: keep the worker alive and try again shortly.
                log.exception("worker loop error")
                await asyncio.sleep(self.settings.worker_poll_interval)
        if inflight:
            _, unfinished = await asyncio.wait(inflight, timeout=self.settings.worker_lease_seconds / 2)
            for task in unfinished:  # their leases lapse and another worker takes them over
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        heartbeat.cancel()
        background: list[asyncio.Task[Any]] = [t for t in (self._watching, self._reconciling) if t is not None]
        for running in background:
            running.cancel()
        await asyncio.gather(heartbeat, *background, return_exceptions=True)
        if self.chat is not None and self._own_chat:
            await self.chat.close()
        log.info("worker stopped", extra={"worker": self.owner, "processed": self.processed})

    async def _fill(self, inflight: set[asyncio.Task[None]]) -> int:
        free = self.settings.worker_concurrency - len(inflight)
        if free <= 0:
            return 0
        now = self.clock()
        lease = self.settings.worker_lease_seconds
        deliveries = await self.store.claim_deliveries(self.owner, now=now, lease_seconds=lease, limit=free)
        # A key still running here (its newer request was claimed while the old run was finishing,
        # or its lease lapsed during a store blip) runs again after it, never beside it.
        started = sum(self._start(inflight, self._delivery_keys, d.key, self.process(d), None) for d in deliveries)
        free -= len(deliveries)
        if free > 0 and self.executor is not None:
            jobs = await self.store.claim_jobs(self.owner, now=now, lease_seconds=lease, limit=free)
            started += sum(self._start(inflight, self._job_keys, j.key, self.run_job(j), j.seq) for j in jobs)
        return started

    def _start(
        self,
        inflight: set[asyncio.Task[None]],
        running: dict[str, asyncio.Task[None]],
        key: str,
        work: Coroutine[Any, Any, None],
        seq: int | None,
    ) -> bool:
        """Run claimed work. A job requested again while it runs is claimed as soon as the old run
        finishes in the store, before its task is done: that newer request (another `seq`) queues
        behind it, since dropping the claim would leave it leased and idle until the lease lapsed.
        The same request claimed again (its lease lapsed during a store blip) is not run twice."""
        previous = running.get(key)
        if previous is not None and (seq is None or self._seqs.get(key) == seq):
            work.close()
            return False
        task = asyncio.create_task(work if previous is None else _after(previous, work))
        running[key] = task
        if seq is not None:
            self._seqs[key] = seq
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        task.add_done_callback(lambda done: self._forget(running, key, done))
        return True

    def _forget(self, running: dict[str, asyncio.Task[None]], key: str, done: asyncio.Task[None]) -> None:
        if running.get(key) is done:
            del running[key]
            self._seqs.pop(key, None)

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._heartbeat()
            except Exception:
                log.exception("lease heartbeat failed")
            await asyncio.sleep(self.settings.worker_lease_seconds / 6)

    async def _heartbeat(self) -> None:
        """Renew the leases of everything in progress well before they lapse (every third of a lease)."""
        now = self.clock()
        if self._last_heartbeat is not None and (now - self._last_heartbeat).total_seconds() < (
            self.settings.worker_lease_seconds / 3
        ):
            return
        self._last_heartbeat = now
        if self._delivery_keys or self._job_keys:
            await self.store.extend_leases(
                self.owner,
                deliveries=sorted(self._delivery_keys),
                jobs=sorted(self._job_keys),
                until=now + timedelta(seconds=self.settings.worker_lease_seconds),
            )

    async def _idle(self, stop: asyncio.Event, inflight: set[asyncio.Task[None]]) -> None:
        timeout = self.settings.worker_poll_interval
        if not inflight:
            # Busy, a finishing task wakes us anyway; idle, sleep exactly until the next due work.
            dues = [await self.store.next_delivery_due(), await self.store.next_job_due()]
            due = min((d for d in dues if d is not None), default=None)
            if due is not None:
                timeout = max(0.0, min(timeout, (due - self.clock()).total_seconds()))
        self.wakeup.clear()
        waiters = [asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait([*waiters, *inflight], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and jobs and process them; return how many were claimed."""
        now = self.clock()
        batch = await self.store.claim_deliveries(
            self.owner,
            now=now,
            lease_seconds=self.settings.worker_lease_seconds,
            limit=self.settings.worker_concurrency,
        )
        if batch:
            await asyncio.gather(*(self.process(d) for d in batch))
        jobs: list[Job] = []
        if self.executor is not None:
            jobs = await self.store.claim_jobs(
                self.owner,
                now=self.clock(),
                lease_seconds=self.settings.worker_lease_seconds,
                limit=self.settings.worker_concurrency,
            )
            if jobs:
                await asyncio.gather(*(self.run_job(j) for j in jobs))
        return len(batch) + len(jobs)

    async def run_job(self, job: Job) -> None:
        assert self.executor is not None
        with log_context(job=job.key, job_kind=job.kind):
            try:
                if job.kind in SERVICE_JOBS:
                    assert self.github is not None
                    gh = self.github.installation_client(int(job.payload["installation_id"]))
                    await self.service.run_job(job, gh)
                elif job.kind == "agent-push":
                    await self.service.agent_push(job.payload)
                elif job.kind in CHAT_JOBS:
                    if self.chat is None:
                        raise RuntimeError("Slack and Telegram are not configured in this process")
                    await self.chat.run_job(job)
                else:
                    await self.executor.run(job)
            except NotYet as exc:
                await self.store.defer_job(job, self.owner, due_at=self.clock() + timedelta(seconds=exc.seconds))
                return
            except Exception as exc:  # noqa: BLE001 - retried with backoff, then parked with its error
                error = describe_error(exc)
                if _permanent(exc) or job.attempts >= self.settings.worker_max_attempts:
                    await self.store.park_job(job, self.owner, error=error)
                    log.error("job parked after %d attempts: %s", job.attempts, error)
                    return
                delay = (
                    exc.seconds
                    if isinstance(exc, RateLimitWaitTooLong)
                    else backoff(job.attempts, self.settings.worker_retry_base)
                )
                await self.store.retry_job(
                    job, self.owner, error=describe_error(exc), due_at=self.clock() + timedelta(seconds=delay)
                )
                log.warning("job failed (attempt %d), retrying in %.1fs: %s", job.attempts, delay, describe_error(exc))
                return
            await self.store.finish_job(job, self.owner)

    async def drain(self, *, max_rounds: int = 100) -> int:
        """Process until nothing is due (tests and the CLI's one-shot mode)."""
        total = 0
        for _ in range(max_rounds):
            handled = await self.run_once()
            total += handled
            if not handled:
                break
        return total

    def _client_for(self, delivery: Delivery) -> GitHubAPI | None:
        if self.github is None:
            return None
        if delivery.installation_id is not None and self.github.configured:
            return self.github.installation_client(delivery.installation_id)
        return self.github.anonymous_client()

    async def process(self, delivery: Delivery) -> None:
        data = orjson.loads(delivery.body)
        repo = (data.get("repository") or {}).get("full_name")
        with log_context(
            delivery=delivery.delivery_id,
            gh_event=delivery.event,
            action=delivery.action,
            installation=delivery.installation_id,
            repo=repo,
        ):
            event = sansio.Event(data, event=delivery.event, delivery_id=delivery.delivery_id)
            if delivery.installation_id is not None and self.github is not None and not self.github.configured:
                await self.github.credentials.refresh()  # registered on the setup page, by another process?
            try:
                # Events about one PR run one at a time, in the order they were claimed (oldest
                # first): `/ship` then `/ship cancel` must not finish in the opposite order.
                async with self._subject_lock(subject_of(repo, data)):
                    await self.router.dispatch(event, self._client_for(delivery), ctx=self.ctx)
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then parked
                await self._failed(delivery, exc)
                return
            if await self.store.finish_delivery(delivery.key, self.owner, now=self.clock()):
                self.processed += 1
                log.debug("delivery processed", extra={"attempt": delivery.attempts})
            else:
                log.warning("delivery lease lost before it finished; another worker has it")

    @contextlib.asynccontextmanager
    async def _subject_lock(self, subject: str | None) -> AsyncIterator[None]:
        if subject is None:
            yield
            return
        lock, users = self._subjects.get(subject, (asyncio.Lock(), 0))
        self._subjects[subject] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._subjects[subject]
            if users == 1:
                del self._subjects[subject]
            else:
                self._subjects[subject] = (lock, users - 1)

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        error = describe_error(exc)
        now = self.clock()
        if delivery.attempts >= self.settings.worker_max_attempts:
            await self.store.park_delivery(delivery.key, self.owner, error=error, now=now)
            log.error(
                "delivery parked after %d attempts: %s",
                delivery.attempts,
                error,
                exc_info=exc,
            )
            return
        if isinstance(exc, RateLimitWaitTooLong):
            delay = exc.seconds
        else:
            delay = backoff(delivery.attempts, self.settings.worker_retry_base)
        await self.store.retry_delivery(
            delivery.key, self.owner, error=error, next_attempt_at=now + timedelta(seconds=delay)
        )
        log.warning(
            "delivery failed (attempt %d), retrying in %.1fs: %s",
            delivery.attempts,
            delay,
            error,
            exc_info=exc,
        )

    def _maybe_reconcile(self) -> None:
        """Now and then, re-read tracked PRs for what webhooks missed (in the background)."""
        interval = self.settings.reconcile_interval
        if interval <= 0 or self.github is None or not self.github.configured:
            return
        if self._reconciling is not None and not self._reconciling.done():
            return
        now = self.clock()
        if self._last_reconcile is not None and (now - self._last_reconcile).total_seconds() < interval:
            return
        self._last_reconcile = now
        self._reconciling = asyncio.create_task(self.reconcile())

    async def reconcile(self) -> dict[str, int]:
        """One pass over the active releases, then over the PR records webhooks left stale; how many of
        each kind of change it caught."""
        assert self.github is not None
        seconds = max(self.settings.reconcile_interval, 60.0)
        if not await self.store.acquire_lease("reconcile", self.owner, now=self.clock(), seconds=seconds):
            return {}
        found: dict[str, int] = {}
        releases = await self.store.find_releases(active_only=True, limit=10_000)
        for release in releases:
            try:
                gh = self.github.installation_client(release.installation_id)
                what = await self.service.reconcile(gh, release)
                # The PR's record probes the same URLs: their ETags are settled once both have seen them.
                if await self._reconcile_pull(gh, release.repo, release.pr, release.installation_id):
                    gh.settle()  # handled: the probes' new ETags may be trusted now
            except Exception as exc:  # noqa: BLE001 - one PR's trouble must not stop the pass
                log.warning("reconciling %s failed: %s", release.key, describe_error(exc))
                continue
            if what:
                found[what] = found.get(what, 0) + 1
        try:
            swept = await self.tracker.sweep(
                self.github.installation_client,
                skip=[(release.repo, release.pr) for release in releases],
                stale_after=timedelta(seconds=self.settings.reconcile_interval),
            )
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            log.warning("sweeping PR records failed: %s", describe_error(exc))
        else:
            log.debug("PR records swept", extra=swept)
        if found:
            log.info("reconcile sweep caught what webhooks missed", extra={"found": found})
        return found

    async def _reconcile_pull(self, gh: GitHubAPI, repo: str, pr: int, installation_id: int) -> bool:
        """The PR's record against GitHub; False when that failed (the probes must then not be settled)."""
        try:
            await self.tracker.reconcile(gh, repo, pr, installation_id)
        except Exception as exc:  # noqa: BLE001 - the release's reconcile happened; the next sweep retries this
            log.warning("reconciling the record of %s#%d failed: %s", repo, pr, describe_error(exc))
            return False
        return True

    def _maybe_watch_calendars(self) -> None:
        """Now and then, look at booked Google events for moves and deletions (in the background)."""
        interval = self.settings.calendar_sweep_interval
        if interval <= 0 or self.github is None or not self.github.configured:
            return
        if self._watching is not None and not self._watching.done():
            return
        now = self.clock()
        if self._last_watch is not None and (now - self._last_watch).total_seconds() < interval:
            return
        self._last_watch = now
        self._watching = asyncio.create_task(self.watch_calendars())

    async def watch_calendars(self) -> int:
        """One pass over active releases booked in Google; return how many changed."""
        assert self.github is not None
        now = self.clock()
        seconds = max(self.settings.calendar_sweep_interval, 60.0)
        if not await self.store.acquire_lease("calendar-watch", self.owner, now=now, seconds=seconds):
            return 0  # another worker is on it
        changed = 0
        for release in await self.store.find_releases(active_only=True, limit=10_000):
            if release.event_id is None or release.calendar_account in (None, "embedded"):
                continue
            try:
                gh = self.github.installation_client(release.installation_id)
                if await self.service.watch_calendar(gh, release) is not None:
                    changed += 1
            except Exception as exc:  # noqa: BLE001 - one release's trouble must not stop the pass
                log.warning("calendar check of %s failed: %s", release.key, describe_error(exc))
        return changed

    async def _maybe_sweep(self) -> None:
        interval = self.settings.redelivery_sweep_interval
        if interval <= 0 or self.github is None or not self.github.configured:
            return
        now = self.clock()
        if self._last_sweep is not None and (now - self._last_sweep).total_seconds() < interval:
            return
        self._last_sweep = now
        try:
            result = await sweep_failed_deliveries(self.github, self.store, owner=self.owner, now=now)
        except Exception as exc:  # noqa: BLE001 - the sweep is best effort; the next one tries again
            log.warning("webhook redelivery sweep failed: %s", describe_error(exc))
            return
        if result is not None and result.failed:
            log.info(
                "redelivery sweep: %d failed deliveries, %d redelivered, %d given up",
                result.failed,
                result.redelivered,
                result.gave_up,
            )

    async def _maybe_recover_outbox(self) -> None:
        """At start and every 10 seconds: jobs a crashed process saved with a release but never queued."""
        now = self.clock()
        if self._last_outbox is not None and now - self._last_outbox < _OUTBOX_EVERY:
            return
        self._last_outbox = now
        recovered = await self.store.recover_outbox()
        if recovered:
            log.warning("queued %d jobs left in the outbox by a crash", recovered)

    async def _maybe_purge(self) -> None:
        now = self.clock()
        if self._last_purge is not None and now - self._last_purge < _PURGE_EVERY:
            return
        self._last_purge = now
        purged = await self.store.purge_deliveries(finished_before=now - DELIVERY_RETENTION)
        purged += await self.store.purge_jobs(finished_before=now - DELIVERY_RETENTION)
        # The change feed is for readers catching up after a drop, not an archive.
        purged += await self.store.purge_events(before=now - DELIVERY_RETENTION)
        if purged:
            log.info("purged %d processed deliveries older than %s", purged, DELIVERY_RETENTION)
