"""The worker: failures are retried with backoff, then parked with their error; good work is done once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.config import Settings
from bot.context import HandlerContext
from bot.github import RateLimitWaitTooLong
from bot.store import DeliveryStatus, NewDelivery
from bot.store.sqlite import SqliteStore
from bot.worker import Worker, backoff
from tests.helpers import webhook_body


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "w.db")
    await s.open()
    yield s
    await s.close()


async def _record(store: SqliteStore, clock: Clock, key: str = "d1") -> None:
    await store.record_delivery(
        NewDelivery(
            key=f"1:{key}",
            delivery_id=key,
            event="pull_request",
            action="labeled",
            installation_id=None,
            body=webhook_body("pull_request", "labeled"),
            received_at=clock(),
        )
    )


async def test_failing_handler_is_retried_then_parked_with_its_error(store: SqliteStore, settings: Settings) -> None:
    clock = Clock()
    router = routing.Router()
    calls: list[str] = []

    @router.register("pull_request", action="labeled")
    async def explode(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
        calls.append(event.delivery_id)
        raise ValueError("label payload without a name")

    worker = Worker(store, settings.replace(worker_max_attempts=3), router, None, clock=clock)
    await _record(store, clock)
    for attempt in range(1, 4):
        assert await worker.run_once() == 1
        d = await store.get_delivery("1:d1")
        assert d is not None and d.attempts == attempt
        clock.now = d.next_attempt_at + timedelta(seconds=1)
    assert calls == ["d1"] * 3
    parked = await store.get_delivery("1:d1")
    assert parked is not None and parked.status is DeliveryStatus.PARKED
    assert parked.last_error == "ValueError: label payload without a name"
    assert await worker.run_once() == 0


async def test_retry_waits_as_long_as_github_asks(store: SqliteStore, settings: Settings) -> None:
    clock = Clock()
    router = routing.Router()

    @router.register("pull_request")
    async def limited(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
        raise RateLimitWaitTooLong(900)

    worker = Worker(store, settings, router, None, clock=clock)
    await _record(store, clock)
    await worker.run_once()
    d = await store.get_delivery("1:d1")
    assert d is not None and d.status is DeliveryStatus.PENDING
    assert d.next_attempt_at == clock.now + timedelta(seconds=900)
    assert "rate limit" in (d.last_error or "")


async def test_success_is_done_once(store: SqliteStore, settings: Settings) -> None:
    clock = Clock()
    router = routing.Router()
    seen: list[str] = []

    @router.register("pull_request")
    async def ok(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
        seen.append(event.data["action"])

    worker = Worker(store, settings, router, None, clock=clock)
    for i in range(5):
        await _record(store, clock, f"d{i}")
    assert await worker.drain() == 5
    assert seen == ["labeled"] * 5
    assert worker.processed == 5
    assert await worker.drain() == 0


def test_backoff_grows_and_is_capped() -> None:
    assert 1.0 <= backoff(1, 2.0) <= 2.0
    assert 8.0 <= backoff(4, 2.0) <= 16.0
    assert 1800.0 <= backoff(30, 2.0) <= 3600.0


class FlakyStore(SqliteStore):
    """The database drops out once while the worker is idle."""

    failures = 1

    async def next_delivery_due(self):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        return await super().next_delivery_due()


async def test_worker_survives_a_store_outage_while_idle(tmp_path: Path, settings: Settings) -> None:
    import asyncio

    store = FlakyStore(tmp_path / "flaky.db")
    await store.open()
    try:
        router = routing.Router()
        seen: list[str] = []

        @router.register("pull_request")
        async def ok(event: sansio.Event, gh: GitHubAPI, *, ctx: HandlerContext) -> None:
            seen.append(event.delivery_id)

        worker = Worker(store, settings, router, None)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.2)  # idle: the outage happens here
        await _record(store, Clock(), "after-outage")
        worker.notify()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        assert seen == ["after-outage"] and store.failures == 0
    finally:
        await store.close()


async def test_work_claimed_for_a_key_still_running_runs_after_it_not_never(
    store: SqliteStore, settings: Settings
) -> None:
    """A render requested again while it runs is claimed the moment the old run finishes in the
    store, before its task is done. Dropping that claim left the job leased and idle for a lease
    (a minute without updates on the PR); it must run right after the old one instead."""
    import asyncio

    worker = Worker(store, settings, routing.Router(), None, clock=Clock())
    order: list[str] = []
    release_first = asyncio.Event()

    async def first() -> None:
        order.append("first started")
        await release_first.wait()
        order.append("first done")

    async def second() -> None:
        order.append("second ran")

    inflight: set[asyncio.Task[None]] = set()
    assert worker._start(inflight, worker._job_keys, "render:o/r#1", first(), 1)
    # The same request claimed again (its lease lapsed in a store blip) is not run a second time...
    assert not worker._start(inflight, worker._job_keys, "render:o/r#1", second(), 1)
    # ...but a newer request for the key (seq 2) runs after the one in progress.
    assert worker._start(inflight, worker._job_keys, "render:o/r#1", second(), 2)
    await asyncio.sleep(0)
    assert order == ["first started"]  # never side by side
    assert list(worker._job_keys) == ["render:o/r#1"]  # still leased and heartbeated
    release_first.set()
    await asyncio.wait_for(asyncio.gather(*inflight), timeout=5)
    assert order == ["first started", "first done", "second ran"]
    assert worker._job_keys == {} and worker._seqs == {}


async def test_a_write_waiting_for_its_turn_waits_in_the_queue_not_in_a_slot(
    store: SqliteStore, app_settings: Settings, fake_github: object
) -> None:
    """Writes are spaced per installation. A reply whose installation wrote a moment ago goes back
    to the queue until its turn (no attempt spent), so waiting writes never fill the worker's slots."""
    import time

    import aiohttp

    from bot.github import GitHubApp
    from tests.fakes.github import FakeGitHub

    assert isinstance(fake_github, FakeGitHub)
    fake_github.add_pull("octo-org/widgets", 7, head_sha="a" * 40, title="t", user_login="alice")
    settings = app_settings.replace(github_write_interval=1.0)
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        github = GitHubApp(settings, session)
        worker = Worker(store, settings, routing.Router(), github, clock=clock)
        github.pacer(99)._next_write = time.monotonic() + 0.6  # it just wrote
        payload = {"repo": "octo-org/widgets", "pr": 7, "installation_id": 99, "text": "hello"}
        await store.schedule_job("reply:d1:0", "reply", payload, due_at=clock(), once=True)
        started = time.perf_counter()
        assert await worker.run_once() == 1
        assert time.perf_counter() - started < 0.3  # it did not sleep in the slot
        assert fake_github.calls("issues/create-comment") == []
        due = await store.next_job_due()
        assert due is not None and timedelta(seconds=0.3) < due - clock() <= timedelta(seconds=0.6)
        await asyncio.sleep(0.65)
        clock.now = due
        assert await worker.run_once() == 1
        [posted] = fake_github.calls("issues/create-comment")
        assert posted.json is not None and posted.json["body"].startswith("hello\n<!-- release-secretary:reply ")


