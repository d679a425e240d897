"""The production store: MongoDB through pymongo's AsyncMongoClient, for any number of web and worker
processes. Leases and versions are single-document atomic updates, so no transactions are needed."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..calendar import CalendarEvent
from ..prstate import (
    PullState,
    ShaChecks,
    labels_index,
    pull_state_from_doc,
    pull_state_to_doc,
    sha_checks_from_doc,
    sha_checks_to_doc,
)
from ..release import PullRecord, Release, release_from_doc, release_to_doc
from .base import (
    OUTBOX_RECOVERY_AGE,
    Delivery,
    DeliveryStatus,
    Installation,
    Job,
    JobSpec,
    NewDelivery,
    StoredEvent,
    VersionConflict,
    calendar_event_from_doc,
    calendar_event_to_doc,
    compress_body,
    decode_cursor,
    decompress_body,
    encode_cursor,
    installation_from_doc,
    installation_to_doc,
    job_seq,
    pull_event_data,
    pull_record_from_doc,
    pull_record_to_doc,
    pull_state_digest,
    repo_filter,
)


class MongoStore:
    def __init__(self, uri: str, *, database: str | None = None) -> None:
        self.uri = uri
        self._database_name = database
        self._client: AsyncMongoClient[dict[str, Any]] | None = None

    @property
    def _db(self) -> Any:
        if self._client is None:
            raise RuntimeError("MongoStore used before open()")
        if self._database_name:
            return self._client[self._database_name]
        return self._client.get_default_database("release_secretary")

    async def open(self) -> None:
        self._client = AsyncMongoClient(self.uri, tz_aware=True, tzinfo=UTC)
        db = self._db
        await db.deliveries.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
        await db.deliveries.create_index([("status", ASCENDING), ("lease_until", ASCENDING)])
        await db.deliveries.create_index([("received_at", DESCENDING)])
        await db.releases.create_index(
            [("repo", ASCENDING), ("pr", ASCENDING)],
            unique=True,
            partialFilterExpression={"active": True},
            name="one_active_release_per_pr",
        )
        await db.releases.create_index([("repo", ASCENDING), ("pr", ASCENDING), ("number", DESCENDING)])
        await db.releases.create_index([("head_sha", ASCENDING), ("active", ASCENDING)])
        await db.releases.create_index([("outbox.id", ASCENDING)], sparse=True)
        await db.jobs.create_index([("status", ASCENDING), ("due_at", ASCENDING)])
        await db.calendar_events.create_index([("calendar", ASCENDING), ("start", ASCENDING)])
        await db.calendar_events.create_index([("start", ASCENDING)])
        # PR records: `repo_key` is the repo in lower case (names compare as GitHub's do), `labels` the
        # case-folded labels it carries now (a multikey index).
        await db.pull_states.create_index([("repo_key", ASCENDING), ("number", DESCENDING)])
        await db.pull_states.create_index([("state", ASCENDING), ("repo_key", ASCENDING), ("number", DESCENDING)])
        await db.pull_states.create_index([("labels", ASCENDING), ("repo_key", ASCENDING), ("number", DESCENDING)])
        await db.pull_states.create_index([("head_sha", ASCENDING)])
        await db.pull_states.create_index([("updated_at", ASCENDING)])

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ping(self) -> None:
        await self._db.command("ping")

    async def drop_everything(self) -> None:
        """For the contract tests: a clean database."""
        collections = ("deliveries", "installations", "secrets", "leases", "kv", "releases", "pulls", "jobs")
        for name in (*collections, "calendar_events", "events", "counters", "pull_states", "sha_checks"):
            await self._db[name].drop()
        await self.open()

    # Webhook inbox.

    async def record_delivery(self, delivery: NewDelivery) -> bool:
        try:
            await self._db.deliveries.insert_one(
                {
                    "_id": delivery.key,
                    "delivery_id": delivery.delivery_id,
                    "event": delivery.event,
                    "action": delivery.action,
                    "installation_id": delivery.installation_id,
                    "body": compress_body(delivery.body),
                    "received_at": delivery.received_at,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": delivery.received_at,
                    "lease_owner": None,
                    "lease_until": None,
                    "last_error": None,
                    "finished_at": None,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def claim_deliveries(self, owner: str, *, now: datetime, lease_seconds: float, limit: int) -> list[Delivery]:
        docs = await _claim(self._db.deliveries, "next_attempt_at", owner, now, lease_seconds, limit)
        return sorted((_delivery(doc) for doc in docs), key=lambda d: d.received_at)

    async def _leased_update(self, key: str, owner: str, changes: dict[str, Any]) -> bool:
        result = await self._db.deliveries.update_one(
            {"_id": key, "status": "processing", "lease_owner": owner},
            {"$set": {**changes, "lease_owner": None, "lease_until": None}},
        )
        return bool(result.modified_count)

    async def finish_delivery(self, key: str, owner: str, *, now: datetime) -> bool:
        return await self._leased_update(key, owner, {"status": "done", "finished_at": now, "last_error": None})

    async def retry_delivery(self, key: str, owner: str, *, error: str, next_attempt_at: datetime) -> bool:
        return await self._leased_update(
            key,
            owner,
            {"status": "pending", "next_attempt_at": next_attempt_at, "last_error": error},
        )

    async def park_delivery(self, key: str, owner: str, *, error: str, now: datetime) -> bool:
        return await self._leased_update(key, owner, {"status": "parked", "last_error": error, "finished_at": now})

    async def requeue_delivery(self, key: str, *, now: datetime) -> bool:
        result = await self._db.deliveries.update_one(
            {"_id": key, "status": "parked"},
            {
                "$set": {
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "finished_at": None,
                }
            },
        )
        return bool(result.modified_count)

    async def get_delivery(self, key: str) -> Delivery | None:
        doc = await self._db.deliveries.find_one({"_id": key})
        return None if doc is None else _delivery(doc)

    async def list_deliveries(self, status: DeliveryStatus | None = None, *, limit: int = 50) -> list[Delivery]:
        query = {} if status is None else {"status": status.value}
        cursor = self._db.deliveries.find(query).sort("received_at", DESCENDING).limit(limit)
        return [_delivery(doc) async for doc in cursor]

    async def count_deliveries(self) -> dict[DeliveryStatus, int]:
        counts = dict.fromkeys(DeliveryStatus, 0)
        cursor = await self._db.deliveries.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        async for row in cursor:
            counts[DeliveryStatus(row["_id"])] = row["n"]
        return counts

    async def purge_deliveries(self, *, finished_before: datetime) -> int:
        result = await self._db.deliveries.delete_many({"status": "done", "finished_at": {"$lt": finished_before}})
        return int(result.deleted_count)

    async def next_delivery_due(self) -> datetime | None:
        doc = await self._db.deliveries.find_one(
            {"status": "pending"},
            sort=[("next_attempt_at", ASCENDING)],
            projection=["next_attempt_at"],
        )
        return None if doc is None else _aware(doc["next_attempt_at"])

    # Installations.

    async def get_installation(self, installation_id: int) -> Installation | None:
        doc = await self._db.installations.find_one({"_id": installation_id})
        return None if doc is None else installation_from_doc(doc, doc["version"])

    async def save_installation(self, installation: Installation) -> Installation:
        doc = installation_to_doc(installation)
        new_version = installation.version + 1
        if installation.version == 0:
            try:
                await self._db.installations.insert_one({**doc, "_id": installation.id, "version": new_version})
            except DuplicateKeyError:
                raise VersionConflict(f"installation {installation.id} already exists") from None
        else:
            result = await self._db.installations.update_one(
                {"_id": installation.id, "version": installation.version},
                {"$set": {**doc, "version": new_version}},
            )
            if not result.modified_count:
                raise VersionConflict(f"installation {installation.id} changed since version {installation.version}")
        return replace(installation, version=new_version)

    async def delete_installation(self, installation_id: int) -> bool:
        result = await self._db.installations.delete_one({"_id": installation_id})
        return bool(result.deleted_count)

    async def list_installations(self) -> list[Installation]:
        cursor = self._db.installations.find({}).sort("_id", ASCENDING)
        return [installation_from_doc(doc, doc["version"]) async for doc in cursor]

    # Releases.

    async def get_active_release(self, repo: str, pr: int) -> Release | None:
        doc = await self._db.releases.find_one({"repo": repo, "pr": pr, "active": True})
        return None if doc is None else release_from_doc(doc["doc"], doc["version"])

    async def get_latest_release(self, repo: str, pr: int) -> Release | None:
        doc = await self._db.releases.find_one({"repo": repo, "pr": pr}, sort=[("number", DESCENDING)])
        return None if doc is None else release_from_doc(doc["doc"], doc["version"])

    async def save_release(self, release: Release, jobs: Sequence[JobSpec] = ()) -> Release:
        fields = {
            "repo": release.repo,
            "pr": release.pr,
            "number": release.number,
            "state": release.state.value,
            "active": release.active,
            "head_sha": release.head_sha,
            "doc": release_to_doc(release),
            "version": release.version + 1,
        }
        # The outbox lives in the release's own document: one atomic write for the change and its jobs.
        written = datetime.now(UTC)
        outbox = [{"id": uuid.uuid4().hex, "written": written, **job.to_doc()} for job in jobs]
        try:
            if release.version == 0:
                await self._db.releases.insert_one({"_id": release.key, **fields, "outbox": outbox})
                ok = True
            else:
                update: dict[str, Any] = {"$set": fields}
                if outbox:
                    update["$push"] = {"outbox": {"$each": outbox}}
                result = await self._db.releases.update_one({"_id": release.key, "version": release.version}, update)
                ok = bool(result.modified_count)
        except DuplicateKeyError:
            ok = False
        if not ok:
            raise VersionConflict(f"release {release.key} changed since version {release.version}")
        # Logged after the save (MongoDB has no trigger): a crash between the two can miss one entry of the
        # change feed, which the reader's next look at the release shows anyway.
        data = {k: fields[k] for k in ("repo", "pr", "number", "state", "version")}
        await self.append_event("release", release.repo, data)
        if outbox:
            found = await self._db.releases.find_one({"_id": release.key}, {"outbox": 1})
            await self._flush_outbox(release.key, (found or {}).get("outbox") or [])
        return replace(release, version=release.version + 1)

    async def recover_outbox(self, *, older_than: timedelta = OUTBOX_RECOVERY_AGE) -> int:
        flushed = 0
        # Not entries of saves still in flight: scheduling those here could put an older timer over a newer one.
        before = datetime.now(UTC) - older_than
        oldest = datetime.min.replace(tzinfo=UTC)
        async for doc in self._db.releases.find({"outbox.id": {"$exists": True}}, {"outbox": 1}):
            old = [e for e in doc.get("outbox") or [] if (_aware(e.get("written")) or oldest) <= before]
            flushed += await self._flush_outbox(doc["_id"], old)
        return flushed

    async def _flush_outbox(self, key: str, outbox: list[dict[str, Any]]) -> int:
        for entry in outbox:
            job = JobSpec.from_doc(entry)
            await self.schedule_job(
                job.key, job.kind, job.payload, due_at=job.due_at, keep_earlier=job.keep_earlier, once=job.once
            )
        if outbox:
            ids = [entry["id"] for entry in outbox]
            await self._db.releases.update_one({"_id": key}, {"$pull": {"outbox": {"id": {"$in": ids}}}})
        return len(outbox)

    async def find_releases(
        self,
        *,
        repo: str | None = None,
        head_sha: str | None = None,
        active_only: bool = True,
        limit: int = 200,
    ) -> list[Release]:
        query: dict[str, Any] = {}
        if repo is not None:
            query["repo"] = repo
        if head_sha is not None:
            query["head_sha"] = head_sha
        if active_only:
            query["active"] = True
        cursor = self._db.releases.find(query).sort([("repo", 1), ("pr", 1), ("number", -1)]).limit(limit)
        return [release_from_doc(doc["doc"], doc["version"]) async for doc in cursor]

    # Pull records.

    async def get_pull_record(self, repo: str, pr: int) -> PullRecord | None:
        doc = await self._db.pulls.find_one({"_id": f"{repo}#{pr}"})
        return None if doc is None else pull_record_from_doc(doc["doc"], doc["version"])

    async def save_pull_record(self, record: PullRecord) -> PullRecord:
        key = f"{record.repo}#{record.pr}"
        fields = {"doc": pull_record_to_doc(record), "version": record.version + 1}
        try:
            if record.version == 0:
                await self._db.pulls.insert_one({"_id": key, **fields})
                ok = True
            else:
                result = await self._db.pulls.update_one({"_id": key, "version": record.version}, {"$set": fields})
                ok = bool(result.modified_count)
        except DuplicateKeyError:
            ok = False
        if not ok:
            raise VersionConflict(f"pull record {key} changed")
        return replace(record, version=record.version + 1)

    # What the bot knows of each PR.

    async def get_pull_state(self, repo: str, number: int) -> PullState | None:
        doc = await self._db.pull_states.find_one({"_id": _pull_key(repo, number)})
        return None if doc is None else pull_state_from_doc(doc["doc"], doc["version"])

    async def save_pull_state(self, state: PullState) -> PullState:
        new_version = state.version + 1
        digest = pull_state_digest(state)
        fields = {
            "repo": state.repo,
            "repo_key": state.repo.lower(),
            "number": state.number,
            "state": state.state,
            "head_sha": state.head_sha,
            "updated_at": state.updated_at,
            "labels": labels_index(state.labels),
            "digest": digest,
            "version": new_version,
            "doc": pull_state_to_doc(state),
        }
        key = _pull_key(state.repo, state.number)
        if state.version == 0:
            try:
                await self._db.pull_states.insert_one({"_id": key, **fields})
            except DuplicateKeyError:
                raise VersionConflict(f"PR record {key} already exists") from None
            changed = True
        else:
            fields.pop("repo")  # the first spelling stays, as in SQLite
            before = await self._db.pull_states.find_one_and_update(
                {"_id": key, "version": state.version},
                {"$set": fields},
                projection={"digest": 1},
                return_document=ReturnDocument.BEFORE,
            )
            if before is None:
                raise VersionConflict(f"PR record {key} changed since version {state.version}")
            changed = before.get("digest") != digest
        # Logged after the save (MongoDB has no trigger), as for releases.
        if changed:
            await self.append_event("pr", state.repo, pull_event_data(state, new_version))
        return replace(state, version=new_version)

    async def list_pull_states(
        self,
        *,
        repos: Sequence[str] = (),
        state: str | None = None,
        label: str | None = None,
        head_sha: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> tuple[list[PullState], str | None]:
        wanted = repo_filter(repos)
        clauses: list[dict[str, Any]] = []
        if not wanted.everything:
            either: list[dict[str, Any]] = [{"repo_key": {"$in": list(wanted.names)}}] if wanted.names else []
            # Anchored and escaped: a literal prefix, which the repo_key index serves.
            either += [{"repo_key": {"$regex": "^" + re.escape(owner + "/")}} for owner in wanted.owners]
            clauses.append({"$or": either})
        if state is not None:
            clauses.append({"state": state})
        if head_sha is not None:
            clauses.append({"head_sha": head_sha})
        if label is not None:
            clauses.append({"labels": labels_index([label])[0]})
        if after is not None:
            last_repo, last_number = decode_cursor(after)
            last_key = last_repo.lower()
            clauses.append(
                {"$or": [{"repo_key": {"$gt": last_key}}, {"repo_key": last_key, "number": {"$lt": last_number}}]}
            )
        query = {"$and": clauses} if clauses else {}
        size = max(limit, 0)
        cursor = (
            self._db.pull_states.find(query).sort([("repo_key", ASCENDING), ("number", DESCENDING)]).limit(size + 1)
        )
        docs = [doc async for doc in cursor]
        page = [pull_state_from_doc(doc["doc"], doc["version"]) for doc in docs[:size]]
        if len(docs) > size and page:
            return page, encode_cursor(page[-1].repo, page[-1].number)
        return page, None

    async def get_sha_checks(self, repo: str, sha: str) -> ShaChecks | None:
        doc = await self._db.sha_checks.find_one({"_id": f"{repo.lower()}@{sha}"})
        return None if doc is None else sha_checks_from_doc(doc["doc"])

    async def save_sha_checks(self, checks: ShaChecks) -> None:
        await self._db.sha_checks.update_one(
            {"_id": f"{checks.repo.lower()}@{checks.sha}"},
            {"$set": {"synced_at": checks.synced_at, "doc": sha_checks_to_doc(checks)}},
            upsert=True,
        )

    # Jobs.

    async def schedule_job(
        self,
        key: str,
        kind: str,
        payload: dict[str, Any],
        *,
        due_at: datetime,
        keep_earlier: bool = True,
        once: bool = False,
    ) -> None:
        if once:
            # Scheduled (or done) already: a once-job never runs twice.
            with contextlib.suppress(DuplicateKeyError):
                await self._db.jobs.insert_one(
                    {
                        "_id": key,
                        "kind": kind,
                        "payload": payload,
                        "due_at": due_at,
                        "status": "pending",
                        "attempts": 0,
                        "seq": job_seq(),
                        "once": True,
                    }
                )
            return
        pending_due: Any = {"$min": [{"$ifNull": ["$due_at", due_at]}, due_at]} if keep_earlier else due_at
        await self._db.jobs.update_one(
            {"_id": key},
            [
                {
                    "$set": {
                        # Values in a pipeline are expressions: "$..." strings would be field paths.
                        "kind": {"$literal": kind},
                        "payload": {"$literal": payload},
                        "seq": {"$max": [{"$add": [{"$ifNull": ["$seq", 0]}, 1]}, job_seq()]},
                        # A parked coalesced job comes back with the next change.
                        "status": {
                            "$cond": [{"$eq": ["$status", "parked"]}, "pending", {"$ifNull": ["$status", "pending"]}]
                        },
                        "attempts": {"$cond": [{"$eq": ["$status", "parked"]}, 0, {"$ifNull": ["$attempts", 0]}]},
                        "due_at": {
                            "$cond": [
                                {"$eq": [{"$ifNull": ["$status", "pending"]}, "pending"]},
                                pending_due,
                                due_at,
                            ]
                        },
                    }
                }
            ],
            upsert=True,
        )

    async def claim_jobs(self, owner: str, *, now: datetime, lease_seconds: float, limit: int) -> list[Job]:
        docs = await _claim(self._db.jobs, "due_at", owner, now, lease_seconds, limit)
        return [_job(doc) for doc in docs]

    async def finish_job(self, job: Job, owner: str) -> bool:
        tombstone = await self._db.jobs.update_one(
            {"_id": job.key, "lease_owner": owner, "once": True},
            {"$set": {"status": "done", "finished_at": datetime.now(UTC), "lease_owner": None, "lease_until": None}},
        )
        if tombstone.modified_count:
            return True
        result = await self._db.jobs.delete_one({"_id": job.key, "lease_owner": owner, "seq": job.seq})
        if result.deleted_count:
            return True
        return await self._requeue_newer(job, owner)

    async def _requeue_newer(self, job: Job, owner: str) -> bool:
        """Asked again while it ran: the newer request keeps its own due time and a fresh count."""
        await self._db.jobs.update_one(
            {"_id": job.key, "lease_owner": owner},
            {"$set": {"status": "pending", "attempts": 0, "lease_owner": None, "lease_until": None}},
        )
        return False

    async def retry_job(self, job: Job, owner: str, *, error: str, due_at: datetime) -> bool:
        result = await self._db.jobs.update_one(
            {"_id": job.key, "lease_owner": owner, "seq": job.seq},
            {
                "$set": {
                    "status": "pending",
                    "due_at": due_at,
                    "last_error": error,
                    "lease_owner": None,
                    "lease_until": None,
                }
            },
        )
        if result.modified_count:
            return True
        return await self._requeue_newer(job, owner)

    async def defer_job(self, job: Job, owner: str, *, due_at: datetime) -> bool:
        result = await self._db.jobs.update_one(
            {"_id": job.key, "lease_owner": owner, "seq": job.seq},
            {
                "$set": {"status": "pending", "due_at": due_at, "lease_owner": None, "lease_until": None},
                "$inc": {"attempts": -1},
            },
        )
        if result.modified_count:
            return True
        return await self._requeue_newer(job, owner)

    async def extend_leases(self, owner: str, *, deliveries: list[str], jobs: list[str], until: datetime) -> None:
        for collection, keys in ((self._db.deliveries, deliveries), (self._db.jobs, jobs)):
            if keys:
                await collection.update_many(
                    {"_id": {"$in": keys}, "status": "processing", "lease_owner": owner},
                    {"$set": {"lease_until": until}},
                )

    async def park_job(self, job: Job, owner: str, *, error: str) -> bool:
        result = await self._db.jobs.update_one(
            {"_id": job.key, "lease_owner": owner, "seq": job.seq},
            {
                "$set": {
                    "status": "parked",
                    "last_error": error,
                    "finished_at": datetime.now(UTC),
                    "lease_owner": None,
                    "lease_until": None,
                }
            },
        )
        if result.modified_count:
            return True
        return await self._requeue_newer(job, owner)

    async def list_parked_jobs(self, *, limit: int = 50) -> list[Job]:
        cursor = self._db.jobs.find({"status": "parked"}).sort("finished_at", DESCENDING).limit(limit)
        return [_job(doc) async for doc in cursor]

    async def purge_jobs(self, *, finished_before: datetime) -> int:
        result = await self._db.jobs.delete_many({"status": "done", "finished_at": {"$lt": finished_before}})
        return int(result.deleted_count)

    async def next_job_due(self) -> datetime | None:
        doc = await self._db.jobs.find_one({"status": "pending"}, sort=[("due_at", ASCENDING)])
        return None if doc is None else _aware(doc["due_at"])

    # Leases and values.

    async def acquire_lease(self, name: str, owner: str, *, now: datetime, seconds: float) -> bool:
        until = now + timedelta(seconds=seconds)
        try:
            doc = await self._db.leases.find_one_and_update(
                {"_id": name, "$or": [{"owner": owner}, {"until": {"$lt": now}}]},
                {"$set": {"owner": owner, "until": until}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # held by someone else: the upsert collided with their document
        return doc is not None

    async def release_lease(self, name: str, owner: str) -> None:
        await self._db.leases.delete_one({"_id": name, "owner": owner})

    # The embedded calendar.

    async def save_calendar_event(self, event: CalendarEvent) -> None:
        await self._db.calendar_events.update_one(
            {"_id": f"{event.calendar}\n{event.id}"},
            {
                "$set": {
                    "calendar": event.calendar,
                    "start": event.start,
                    "end": event.end,
                    "cancelled": event.cancelled,
                    "doc": calendar_event_to_doc(event),
                }
            },
            upsert=True,
        )

    async def get_calendar_event(self, calendar: str, event_id: str) -> CalendarEvent | None:
        doc = await self._db.calendar_events.find_one({"_id": f"{calendar}\n{event_id}"})
        return None if doc is None else calendar_event_from_doc(doc["doc"])

    async def list_calendar_events(
        self,
        calendar: str | None,
        *,
        start: datetime,
        end: datetime,
        include_cancelled: bool = False,
        limit: int = 1000,
        calendar_prefix: str | None = None,
    ) -> list[CalendarEvent]:
        query: dict[str, Any] = {"start": {"$lt": end}, "end": {"$gt": start}}
        by_calendar: dict[str, Any] = {}
        if calendar is not None:
            by_calendar["$eq"] = calendar
        if calendar_prefix is not None:
            # Anchored and escaped: a literal prefix, which the (calendar, start) index can serve.
            by_calendar["$regex"] = "^" + re.escape(calendar_prefix)
        if by_calendar:
            query["calendar"] = by_calendar
        if not include_cancelled:
            query["cancelled"] = False
        cursor = self._db.calendar_events.find(query).sort([("start", 1), ("_id", 1)]).limit(limit)
        return [calendar_event_from_doc(doc["doc"]) async for doc in cursor]

    async def get_value(self, key: str) -> str | None:
        doc = await self._db.kv.find_one({"_id": key})
        return None if doc is None else str(doc["value"])

    async def set_value(self, key: str, value: str, *, now: datetime) -> None:
        await self._db.kv.update_one({"_id": key}, {"$set": {"value": value, "updated_at": now}}, upsert=True)

    async def delete_value(self, key: str) -> bool:
        return bool((await self._db.kv.delete_one({"_id": key})).deleted_count)

    async def list_values(self, prefix: str, *, limit: int = 100) -> list[tuple[str, str]]:
        query = {"_id": {"$gte": prefix, "$lt": prefix + "\U0010ffff"}}
        cursor = self._db.kv.find(query).sort("_id", DESCENDING).limit(limit)
        return [(str(doc["_id"]), str(doc["value"])) async for doc in cursor]

    # The change feed: ids from a counter document, so they only grow across processes.

    async def append_event(self, topic: str, subject: str, data: dict[str, Any]) -> int:
        counter = await self._db.counters.find_one_and_update(
            {"_id": "events"}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        event_id = int(counter["n"])
        doc = {"_id": event_id, "topic": topic, "subject": subject, "data": data, "at": datetime.now(UTC)}
        await self._db.events.insert_one(doc)
        return event_id

    async def read_events(self, *, after: int, limit: int = 100) -> list[StoredEvent]:
        cursor = self._db.events.find({"_id": {"$gt": after}}).sort("_id", ASCENDING).limit(limit)
        return [
            StoredEvent(int(d["_id"]), d["topic"], d["subject"], dict(d["data"]), _aware(d["at"]) or datetime.now(UTC))
            async for d in cursor
        ]

    async def last_event_id(self) -> int:
        # The newest written, not the counter: an id taken but not yet written must not be skipped.
        newest = await self._db.events.find_one({}, sort=[("_id", DESCENDING)])
        return int(newest["_id"]) if newest else 0

    async def purge_events(self, *, before: datetime) -> int:
        return int((await self._db.events.delete_many({"at": {"$lt": before}})).deleted_count)

    # Secrets.

    async def delete_secret(self, name: str) -> bool:
        return bool((await self._db.secrets.delete_one({"_id": name})).deleted_count)

    async def put_secret(self, name: str, ciphertext: bytes, *, now: datetime) -> None:
        await self._db.secrets.update_one(
            {"_id": name}, {"$set": {"ciphertext": ciphertext, "updated_at": now}}, upsert=True
        )

    async def get_secret(self, name: str) -> bytes | None:
        doc = await self._db.secrets.find_one({"_id": name})
        return None if doc is None else bytes(doc["ciphertext"])


async def _claim(
    collection: Any, due_field: str, owner: str, now: datetime, lease_seconds: float, limit: int
) -> list[dict[str, Any]]:
    """Lease up to `limit` due documents, one atomic find-and-update each (no transaction needed)."""
    due = {
        "$or": [
            {"status": "pending", due_field: {"$lte": now}},
            {"status": "processing", "lease_until": {"$lt": now}},
        ]
    }
    lease = {
        "$set": {"status": "processing", "lease_owner": owner, "lease_until": now + timedelta(seconds=lease_seconds)},
        "$inc": {"attempts": 1},
    }
    claimed = []
    for _ in range(limit):
        doc = await collection.find_one_and_update(
            due, lease, sort=[(due_field, ASCENDING)], return_document=ReturnDocument.AFTER
        )
        if doc is None:
            break
        claimed.append(doc)
    return claimed


def _job(doc: dict[str, Any]) -> Job:
    due_at = _aware(doc["due_at"])
    assert due_at is not None
    return Job(
        key=doc["_id"],
        kind=doc["kind"],
        payload=doc["payload"],
        due_at=due_at,
        attempts=doc.get("attempts", 0),
        seq=doc.get("seq", 0),
        lease_owner=doc.get("lease_owner"),
        last_error=doc.get("last_error"),
    )


def _pull_key(repo: str, number: int) -> str:
    return f"{repo.lower()}#{number}"


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _delivery(doc: dict[str, Any]) -> Delivery:
    received = _aware(doc["received_at"])
    due = _aware(doc["next_attempt_at"])
    assert received is not None and due is not None
    return Delivery(
        key=doc["_id"],
        delivery_id=doc["delivery_id"],
        event=doc["event"],
        action=doc.get("action"),
        installation_id=doc.get("installation_id"),
        body=decompress_body(doc["body"]),
        received_at=received,
        status=DeliveryStatus(doc["status"]),
        attempts=doc["attempts"],
        next_attempt_at=due,
        lease_owner=doc.get("lease_owner"),
        lease_until=_aware(doc.get("lease_until")),
        last_error=doc.get("last_error"),
        finished_at=_aware(doc.get("finished_at")),
    )
