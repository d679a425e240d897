"""One contract for every store: SQLite always, MongoDB when MONGODB_URI points at a server."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.prstate import CheckRunInfo, CommitInfo, PullState, ShaChecks, StatusInfo
from bot.release import Release, State
from bot.secrets import SecretBox, generate_key
from bot.store import DeliveryStatus, Installation, JobSpec, NewDelivery, Store, VersionConflict
from bot.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "store.db")
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        pytest.skip("MongoDB leg of the store contract: set MONGODB_URI to a server to run it")
    from bot.store.mongo import MongoStore

    mongo = MongoStore(uri, database=f"rs_test_{uuid.uuid4().hex[:8]}")
    await mongo.open()
    await mongo.drop_everything()
    yield mongo
    await mongo.drop_everything()
    await mongo.close()


def delivery(n: int | str, *, event: str = "pull_request", at: datetime = T0, body: bytes | None = None) -> NewDelivery:
    return NewDelivery(
        key=f"1:{n}",
        delivery_id=str(n),
        event=event,
        action="labeled",
        installation_id=42,
        body=body if body is not None else b'{"action": "labeled", "n": "%s"}' % str(n).encode(),
        received_at=at,
    )


async def test_record_is_idempotent_per_key(store: Store) -> None:
    first = delivery("a")
    assert await store.record_delivery(first) is True
    assert await store.record_delivery(first) is False
    stored = await store.get_delivery("1:a")
    assert stored is not None
    assert stored.body == first.body
    assert stored.status is DeliveryStatus.PENDING
    assert stored.attempts == 0
    assert (await store.count_deliveries())[DeliveryStatus.PENDING] == 1


async def test_concurrent_records_in_one_burst_keep_every_row_once(store: Store) -> None:
    keys = [f"burst-{i % 150}" for i in range(300)]  # each key twice, interleaved
    results = await asyncio.gather(*(store.record_delivery(delivery(k)) for k in keys))
    assert sum(results) == 150
    assert (await store.count_deliveries())[DeliveryStatus.PENDING] == 150


async def test_large_body_round_trips(store: Store) -> None:
    body = b'{"x": "' + b"y" * 2_000_000 + b'"}'
    await store.record_delivery(delivery("big", body=body))
    stored = await store.get_delivery("1:big")
    assert stored is not None and stored.body == body


async def test_claims_are_leases_and_exclusive(store: Store) -> None:
    for i in range(5):
        await store.record_delivery(delivery(i, at=T0 + timedelta(seconds=i)))
    a = await store.claim_deliveries("worker-a", now=T0 + timedelta(seconds=10), lease_seconds=30, limit=3)
    b = await store.claim_deliveries("worker-b", now=T0 + timedelta(seconds=10), lease_seconds=30, limit=10)
    assert [d.delivery_id for d in a] == ["0", "1", "2"]
    assert sorted(d.delivery_id for d in b) == ["3", "4"]
    assert all(d.status is DeliveryStatus.PROCESSING and d.attempts == 1 for d in a + b)
    assert await store.claim_deliveries("worker-c", now=T0 + timedelta(seconds=20), lease_seconds=30, limit=10) == []


async def test_expired_lease_is_taken_over_and_old_owner_loses(store: Store) -> None:
    await store.record_delivery(delivery("x"))
    [mine] = await store.claim_deliveries("crashed", now=T0, lease_seconds=30, limit=1)
    assert await store.claim_deliveries("other", now=T0 + timedelta(seconds=29), lease_seconds=30, limit=1) == []
    [taken] = await store.claim_deliveries("other", now=T0 + timedelta(seconds=31), lease_seconds=30, limit=1)
    assert taken.key == mine.key and taken.attempts == 2 and taken.lease_owner == "other"
    assert await store.finish_delivery("1:x", "crashed", now=T0) is False
    assert await store.finish_delivery("1:x", "other", now=T0 + timedelta(seconds=32)) is True
    done = await store.get_delivery("1:x")
    assert done is not None and done.status is DeliveryStatus.DONE and done.lease_owner is None


async def test_retry_waits_for_its_time_then_parks_and_requeues(store: Store) -> None:
    await store.record_delivery(delivery("r"))
    await store.claim_deliveries("w", now=T0, lease_seconds=30, limit=1)
    later = T0 + timedelta(seconds=60)
    assert await store.retry_delivery("1:r", "w", error="boom", next_attempt_at=later)
    assert await store.next_delivery_due() == later
    assert await store.claim_deliveries("w", now=later - timedelta(seconds=1), lease_seconds=30, limit=1) == []
    [again] = await store.claim_deliveries("w", now=later, lease_seconds=30, limit=1)
    assert again.attempts == 2 and again.last_error == "boom"
    assert await store.park_delivery("1:r", "w", error="still boom", now=later)
    parked = await store.list_deliveries(DeliveryStatus.PARKED)
    assert [(d.key, d.last_error) for d in parked] == [("1:r", "still boom")]
    assert await store.claim_deliveries("w", now=later + timedelta(days=1), lease_seconds=30, limit=1) == []
    assert await store.requeue_delivery("1:r", now=later) is True
    assert await store.requeue_delivery("1:r", now=later) is False
    [fresh] = await store.claim_deliveries("w", now=later, lease_seconds=30, limit=1)
    assert fresh.attempts == 1


async def test_list_is_newest_first_and_purge_drops_old_done(store: Store) -> None:
    for i in range(3):
        await store.record_delivery(delivery(i, at=T0 + timedelta(minutes=i)))
    assert [d.delivery_id for d in await store.list_deliveries(limit=2)] == ["2", "1"]
    for d in await store.claim_deliveries("w", now=T0 + timedelta(hours=1), lease_seconds=30, limit=2):
        await store.finish_delivery(d.key, "w", now=T0 + timedelta(hours=1))
    assert await store.purge_deliveries(finished_before=T0 + timedelta(hours=2)) == 2
    assert [d.delivery_id for d in await store.list_deliveries()] == ["2"]


async def test_installations_are_versioned(store: Store) -> None:
    inst = Installation(id=7, account_login="octo-org", repositories=("octo-org/a",))
    saved = await store.save_installation(inst)
    assert saved.version == 1
    with pytest.raises(VersionConflict):
        await store.save_installation(inst)  # a second insert of version 0
    updated = await store.save_installation(replace(saved, repositories=("octo-org/a", "octo-org/b")))
    assert updated.version == 2
    with pytest.raises(VersionConflict):
        await store.save_installation(replace(saved, suspended=True))  # stale version 1
    got = await store.get_installation(7)
    assert got is not None and got.repositories == ("octo-org/a", "octo-org/b") and got.version == 2
    assert [i.id for i in await store.list_installations()] == [7]
    assert await store.delete_installation(7) is True
    assert await store.get_installation(7) is None


async def test_secrets_are_stored_as_ciphertext(store: Store) -> None:
    box = SecretBox((generate_key(),))
    await store.put_secret("slack_bot_token", box.encrypt("xoxb-1"), now=T0)
    await store.put_secret("slack_bot_token", box.encrypt("xoxb-2"), now=T0)
    blob = await store.get_secret("slack_bot_token")
    assert blob is not None and b"xoxb" not in blob
    assert box.decrypt(blob) == "xoxb-2"
    assert await store.get_secret("nope") is None
    assert await store.delete_secret("slack_bot_token") is True
    assert await store.get_secret("slack_bot_token") is None
    assert await store.delete_secret("slack_bot_token") is False


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_sqlite_file_is_wal_and_shared_between_connections(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one, two = SqliteStore(path), SqliteStore(path)
    await one.open()
    await two.open()
    try:
        await one.record_delivery(delivery("shared"))
        assert await two.get_delivery("1:shared") is not None
        [claimed] = await two.claim_deliveries("two", now=T0, lease_seconds=30, limit=5)
        assert await one.claim_deliveries("one", now=T0, lease_seconds=30, limit=5) == []
        assert claimed.key == "1:shared"
        mode = await one._one("PRAGMA journal_mode")
        assert mode[0] == "wal"
    finally:
        await one.close()
        await two.close()


async def test_named_lease_is_exclusive_until_it_expires(store: Store) -> None:
    assert await store.acquire_lease("sweep", "a", now=T0, seconds=60)
    assert await store.acquire_lease("sweep", "a", now=T0 + timedelta(seconds=10), seconds=60)  # renew
    assert not await store.acquire_lease("sweep", "b", now=T0 + timedelta(seconds=30), seconds=60)
    assert await store.acquire_lease("sweep", "b", now=T0 + timedelta(seconds=71), seconds=60)
    assert not await store.acquire_lease("sweep", "a", now=T0 + timedelta(seconds=72), seconds=60)
    assert await store.acquire_lease("other", "a", now=T0, seconds=60)


async def test_values_round_trip(store: Store) -> None:
    assert await store.get_value("cursor") is None
    await store.set_value("cursor", "2026-11-25T12:00:00+00:00", now=T0)
    await store.set_value("cursor", "2026-11-25T12:05:00+00:00", now=T0)
    assert await store.get_value("cursor") == "2026-11-25T12:05:00+00:00"
    assert await store.delete_value("cursor") is True
    assert await store.get_value("cursor") is None
    assert await store.delete_value("cursor") is False


async def test_sqlite_file_and_folder_are_private(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "fresh" / "bot.db")
    await store.open()
    await store.close()
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "fresh" / "bot.db").stat().st_mode & 0o777 == 0o600


async def test_jobs_coalesce_by_key_and_keep_a_newer_request(store: Store) -> None:
    await store.schedule_job("render:o/r#1", "render", {"n": 1}, due_at=T0 + timedelta(seconds=5))
    await store.schedule_job("render:o/r#1", "render", {"n": 2}, due_at=T0 + timedelta(seconds=9))
    assert await store.next_job_due() == T0 + timedelta(seconds=5)  # the earlier due time is kept
    assert await store.claim_jobs("w", now=T0, lease_seconds=30, limit=5) == []
    [job] = await store.claim_jobs("w", now=T0 + timedelta(seconds=5), lease_seconds=30, limit=5)
    assert job.payload == {"n": 2}
    # Asked again while running: finishing the older request leaves the newer one queued.
    await store.schedule_job("render:o/r#1", "render", {"n": 3}, due_at=T0 + timedelta(seconds=6))
    assert await store.finish_job(job, "w") is False
    [again] = await store.claim_jobs("w", now=T0 + timedelta(seconds=6), lease_seconds=30, limit=5)
    assert again.payload == {"n": 3}
    assert await store.finish_job(again, "w") is True
    assert await store.claim_jobs("w", now=T0 + timedelta(days=1), lease_seconds=30, limit=5) == []


async def test_a_job_asked_again_after_it_finished_is_a_new_request(store: Store) -> None:
    """Its request number never repeats: a worker still forgetting the finished run must not take the new
    request for a second claim of it (and drop it, leaving it leased and idle)."""
    await store.schedule_job("chat-mirror:o/r#1", "chat-mirror", {}, due_at=T0)
    [first] = await store.claim_jobs("w", now=T0, lease_seconds=30, limit=5)
    assert await store.finish_job(first, "w") is True
    await store.schedule_job("chat-mirror:o/r#1", "chat-mirror", {}, due_at=T0)
    [second] = await store.claim_jobs("w", now=T0, lease_seconds=30, limit=5)
    assert second.seq != first.seq
    await store.schedule_job("chat-mirror:o/r#1", "chat-mirror", {}, due_at=T0)  # asked again while it runs
    assert await store.finish_job(second, "w") is False
    [third] = await store.claim_jobs("w", now=T0, lease_seconds=30, limit=5)
    assert third.seq > second.seq


async def test_every_release_change_is_in_the_change_feed_in_order(store: Store) -> None:
    start = await store.last_event_id()
    saved = await store.save_release(release(pr=31))
    saved = await store.save_release(replace(saved, state=State.BLOCKED))
    other = await store.append_event("pr", "o/r", {"repo": "o/r", "pr": 32})
    events = await store.read_events(after=start)
    assert [(e.topic, e.data.get("state"), e.data["pr"]) for e in events] == [
        ("release", "scheduled", 31),
        ("release", "blocked", 31),
        ("pr", None, 32),
    ]
    assert [e.id for e in events] == sorted(e.id for e in events) and events[-1].id == other
    assert await store.last_event_id() == other
    assert await store.read_events(after=events[0].id, limit=1) == [events[1]]  # resumable after any id
    assert events[0].subject == saved.repo and events[0].data["version"] == 1


async def test_once_jobs_run_once_ever(store: Store) -> None:
    await store.schedule_job("reply:d1:0", "reply", {"text": "hi"}, due_at=T0, once=True)
    await store.schedule_job("reply:d1:0", "reply", {"text": "hi again"}, due_at=T0, once=True)
    [job] = await store.claim_jobs("w", now=T0, lease_seconds=30, limit=5)
    assert job.payload == {"text": "hi"}
    assert await store.finish_job(job, "w") is True
    await store.schedule_job("reply:d1:0", "reply", {"text": "hi"}, due_at=T0, once=True)  # a retried delivery
    assert await store.claim_jobs("w", now=T0 + timedelta(hours=1), lease_seconds=30, limit=5) == []
    assert await store.purge_jobs(finished_before=datetime.now(UTC) + timedelta(seconds=1)) == 1


async def test_parked_jobs_wait_for_the_next_change(store: Store) -> None:
    await store.schedule_job("render:o/r#2", "render", {}, due_at=T0)
    [job] = await store.claim_jobs("w", now=T0, lease_seconds=30, limit=5)
    assert await store.park_job(job, "w", error="GitHub answered 422: body too long")
    assert [j.last_error for j in await store.list_parked_jobs()] == ["GitHub answered 422: body too long"]
    assert await store.claim_jobs("w", now=T0 + timedelta(days=1), lease_seconds=30, limit=5) == []
    await store.schedule_job("render:o/r#2", "render", {}, due_at=T0)
    [revived] = await store.claim_jobs("w", now=T0, lease_seconds=30, limit=5)
    assert revived.key == "render:o/r#2" and revived.attempts == 1


async def test_heartbeat_keeps_a_long_job_leased(store: Store) -> None:
    await store.record_delivery(delivery("long"))
    await store.schedule_job("render:o/r#3", "render", {}, due_at=T0)
    await store.claim_deliveries("w", now=T0, lease_seconds=30, limit=1)
    await store.claim_jobs("w", now=T0, lease_seconds=30, limit=1)
    await store.extend_leases("w", deliveries=["1:long"], jobs=["render:o/r#3"], until=T0 + timedelta(seconds=90))
    later = T0 + timedelta(seconds=60)
    assert await store.claim_deliveries("other", now=later, lease_seconds=30, limit=1) == []
    assert await store.claim_jobs("other", now=later, lease_seconds=30, limit=1) == []


async def test_a_failing_run_does_not_delay_a_newer_request(store: Store) -> None:
    await store.schedule_job("render:o/r#4", "render", {"n": 1}, due_at=T0)
    [job] = await store.claim_jobs("w", now=T0, lease_seconds=30, limit=5)
    await store.schedule_job("render:o/r#4", "render", {"n": 2}, due_at=T0 + timedelta(seconds=1))
    assert await store.retry_job(job, "w", error="boom", due_at=T0 + timedelta(hours=1)) is False
    [newer] = await store.claim_jobs("w", now=T0 + timedelta(seconds=1), lease_seconds=30, limit=5)
    assert newer.payload == {"n": 2} and newer.attempts == 1
    await store.schedule_job("render:o/r#4", "render", {"n": 3}, due_at=T0 + timedelta(seconds=2))
    assert await store.park_job(newer, "w", error="422") is False  # the newer request is not parked
    [newest] = await store.claim_jobs("w", now=T0 + timedelta(seconds=2), lease_seconds=30, limit=5)
    assert newest.payload == {"n": 3}


async def test_calendar_events_are_found_by_overlap(store: Store) -> None:
    from bot.calendar import CalendarEvent

    def event(i: str, start_h: int, end_h: int, *, calendar: str = "acme/web production") -> CalendarEvent:
        return CalendarEvent(
            id=i,
            calendar=calendar,
            start=T0.replace(hour=start_h),
            end=T0.replace(hour=end_h),
            summary=f"Deploy {i}",
            lane=calendar,
        )

    await store.save_calendar_event(event("a", 10, 11))
    await store.save_calendar_event(event("b", 11, 12))
    await store.save_calendar_event(event("c", 10, 11, calendar="acme/api production"))
    found = await store.list_calendar_events("acme/web production", start=T0.replace(hour=11), end=T0.replace(hour=13))
    assert [e.id for e in found] == ["b"]  # [10, 11) does not overlap [11, 13): half-open
    everywhere = await store.list_calendar_events(None, start=T0.replace(hour=9), end=T0.replace(hour=13))
    assert [e.id for e in everywhere] == ["c", "a", "b"] or [e.id for e in everywhere] == ["a", "c", "b"]

    await store.save_calendar_event(replace(event("a", 10, 11), cancelled=True, summary="moved"))
    assert await store.list_calendar_events(
        "acme/web production", start=T0.replace(hour=0), end=T0.replace(hour=23)
    ) == [event("b", 11, 12)]
    with_cancelled = await store.list_calendar_events(
        "acme/web production", start=T0.replace(hour=0), end=T0.replace(hour=23), include_cancelled=True
    )
    assert [(e.id, e.cancelled, e.summary) for e in with_cancelled] == [("a", True, "moved"), ("b", False, "Deploy b")]
    assert await store.get_calendar_event("acme/web production", "a") == with_cancelled[0]
    assert await store.get_calendar_event("acme/api production", "a") is None


async def test_calendar_events_by_exact_prefix_before_the_limit(store: Store) -> None:
    from bot.calendar import CalendarEvent

    def event(calendar: str, hour: int) -> CalendarEvent:
        return CalendarEvent(
            id=f"e{hour}",
            calendar=calendar,
            start=T0.replace(hour=hour),
            end=T0.replace(hour=hour, minute=30),
            summary=calendar,
            lane=calendar,
        )

    # What LIKE would wrongly take for "acme/web_app " or "acme/100%ok ": `_` and `%` are wildcards
    # there, and LIKE ignores ASCII case; an unescaped regex for "acme/web.app "; and a longer name
    # that merely starts with the same text.
    for n, calendar in enumerate(
        (
            "acme/webXapp production",
            "acme/100%-not-ok production",
            "ACME/WEB_APP production",
            "acme/web_app-v2 production",
            "acme/100%ok-v2 staging",
            "acme/web-app production",
        )
    ):
        await store.save_calendar_event(event(calendar, 1 + n))  # earlier than the wanted ones
    await store.save_calendar_event(event("acme/web_app production", 10))
    await store.save_calendar_event(event("acme/web_app staging", 11))
    await store.save_calendar_event(event("acme/100%ok production", 12))
    await store.save_calendar_event(event("acme/web.app production", 13))
    start, end = T0.replace(hour=0), T0.replace(hour=23)

    web_app = await store.list_calendar_events(None, start=start, end=end, calendar_prefix="acme/web_app ")
    assert [e.calendar for e in web_app] == ["acme/web_app production", "acme/web_app staging"]
    percent = await store.list_calendar_events(None, start=start, end=end, calendar_prefix="acme/100%ok ")
    assert [e.calendar for e in percent] == ["acme/100%ok production"]
    dot = await store.list_calendar_events(None, start=start, end=end, calendar_prefix="acme/web.app ")
    assert [e.calendar for e in dot] == ["acme/web.app production"]
    # The limit counts matching events only: six earlier events elsewhere do not crowd them out.
    first = await store.list_calendar_events(None, start=start, end=end, limit=1, calendar_prefix="acme/web_app ")
    assert [e.calendar for e in first] == ["acme/web_app production"]
    both = await store.list_calendar_events(
        "acme/web_app staging", start=start, end=end, calendar_prefix="acme/web_app "
    )
    assert [e.calendar for e in both] == ["acme/web_app staging"]
    assert (
        await store.list_calendar_events(
            "acme/100%ok production", start=start, end=end, calendar_prefix="acme/web_app "
        )
        == []
    )
    assert len(await store.list_calendar_events(None, start=start, end=end, calendar_prefix="")) == 10


async def test_a_released_lease_is_free_at_once(store: Store) -> None:
    assert await store.acquire_lease("lane:x", "w1", now=T0, seconds=30)
    assert not await store.acquire_lease("lane:x", "w2", now=T0, seconds=30)
    await store.release_lease("lane:x", "w2")  # not the holder: nothing happens
    assert not await store.acquire_lease("lane:x", "w2", now=T0, seconds=30)
    await store.release_lease("lane:x", "w1")
    assert await store.acquire_lease("lane:x", "w2", now=T0, seconds=30)


async def test_a_deferred_job_waits_without_spending_an_attempt(store: Store) -> None:
    await store.schedule_job("reply:d1:0", "reply", {"text": "hi"}, due_at=T0, once=True)
    for round_ in range(12):  # more deferrals than any attempt limit: none of them counts
        now = T0 + timedelta(seconds=round_)
        [job] = await store.claim_jobs("w", now=now, lease_seconds=30, limit=5)
        assert job.attempts == 1
        assert await store.defer_job(job, "w", due_at=now + timedelta(seconds=1)) is True
        assert await store.claim_jobs("w", now=now, lease_seconds=30, limit=5) == []
    [job] = await store.claim_jobs("w", now=T0 + timedelta(seconds=12), lease_seconds=30, limit=5)
    assert job.attempts == 1 and job.payload == {"text": "hi"}
    assert await store.finish_job(job, "w") is True


def release(**changes: object) -> Release:
    base = Release(
        repo="octo-org/webshop",
        pr=7,
        number=1,
        installation_id=42,
        state=State.SCHEDULED,
        title="Change",
        base="main",
        head_sha="a" * 40,
        requested_by="mo",
        requested_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def test_a_release_is_saved_with_its_jobs(store: Store) -> None:
    first = JobSpec("reply:1", "reply", {"text": "booked"}, due_at=T0, once=True)
    timer = JobSpec("release:x", "release", {"n": 1}, due_at=T0 + timedelta(hours=1), keep_earlier=False)
    saved = await store.save_release(release(), [first, timer])
    assert saved.version == 1
    jobs = await store.claim_jobs("w1", now=T0, lease_seconds=30, limit=10)
    assert [(j.key, j.payload) for j in jobs] == [("reply:1", {"text": "booked"})]
    await store.finish_job(jobs[0], "w1")
    moved = JobSpec("release:x", "release", {"n": 2}, due_at=T0 - timedelta(minutes=1), keep_earlier=False)
    await store.save_release(replace(saved, state=State.BLOCKED), [moved])
    (due,) = await store.claim_jobs("w1", now=T0, lease_seconds=30, limit=10)
    assert (due.key, due.payload) == ("release:x", {"n": 2})  # the timer went with the change
    await store.finish_job(due, "w1")
    # A stale version saves nothing, and queues nothing either.
    with pytest.raises(VersionConflict):
        await store.save_release(saved, [JobSpec("reply:stale", "reply", {}, due_at=T0, once=True)])
    assert await store.claim_jobs("w1", now=T0 + timedelta(days=1), lease_seconds=30, limit=10) == []
    assert await store.recover_outbox(older_than=timedelta(0)) == 0


async def test_jobs_of_a_save_that_crashed_before_queueing_them_are_recovered(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies between the save and the queueing (here: the queueing fails): the change is
    saved, its jobs wait in the outbox, and recover_outbox (every worker's start) queues them once."""

    async def dead(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the process died here")

    monkeypatch.setattr(store, "schedule_job", dead)
    with pytest.raises(ConnectionError):
        await store.save_release(release(), [JobSpec("merge:1", "merge", {"sha": "a"}, due_at=T0, once=True)])
    monkeypatch.undo()
    stored = await store.get_active_release("octo-org/webshop", 7)
    assert stored is not None and stored.version == 1
    assert await store.claim_jobs("w1", now=T0, lease_seconds=30, limit=10) == []
    assert await store.recover_outbox() == 0  # seconds old: perhaps a save still flushing them
    assert await store.recover_outbox(older_than=timedelta(0)) == 1
    assert await store.recover_outbox(older_than=timedelta(0)) == 0
    (job,) = await store.claim_jobs("w1", now=T0, lease_seconds=30, limit=10)
    assert (job.key, job.kind, job.payload) == ("merge:1", "merge", {"sha": "a"})


async def test_leftovers_of_a_release_go_out_before_its_next_jobs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def dead(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the process died here")

    monkeypatch.setattr(store, "schedule_job", dead)
    with pytest.raises(ConnectionError):
        await store.save_release(release(), [JobSpec("release:x", "release", {"n": 1}, due_at=T0, keep_earlier=False)])
    monkeypatch.undo()
    saved = await store.get_active_release("octo-org/webshop", 7)
    assert saved is not None
    later = JobSpec("release:x", "release", {"n": 2}, due_at=T0, keep_earlier=False)
    await store.save_release(replace(saved, state=State.BLOCKED), [later])
    (job,) = await store.claim_jobs("w1", now=T0, lease_seconds=30, limit=10)
    assert job.payload == {"n": 2}  # the older leftover did not overwrite the newer timer
    assert await store.recover_outbox(older_than=timedelta(0)) == 0


async def test_values_are_listed_by_prefix_greatest_key_first(store: Store) -> None:
    for key in ("a2a:session:2026-11-25T10:00:1", "a2a:session:2026-11-25T11:00:2", "a2a:sessionx", "a2a:task:1"):
        await store.set_value(key, key[-1], now=T0)
    listed = await store.list_values("a2a:session:")
    assert listed == [("a2a:session:2026-11-25T11:00:2", "2"), ("a2a:session:2026-11-25T10:00:1", "1")]
    assert await store.list_values("a2a:session:", limit=1) == [listed[0]]
    assert await store.list_values("nothing:") == []


async def test_sqlite_checkpoints_the_wal_in_the_background(tmp_path: Path) -> None:
    """Writes never run a checkpoint themselves (autocheckpoint is off: its fsync would stall the write
    a request waits for); a background connection does, so the WAL starts over instead of growing. The
    WAL header's checkpoint sequence number (bytes 12-16) moves each time it starts over."""
    store = SqliteStore(tmp_path / "wal.db")
    await store.open()
    wal = tmp_path / "wal.db-wal"

    def sequence() -> int:
        return int.from_bytes(wal.read_bytes()[12:16], "big")

    try:
        (autocheckpoint,) = (await store.db.execute_fetchall("PRAGMA wal_autocheckpoint"))[0]
        for i in range(300):
            await store.set_value(f"k{i}", "x" * 2000, now=T0)
        first = sequence()
        for n in range(100):  # a checkpoint copies it all; the next write then starts the WAL over
            await asyncio.sleep(0.1)
            await store.set_value("after", str(n), now=T0)
            if sequence() != first:
                break
        started_over = sequence() != first
    finally:
        await store.close()
    assert autocheckpoint == 0
    assert started_over  # without the background checkpoint the WAL would only grow


# What the bot knows of each PR.


def pull_state(repo: str = "octo-org/widgets", number: int = 7, **changes: object) -> PullState:
    fields: dict[str, object] = {
        "repo": repo,
        "number": number,
        "installation_id": 42,
        "title": f"PR {number}",
        "author": "alice",
        "state": "open",
        "draft": False,
        "base": "main",
        "head_sha": f"{number:040x}",
        "labels": (),
        "commits": (CommitInfo(f"{number:040x}", "Add widgets", "alice", T0),),
        "reviews": (),
        "label_events": (),
        "required_checks": ("ci/build",),
        "created_at": T0,
        "updated_at": T0,
        "synced_at": T0,
    }
    fields.update(changes)
    return PullState(**fields)  # type: ignore[arg-type]


async def test_pr_records_are_versioned_and_every_change_is_in_the_feed(store: Store) -> None:
    assert await store.get_pull_state("octo-org/widgets", 7) is None
    first = await store.save_pull_state(pull_state(labels=("Ready for Prod",)))
    assert first.version == 1
    assert await store.get_pull_state("octo-org/widgets", 7) == first
    assert await store.get_pull_state("Octo-Org/Widgets", 7) == first  # names compare as GitHub's do
    with pytest.raises(VersionConflict):
        await store.save_pull_state(pull_state())  # a second insert
    moved = await store.save_pull_state(replace(first, head_sha="b" * 40, synced_at=T0 + timedelta(minutes=1)))
    with pytest.raises(VersionConflict):
        await store.save_pull_state(replace(first, title="stale"))
    # Only synced_at moved: the record is confirmed, the version bumps, the feed hears nothing.
    confirmed = await store.save_pull_state(replace(moved, synced_at=T0 + timedelta(minutes=2)))
    merged = await store.save_pull_state(replace(confirmed, state="merged"))
    assert (moved.version, confirmed.version, merged.version) == (2, 3, 4)
    assert await store.get_pull_state("octo-org/widgets", 7) == merged
    events = [e for e in await store.read_events(after=0) if e.topic == "pr"]
    assert [(e.subject, e.data) for e in events] == [
        (
            "octo-org/widgets",
            {"repo": "octo-org/widgets", "pr": 7, "state": "open", "head_sha": f"{7:040x}", "version": 1},
        ),
        (
            "octo-org/widgets",
            {"repo": "octo-org/widgets", "pr": 7, "state": "open", "head_sha": "b" * 40, "version": 2},
        ),
        (
            "octo-org/widgets",
            {"repo": "octo-org/widgets", "pr": 7, "state": "merged", "head_sha": "b" * 40, "version": 4},
        ),
    ]


PR_REPOS = ("acme/api", "octo-org/gadgets", "octo-org/widgets", "octo-orgx/tools")


async def _arrange_pulls(store: Store) -> list[PullState]:
    saved = []
    for i, repo in enumerate(PR_REPOS):
        for number in range(1, 8 + i):
            labels = ("Ready for Prod",) if number % 3 == 0 else ("bug", "needs-QA") if number % 3 == 1 else ()
            state = "closed" if number == 2 else "open"
            saved.append(await store.save_pull_state(pull_state(repo, number, labels=labels, state=state)))
    return saved


async def _walk(store: Store, *, limit: int, **filters: object) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    after: str | None = None
    for _ in range(100):
        page, after = await store.list_pull_states(after=after, limit=limit, **filters)  # type: ignore[arg-type]
        assert len(page) <= limit
        seen += [(p.repo, p.number) for p in page]
        if after is None:
            return seen
        assert page, "a cursor after an empty page"
    raise AssertionError("the pages never ended")


async def test_pr_records_are_listed_in_pages_with_no_duplicates_or_gaps(store: Store) -> None:
    saved = await _arrange_pulls(store)
    everything = sorted(((p.repo, p.number) for p in saved), key=lambda k: (k[0], -k[1]))
    for limit in (1, 4, 7, len(saved), 100):
        assert await _walk(store, limit=limit) == everything
    page, after = await store.list_pull_states(limit=len(saved))
    assert len(page) == len(saved) and after is None
    assert page[0] == saved[[(p.repo, p.number) for p in saved].index(everything[0])]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"repos": ["octo-org/*"]}, lambda r, n, s, labels: r.startswith("octo-org/")),
        ({"repos": ["OCTO-ORG/Widgets", "acme/api"]}, lambda r, n, s, labels: r in ("octo-org/widgets", "acme/api")),
        ({"repos": ["acme/*", "octo-orgx/tools"]}, lambda r, n, s, labels: r in ("acme/api", "octo-orgx/tools")),
        ({"state": "closed"}, lambda r, n, s, labels: s == "closed"),
        ({"label": "needs-qa"}, lambda r, n, s, labels: "needs-QA" in labels),
        (
            {"label": "READY FOR PROD", "repos": ["octo-org/*"], "state": "open"},
            lambda r, n, s, labels: r.startswith("octo-org/") and "Ready for Prod" in labels and s == "open",
        ),
        ({"head_sha": f"{5:040x}", "repos": ["acme/api"]}, lambda r, n, s, labels: r == "acme/api" and n == 5),
        ({"repos": ["nobody/*"]}, lambda r, n, s, labels: False),
    ],
)
async def test_pr_records_are_filtered_by_repo_pattern_state_label_and_head(
    store: Store, filters: dict[str, object], expected: Callable[[str, int, str, tuple[str, ...]], bool]
) -> None:
    saved = await _arrange_pulls(store)
    wanted = [(p.repo, p.number) for p in saved if expected(p.repo, p.number, p.state, p.labels)]
    assert await _walk(store, limit=3, **filters) == sorted(wanted, key=lambda k: (k[0], -k[1]))