async def test_a_reply_posted_by_a_run_that_died_is_not_posted_again(
    store: SqliteStore, app_settings: Settings, fake_github: object
) -> None:
    from dataclasses import replace

    import aiohttp

    from bot.github import GitHubApp
    from bot.store.base import Job
    from tests.fakes.github import FakeGitHub

    assert isinstance(fake_github, FakeGitHub)
    fake_github.add_pull("octo-org/widgets", 7, head_sha="a" * 40, title="t", user_login="alice")
    async with aiohttp.ClientSession() as session:
        worker = Worker(store, app_settings, routing.Router(), GitHubApp(app_settings, session), clock=Clock())
        assert worker.executor is not None
        payload = {"repo": "octo-org/widgets", "pr": 7, "installation_id": 99, "text": "### ✅ Released"}
        first = Job(key="reply:summary:o/r#7/1:1", kind="reply", payload=payload, due_at=Clock()(), attempts=1)
        await worker.executor.run(first)
        # The worker died before noting the job done; its lease lapsed and another run claims it.
        await worker.executor.run(replace(first, attempts=2))
        assert len(fake_github.calls("issues/create-comment")) == 1
        # A different reply is posted, even on a retry.
        other = replace(first, key="reply:summary:o/r#8/1:1", attempts=2)
        await worker.executor.run(other)
        assert len(fake_github.calls("issues/create-comment")) == 2