async def test_the_label_filter_follows_the_labels_a_pr_carries_now(store: Store) -> None:
    pull = await store.save_pull_state(pull_state(labels=("Ready for Prod",)))
    assert [p.number for p in (await store.list_pull_states(label="ready for prod"))[0]] == [7]
    await store.save_pull_state(replace(pull, labels=("held",)))
    assert (await store.list_pull_states(label="ready for prod"))[0] == []
    assert [p.number for p in (await store.list_pull_states(label="HELD"))[0]] == [7]


@pytest.mark.parametrize("repos", [["widgets"], ["*"], ["*/widgets"], ["octo-org/wid*"], ["a/b/c"]])
async def test_a_repo_pattern_is_a_name_or_a_whole_owner(store: Store, repos: list[str]) -> None:
    with pytest.raises(ValueError, match="give owner/name or owner/"):
        await store.list_pull_states(repos=repos)


async def test_a_cursor_the_list_never_returned_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        await store.list_pull_states(after="not-a-cursor")


async def test_sha_checks_last_write_wins(store: Store) -> None:
    assert await store.get_sha_checks("octo-org/widgets", "a" * 40) is None
    run = CheckRunInfo(1, "ci/build", "in_progress", None, "github-actions", None, T0, None)
    first = ShaChecks("octo-org/widgets", "a" * 40, (run,), (), T0)
    await store.save_sha_checks(first)
    assert await store.get_sha_checks("Octo-Org/Widgets", "a" * 40) == first
    status = StatusInfo("lint", "success", "fine", "https://lint.example/1", T0, id=3)
    done = replace(run, status="completed", conclusion="success", completed_at=T0)
    second = ShaChecks("octo-org/widgets", "a" * 40, (done,), (status,), T0 + timedelta(minutes=1))
    await store.save_sha_checks(second)
    assert await store.get_sha_checks("octo-org/widgets", "a" * 40) == second
    assert await store.get_sha_checks("octo-org/widgets", "b" * 40) is None


async def test_sqlite_lists_a_thousand_prs_by_label_from_its_indexes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "many.db")
    await store.open()
    try:
        for number in range(1, 1001):
            labels = ("Ready for Prod",) if number % 10 == 0 else ()
            await store.save_pull_state(pull_state("octo-org/widgets", number, labels=labels))
        pages = await _walk(store, limit=50, label="ready for prod", repos=["octo-org/*"], state="open")
        assert pages == [("octo-org/widgets", n) for n in range(1000, 0, -10)]
        plan = await store.db.execute_fetchall(
            "EXPLAIN QUERY PLAN SELECT p.version, p.doc FROM pull_states p WHERE p.state = ? AND EXISTS"
            " (SELECT 1 FROM pull_state_labels l WHERE l.label = ? AND l.repo = p.repo AND l.number = p.number)"
            " ORDER BY p.repo, p.number DESC LIMIT 51",
            ("open", "ready for prod"),
        )
        details = " | ".join(str(row[3]) for row in plan)
        assert "USING" in details and "TEMP B-TREE" not in details, details
    finally:
        await store.close()
