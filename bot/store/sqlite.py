"""The embedded store: SQLite in WAL mode through aiosqlite, one connection per process.

Webhook inserts are group-committed: every delivery that arrives while a write is in flight goes into
the next single multi-row INSERT, so a burst costs one fsync-free WAL append per batch, not per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

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
    pull_record_from_doc,
    pull_record_to_doc,
    pull_state_digest,
    repo_filter,
)

log = logging.getLogger(__name__)

_CHECKPOINT_EVERY = 1.0  # seconds between background WAL checkpoints
_BATCH_MAX = 400  # 8 columns a row stays far below SQLite's 32766 bound variables

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE deliveries (
        key TEXT PRIMARY KEY,
        delivery_id TEXT NOT NULL,
        event TEXT NOT NULL,
        action TEXT,
        installation_id INTEGER,
        body BLOB NOT NULL,
        received_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_owner TEXT,
        lease_until REAL,
        last_error TEXT,
        finished_at REAL
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
    CREATE INDEX deliveries_lease ON deliveries (status, lease_until);
    CREATE INDEX deliveries_received ON deliveries (received_at);
    CREATE TABLE installations (
        id INTEGER PRIMARY KEY,
        account_login TEXT NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        ciphertext BLOB NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    """
    CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
    """,
    """
    CREATE TABLE releases (
        key TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        pr INTEGER NOT NULL,
        number INTEGER NOT NULL,
        state TEXT NOT NULL,
        active INTEGER NOT NULL,
        head_sha TEXT NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE UNIQUE INDEX releases_one_active ON releases (repo, pr) WHERE active = 1;
    CREATE INDEX releases_by_pr ON releases (repo, pr, number);
    CREATE INDEX releases_by_sha ON releases (head_sha) WHERE active = 1;
    CREATE TABLE pulls (
        repo TEXT NOT NULL,
        pr INTEGER NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (repo, pr)
    );
    CREATE TABLE jobs (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        due_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        seq INTEGER NOT NULL DEFAULT 1,
        lease_owner TEXT,
        lease_until REAL,
        last_error TEXT
    );
    CREATE INDEX jobs_due ON jobs (status, due_at);
    """,
    """
    ALTER TABLE jobs ADD COLUMN once INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN finished_at REAL;
    """,
    """
    CREATE TABLE calendar_events (
        calendar TEXT NOT NULL,
        id TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        cancelled INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (calendar, id)
    );
    CREATE INDEX calendar_events_by_time ON calendar_events (calendar, start);
    CREATE INDEX calendar_events_feed ON calendar_events (start);
    """,
    # The transactional outbox: a release saved with jobs writes them here in the same statement (the
    # triggers), so a crash before they are scheduled cannot lose them.
    """
    ALTER TABLE releases ADD COLUMN pending TEXT;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        release_key TEXT NOT NULL,
        spec TEXT NOT NULL,
        created REAL NOT NULL DEFAULT (julianday('now'))
    );
    CREATE INDEX outbox_by_release ON outbox (release_key);
    CREATE TRIGGER releases_outbox_insert AFTER INSERT ON releases WHEN NEW.pending IS NOT NULL
    BEGIN
        INSERT INTO outbox (release_key, spec) SELECT NEW.key, value FROM json_each(NEW.pending);
        UPDATE releases SET pending = NULL WHERE key = NEW.key;
    END;
    CREATE TRIGGER releases_outbox_update AFTER UPDATE OF version ON releases WHEN NEW.pending IS NOT NULL
    BEGIN
        INSERT INTO outbox (release_key, spec) SELECT NEW.key, value FROM json_each(NEW.pending);
        UPDATE releases SET pending = NULL WHERE key = NEW.key;
    END;
    """,
    # The change feed (the API's server-sent events): a release's change is logged in the same statement
    # that saves it, so a reader resuming from an event id misses none. Ids only grow (AUTOINCREMENT).
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        subject TEXT NOT NULL,
        data TEXT NOT NULL,
        at REAL NOT NULL DEFAULT (julianday('now'))
    );
    CREATE TRIGGER releases_event_insert AFTER INSERT ON releases
    BEGIN
        INSERT INTO events (topic, subject, data) VALUES ('release', NEW.repo, json_object(
            'repo', NEW.repo, 'pr', NEW.pr, 'number', NEW.number, 'state', NEW.state, 'version', NEW.version));
    END;
    CREATE TRIGGER releases_event_update AFTER UPDATE OF version ON releases
    BEGIN
        INSERT INTO events (topic, subject, data) VALUES ('release', NEW.repo, json_object(
            'repo', NEW.repo, 'pr', NEW.pr, 'number', NEW.number, 'state', NEW.state, 'version', NEW.version));
    END;
    """,
    # What the bot knows of each PR (bot.prstate): the document, with the columns lists filter on. Names
    # compare as GitHub's do, without regard to case. The labels a PR carries now (case-folded, a JSON
    # array) are kept in an index table by triggers; a change (anything but synced_at: `digest`) is logged
    # in the change feed in the same statement, like a release's.
    """
    CREATE TABLE pull_states (
        repo TEXT NOT NULL COLLATE NOCASE,
        number INTEGER NOT NULL,
        state TEXT NOT NULL,
        head_sha TEXT NOT NULL,
        updated_at REAL,
        labels TEXT NOT NULL,
        digest TEXT NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (repo, number)
    );
    CREATE INDEX pull_states_list ON pull_states (repo, number DESC);
    CREATE INDEX pull_states_by_state ON pull_states (state, repo, number DESC);
    CREATE INDEX pull_states_by_updated ON pull_states (updated_at);
    CREATE INDEX pull_states_by_head ON pull_states (head_sha);
    CREATE TABLE pull_state_labels (
        label TEXT NOT NULL,
        repo TEXT NOT NULL COLLATE NOCASE,
        number INTEGER NOT NULL,
        PRIMARY KEY (label, repo, number)
    ) WITHOUT ROWID;
    CREATE TRIGGER pull_states_labels_insert AFTER INSERT ON pull_states
    BEGIN
        INSERT OR IGNORE INTO pull_state_labels (label, repo, number)
            SELECT value, NEW.repo, NEW.number FROM json_each(NEW.labels);
    END;
    CREATE TRIGGER pull_states_labels_update AFTER UPDATE OF version ON pull_states WHEN OLD.labels IS NOT NEW.labels
    BEGIN
        DELETE FROM pull_state_labels WHERE repo = NEW.repo AND number = NEW.number;
        INSERT OR IGNORE INTO pull_state_labels (label, repo, number)
            SELECT value, NEW.repo, NEW.number FROM json_each(NEW.labels);
    END;
    CREATE TRIGGER pull_states_event_insert AFTER INSERT ON pull_states
    BEGIN
        INSERT INTO events (topic, subject, data) VALUES ('pr', NEW.repo, json_object(
            'repo', NEW.repo, 'pr', NEW.number, 'state', NEW.state, 'head_sha', NEW.head_sha, 'version', NEW.version));
    END;
    CREATE TRIGGER pull_states_event_update AFTER UPDATE OF version ON pull_states WHEN OLD.digest IS NOT NEW.digest
    BEGIN
        INSERT INTO events (topic, subject, data) VALUES ('pr', NEW.repo, json_object(
            'repo', NEW.repo, 'pr', NEW.number, 'state', NEW.state, 'head_sha', NEW.head_sha, 'version', NEW.version));
    END;
    CREATE TABLE sha_checks (
        repo TEXT NOT NULL COLLATE NOCASE,
        sha TEXT NOT NULL,
        synced_at REAL NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (repo, sha)
    );
    """,
)


def _from_julian(day: float) -> datetime:
    return datetime.fromtimestamp((day - 2440587.5) * 86400, UTC)


def _prepare_file(path: Path) -> None:
    """Payloads of private repositories and encrypted credentials live here: owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)


def _statements(script: str) -> list[str]:
    """A migration script's statements; a trigger's body has semicolons of its own."""
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    return statements


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class SqliteStore:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._pending: list[tuple[NewDelivery, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._checkpointer: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SqliteStore used before open()")
        return self._db

    async def open(self) -> None:
        if self.path != ":memory:":
            _prepare_file(Path(self.path))
        # Autocommit: every operation below is one statement, hence its own transaction.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        # The busy timeout first: switching a fresh file to WAL takes a lock another process may hold.
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        if self.path != ":memory:":
            # WAL checkpoints (their fsync can take most of a second on a slow disk) run on a
            # connection of their own, in the background: never inside a write someone waits for.
            await self._db.execute("PRAGMA wal_autocheckpoint=0")
            # Opened here, not in the task: a task cancelled while connecting would leave aiosqlite's
            # thread answering a loop that is gone.
            self._checkpointer = await aiosqlite.connect(self.path, isolation_level=None)
            await self._checkpointer.execute("PRAGMA busy_timeout=1000")
            self._checkpoints = asyncio.create_task(self._checkpoint_loop(self._checkpointer))
        # Compression runs inside the INSERT, on aiosqlite's thread (zlib releases the GIL while it
        # deflates), so the event loop that acknowledges webhooks never pays for it.
        await self._db.create_function("rs_compress", 1, compress_body, deterministic=True)
        await self._migrate()

    async def _migrate(self) -> None:
        # Several processes may open a fresh file at once (web + worker): the version is read again
        # inside the write lock, so each migration runs exactly once.
        (version,) = await self._one("PRAGMA user_version")
        if version >= len(_MIGRATIONS):
            return
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = await self._one("PRAGMA user_version")
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    await self.db.execute(statement)
                await self.db.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        await self.db.execute("COMMIT")

    async def _checkpoint_loop(self, conn: aiosqlite.Connection) -> None:
        """PASSIVE checkpoints once a second: they copy what they can without waiting for readers or
        writers, so the WAL stays small and no request pays for the copy or its fsync."""
        while True:
            await asyncio.sleep(_CHECKPOINT_EVERY)
            try:
                await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # another process checkpointing: the next round catches up
                log.debug("WAL checkpoint skipped: %s", exc)

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
            self._checkpoints = None
        if self._checkpointer is not None:
            await self._checkpointer.close()  # waits for its thread: nothing answers a closed loop later
            self._checkpointer = None
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        await self._one("SELECT 1")

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = list(await self.db.execute_fetchall(sql, params))
        return rows[0] if rows else None

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self.db.execute_fetchall(sql, params))

    # Webhook inbox.

    async def record_delivery(self, delivery: NewDelivery) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending())
        return await future

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:_BATCH_MAX], self._pending[_BATCH_MAX:]
                try:
                    inserted = await self._insert_batch([d for d, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                seen: set[str] = set()
                for delivery, future in batch:
                    new = delivery.key in inserted and delivery.key not in seen
                    seen.add(delivery.key)
                    if not future.done():
                        future.set_result(new)
        finally:
            self._writer = None

    async def _insert_batch(self, batch: list[NewDelivery]) -> set[str]:
        rows: list[Any] = []
        for d in batch:
            received = _ts(d.received_at)
            rows += (
                d.key,
                d.delivery_id,
                d.event,
                d.action,
                d.installation_id,
                d.body,
                received,
                received,
            )
        values = ",".join(["(?,?,?,?,?,rs_compress(?),?,?)"] * len(batch))  # placeholders only
        sql = (
            "INSERT INTO deliveries (key, delivery_id, event, action, installation_id, body,"
            " received_at, next_attempt_at) VALUES " + values + " ON CONFLICT (key) DO NOTHING RETURNING key"
        )
        result = await self.db.execute_fetchall(sql, rows)
        return {row[0] for row in result}

    async def claim_deliveries(self, owner: str, *, now: datetime, lease_seconds: float, limit: int) -> list[Delivery]:
        t = _ts(now)
        rows = await self._all(
            "UPDATE deliveries SET status = 'processing', lease_owner = ?, lease_until = ?,"
            " attempts = attempts + 1"
            " WHERE key IN (SELECT key FROM deliveries WHERE"
            "   (status = 'pending' AND next_attempt_at <= ?)"
            "   OR (status = 'processing' AND lease_until < ?)"
            "   ORDER BY next_attempt_at LIMIT ?)"
            " RETURNING *",
            (owner, t + lease_seconds, t, t, limit),
        )
        return sorted((_delivery(r) for r in rows), key=lambda d: d.received_at)

    async def finish_delivery(self, key: str, owner: str, *, now: datetime) -> bool:
        return await self._leased_update(
            key,
            owner,
            "status = 'done', finished_at = ?, last_error = NULL",
            (_ts(now),),
        )

    async def retry_delivery(self, key: str, owner: str, *, error: str, next_attempt_at: datetime) -> bool:
        return await self._leased_update(
            key,
            owner,
            "status = 'pending', next_attempt_at = ?, last_error = ?",
            (_ts(next_attempt_at), error),
        )

    async def park_delivery(self, key: str, owner: str, *, error: str, now: datetime) -> bool:
        return await self._leased_update(
            key, owner, "status = 'parked', last_error = ?, finished_at = ?", (error, _ts(now))
        )

    async def _leased_update(self, key: str, owner: str, assignments: str, params: Sequence[Any]) -> bool:
        rows = await self._all(
            f"UPDATE deliveries SET {assignments}, lease_owner = NULL, lease_until = NULL"
            " WHERE key = ? AND status = 'processing' AND lease_owner = ? RETURNING key",
            (*params, key, owner),
        )
        return bool(rows)

    async def requeue_delivery(self, key: str, *, now: datetime) -> bool:
        rows = await self._all(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?,"
            " finished_at = NULL WHERE key = ? AND status = 'parked' RETURNING key",
            (_ts(now), key),
        )
        return bool(rows)

    async def get_delivery(self, key: str) -> Delivery | None:
        row = await self._one("SELECT * FROM deliveries WHERE key = ?", (key,))
        return None if row is None else _delivery(row)

    async def list_deliveries(self, status: DeliveryStatus | None = None, *, limit: int = 50) -> list[Delivery]:
        if status is None:
            rows = await self._all("SELECT * FROM deliveries ORDER BY received_at DESC LIMIT ?", (limit,))
        else:
            rows = await self._all(
                "SELECT * FROM deliveries WHERE status = ? ORDER BY received_at DESC LIMIT ?",
                (status.value, limit),
            )
        return [_delivery(r) for r in rows]

    async def count_deliveries(self) -> dict[DeliveryStatus, int]:
        rows = await self._all("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
        counts = dict.fromkeys(DeliveryStatus, 0)
        counts.update({DeliveryStatus(s): n for s, n in rows})
        return counts

    async def purge_deliveries(self, *, finished_before: datetime) -> int:
        rows = await self._all(
            "DELETE FROM deliveries WHERE status = 'done' AND finished_at < ? RETURNING key",
            (_ts(finished_before),),
        )
        return len(rows)

    async def next_delivery_due(self) -> datetime | None:
        row = await self._one("SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'")
        return _dt(row[0]) if row else None

    # Installations.

    async def get_installation(self, installation_id: int) -> Installation | None:
        row = await self._one("SELECT version, doc FROM installations WHERE id = ?", (installation_id,))
        return None if row is None else installation_from_doc(orjson.loads(row[1]), row[0])

    async def save_installation(self, installation: Installation) -> Installation:
        doc = orjson.dumps(installation_to_doc(installation))
        new_version = installation.version + 1
        if installation.version == 0:
            rows = await self._all(
                "INSERT INTO installations (id, account_login, version, doc) VALUES (?, ?, 1, ?)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                (installation.id, installation.account_login, doc),
            )
        else:
            rows = await self._all(
                "UPDATE installations SET account_login = ?, version = ?, doc = ?"
                " WHERE id = ? AND version = ? RETURNING id",
                (
                    installation.account_login,
                    new_version,
                    doc,
                    installation.id,
                    installation.version,
                ),
            )
        if not rows:
            raise VersionConflict(f"installation {installation.id} changed since version {installation.version}")
        return replace(installation, version=new_version)

    async def delete_installation(self, installation_id: int) -> bool:
        rows = await self._all("DELETE FROM installations WHERE id = ? RETURNING id", (installation_id,))
        return bool(rows)

    async def list_installations(self) -> list[Installation]:
        rows = await self._all("SELECT version, doc FROM installations ORDER BY id")
        return [installation_from_doc(orjson.loads(doc), version) for version, doc in rows]

    # Releases.

    async def get_active_release(self, repo: str, pr: int) -> Release | None:
        row = await self._one("SELECT version, doc FROM releases WHERE repo = ? AND pr = ? AND active = 1", (repo, pr))
        return None if row is None else release_from_doc(orjson.loads(row[1]), row[0])

    async def get_latest_release(self, repo: str, pr: int) -> Release | None:
        row = await self._one(
            "SELECT version, doc FROM releases WHERE repo = ? AND pr = ? ORDER BY number DESC LIMIT 1",
            (repo, pr),
        )
        return None if row is None else release_from_doc(orjson.loads(row[1]), row[0])

    async def save_release(self, release: Release, jobs: Sequence[JobSpec] = ()) -> Release:
        doc = orjson.dumps(release_to_doc(release))
        pending = orjson.dumps([job.to_doc() for job in jobs]) if jobs else None
        new_version = release.version + 1
        try:
            if release.version == 0:
                rows = await self._all(
                    "INSERT INTO releases (key, repo, pr, number, state, active, head_sha, version, doc, pending)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (key) DO NOTHING RETURNING key",
                    (
                        release.key,
                        release.repo,
                        release.pr,
                        release.number,
                        release.state.value,
                        int(release.active),
                        release.head_sha,
                        doc,
                        pending,
                    ),
                )
            else:
                rows = await self._all(
                    "UPDATE releases SET state = ?, active = ?, head_sha = ?, version = ?, doc = ?, pending = ?"
                    " WHERE key = ? AND version = ? RETURNING key",
                    (
                        release.state.value,
                        int(release.active),
                        release.head_sha,
                        new_version,
                        doc,
                        pending,
                        release.key,
                        release.version,
                    ),
                )
        except sqlite3.IntegrityError:
            rows = []  # another active release on this PR
        if not rows:
            raise VersionConflict(f"release {release.key} changed since version {release.version}")
        if jobs:
            await self._flush_outbox("WHERE release_key = ?", (release.key,))
        return replace(release, version=new_version)

    async def recover_outbox(self, *, older_than: timedelta = OUTBOX_RECOVERY_AGE) -> int:
        # Not rows of saves still in flight (their own flush follows within milliseconds): scheduling
        # those here could put an older timer over the newer one a later save just scheduled.
        age = older_than.total_seconds() / 86400
        return await self._flush_outbox("WHERE created <= julianday('now') - ?", (age,))

    async def _flush_outbox(self, where: str, params: Sequence[Any]) -> int:
        rows = await self._all(f"SELECT id, spec FROM outbox {where} ORDER BY id", params)
        for _, spec in rows:
            job = JobSpec.from_doc(orjson.loads(spec))
            await self.schedule_job(
                job.key, job.kind, job.payload, due_at=job.due_at, keep_earlier=job.keep_earlier, once=job.once
            )
        if rows:
            ids = [row[0] for row in rows]
            await self._all(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(ids))})", ids)
        return len(rows)

    async def find_releases(
        self,
        *,
        repo: str | None = None,
        head_sha: str | None = None,
        active_only: bool = True,
        limit: int = 200,
    ) -> list[Release]:
        clauses, params = [], []
        if repo is not None:
            clauses.append("repo = ?")
            params.append(repo)
        if head_sha is not None:
            clauses.append("head_sha = ?")
            params.append(head_sha)
        if active_only:
            clauses.append("active = 1")
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = await self._all(
            "SELECT version, doc FROM releases" + where + " ORDER BY repo, pr, number DESC LIMIT ?",
            (*params, limit),
        )
        return [release_from_doc(orjson.loads(doc), version) for version, doc in rows]

    # Pull records.

    async def get_pull_record(self, repo: str, pr: int) -> PullRecord | None:
        row = await self._one("SELECT version, doc FROM pulls WHERE repo = ? AND pr = ?", (repo, pr))
        return None if row is None else pull_record_from_doc(orjson.loads(row[1]), row[0])

    async def save_pull_record(self, record: PullRecord) -> PullRecord:
        doc = orjson.dumps(pull_record_to_doc(record))
        if record.version == 0:
            rows = await self._all(
                "INSERT INTO pulls (repo, pr, version, doc) VALUES (?, ?, 1, ?)"
                " ON CONFLICT (repo, pr) DO NOTHING RETURNING pr",
                (record.repo, record.pr, doc),
            )
        else:
            rows = await self._all(
                "UPDATE pulls SET version = ?, doc = ? WHERE repo = ? AND pr = ? AND version = ? RETURNING pr",
                (record.version + 1, doc, record.repo, record.pr, record.version),
            )
        if not rows:
            raise VersionConflict(f"pull record {record.repo}#{record.pr} changed")
        return replace(record, version=record.version + 1)

    # What the bot knows of each PR.

    async def get_pull_state(self, repo: str, number: int) -> PullState | None:
        row = await self._one("SELECT version, doc FROM pull_states WHERE repo = ? AND number = ?", (repo, number))
        return None if row is None else pull_state_from_doc(orjson.loads(row[1]), row[0])

    async def save_pull_state(self, state: PullState) -> PullState:
        doc = orjson.dumps(pull_state_to_doc(state))
        labels = orjson.dumps(labels_index(state.labels)).decode()
        updated = _ts(state.updated_at) if state.updated_at else None
        digest = pull_state_digest(state)
        new_version = state.version + 1
        if state.version == 0:
            rows = await self._all(
                "INSERT INTO pull_states (repo, number, state, head_sha, updated_at, labels, digest, version, doc)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?) ON CONFLICT (repo, number) DO NOTHING RETURNING number",
                (state.repo, state.number, state.state, state.head_sha, updated, labels, digest, doc),
            )
        else:
            rows = await self._all(
                "UPDATE pull_states SET state = ?, head_sha = ?, updated_at = ?, labels = ?, digest = ?, version = ?,"
                " doc = ? WHERE repo = ? AND number = ? AND version = ? RETURNING number",
                (
                    state.state,
                    state.head_sha,
                    updated,
                    labels,
                    digest,
                    new_version,
                    doc,
                    state.repo,
                    state.number,
                    state.version,
                ),
            )
        if not rows:
            raise VersionConflict(f"PR record {state.repo}#{state.number} changed since version {state.version}")
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
        clauses: list[str] = []
        params: list[Any] = []
        if not wanted.everything:
            # Owner "o/*": the names from "o/" up to "o0" ("0" follows "/"), a range on the index.
            either = ["p.repo = ?"] * len(wanted.names) + ["(p.repo >= ? AND p.repo < ?)"] * len(wanted.owners)
            clauses.append("(" + " OR ".join(either) + ")")
            params.extend(wanted.names)
            for owner in wanted.owners:
                params.extend((owner + "/", owner + "0"))
        if state is not None:
            clauses.append("p.state = ?")
            params.append(state)
        if head_sha is not None:
            clauses.append("p.head_sha = ?")
            params.append(head_sha)
        if label is not None:
            clauses.append(
                "EXISTS (SELECT 1 FROM pull_state_labels l"
                " WHERE l.label = ? AND l.repo = p.repo AND l.number = p.number)"
            )
            params.append(labels_index([label])[0])
        if after is not None:
            last_repo, last_number = decode_cursor(after)
            clauses.append("(p.repo > ? OR (p.repo = ? AND p.number < ?))")
            params.extend((last_repo, last_repo, last_number))
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = await self._all(
            "SELECT p.version, p.doc FROM pull_states p" + where + " ORDER BY p.repo, p.number DESC LIMIT ?",
            (*params, max(limit, 0) + 1),
        )
        page = [pull_state_from_doc(orjson.loads(doc), version) for version, doc in rows[: max(limit, 0)]]
        if len(rows) > len(page) and page:
            return page, encode_cursor(page[-1].repo, page[-1].number)
        return page, None

    async def get_sha_checks(self, repo: str, sha: str) -> ShaChecks | None:
        row = await self._one("SELECT doc FROM sha_checks WHERE repo = ? AND sha = ?", (repo, sha))
        return None if row is None else sha_checks_from_doc(orjson.loads(row[0]))

    async def save_sha_checks(self, checks: ShaChecks) -> None:
        await self._all(
            "INSERT INTO sha_checks (repo, sha, synced_at, doc) VALUES (?, ?, ?, ?) ON CONFLICT (repo, sha)"
            " DO UPDATE SET synced_at = excluded.synced_at, doc = excluded.doc",
            (checks.repo, checks.sha, _ts(checks.synced_at), orjson.dumps(sha_checks_to_doc(checks))),
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
        due = _ts(due_at)
        seq = job_seq()
        if once:
            await self._all(
                "INSERT INTO jobs (key, kind, payload, due_at, once, seq) VALUES (?, ?, ?, ?, 1, ?)"
                " ON CONFLICT (key) DO NOTHING",
                (key, kind, orjson.dumps(payload), due, seq),
            )
            return
        keep = "MIN(jobs.due_at, excluded.due_at)" if keep_earlier else "excluded.due_at"
        await self._all(
            "INSERT INTO jobs (key, kind, payload, due_at, seq) VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " kind = excluded.kind, payload = excluded.payload, seq = MAX(jobs.seq + 1, excluded.seq),"
            f" due_at = CASE WHEN jobs.status = 'pending' THEN {keep} ELSE excluded.due_at END,"
            # A parked coalesced job (say, a render that kept failing) comes back with the next change.
            " attempts = CASE WHEN jobs.status = 'parked' THEN 0 ELSE jobs.attempts END,"
            " status = CASE WHEN jobs.status = 'parked' THEN 'pending' ELSE jobs.status END",
            (key, kind, orjson.dumps(payload), due, seq),
        )

    async def claim_jobs(self, owner: str, *, now: datetime, lease_seconds: float, limit: int) -> list[Job]:
        t = _ts(now)
        rows = await self._all(
            "UPDATE jobs SET status = 'processing', lease_owner = ?, lease_until = ?, attempts = attempts + 1"
            " WHERE key IN (SELECT key FROM jobs WHERE (status = 'pending' AND due_at <= ?)"
            "   OR (status = 'processing' AND lease_until < ?) ORDER BY due_at LIMIT ?)"
            " RETURNING " + _JOB_COLUMNS,
            (owner, t + lease_seconds, t, t, limit),
        )
        jobs = [_job(r) for r in rows]
        return sorted(jobs, key=lambda j: j.due_at)

    async def finish_job(self, job: Job, owner: str) -> bool:
        tombstone = await self._all(
            "UPDATE jobs SET status = 'done', finished_at = ?, lease_owner = NULL, lease_until = NULL"
            " WHERE key = ? AND lease_owner = ? AND once = 1 RETURNING key",
            (_ts(datetime.now(UTC)), job.key, owner),
        )
        if tombstone:
            return True
        rows = await self._all(
            "DELETE FROM jobs WHERE key = ? AND lease_owner = ? AND seq = ? RETURNING key",
            (job.key, owner, job.seq),
        )
        if rows:
            return True
        # Scheduled again while we worked: hand it back to the queue with its new due time.
        return await self._requeue_newer(job, owner)

    async def retry_job(self, job: Job, owner: str, *, error: str, due_at: datetime) -> bool:
        rows = await self._all(
            "UPDATE jobs SET status = 'pending', due_at = ?, last_error = ?, lease_owner = NULL,"
            " lease_until = NULL WHERE key = ? AND lease_owner = ? AND seq = ? RETURNING key",
            (_ts(due_at), error, job.key, owner, job.seq),
        )
        if rows:
            return True
        return await self._requeue_newer(job, owner)

    async def defer_job(self, job: Job, owner: str, *, due_at: datetime) -> bool:
        rows = await self._all(
            "UPDATE jobs SET status = 'pending', due_at = ?, attempts = MAX(attempts - 1, 0), lease_owner = NULL,"
            " lease_until = NULL WHERE key = ? AND lease_owner = ? AND seq = ? RETURNING key",
            (_ts(due_at), job.key, owner, job.seq),
        )
        if rows:
            return True
        return await self._requeue_newer(job, owner)

    async def _requeue_newer(self, job: Job, owner: str) -> bool:
        """Asked again while it ran: the newer request keeps its own due time and a fresh count."""
        await self._all(
            "UPDATE jobs SET status = 'pending', attempts = 0, lease_owner = NULL, lease_until = NULL"
            " WHERE key = ? AND lease_owner = ?",
            (job.key, owner),
        )
        return False

    async def extend_leases(self, owner: str, *, deliveries: list[str], jobs: list[str], until: datetime) -> None:
        for table, keys in (("deliveries", deliveries), ("jobs", jobs)):
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                await self._all(
                    f"UPDATE {table} SET lease_until = ? WHERE status = 'processing' AND lease_owner = ?"
                    f" AND key IN ({marks})",
                    (_ts(until), owner, *chunk),
                )

    async def park_job(self, job: Job, owner: str, *, error: str) -> bool:
        rows = await self._all(
            "UPDATE jobs SET status = 'parked', last_error = ?, finished_at = ?, lease_owner = NULL,"
            " lease_until = NULL WHERE key = ? AND lease_owner = ? AND seq = ? RETURNING key",
            (error, _ts(datetime.now(UTC)), job.key, owner, job.seq),
        )
        if rows:
            return True
        return await self._requeue_newer(job, owner)

    async def list_parked_jobs(self, *, limit: int = 50) -> list[Job]:
        rows = await self._all(
            "SELECT " + _JOB_COLUMNS + " FROM jobs WHERE status = 'parked' ORDER BY finished_at DESC LIMIT ?",
            (limit,),
        )
        return [_job(r) for r in rows]

    async def purge_jobs(self, *, finished_before: datetime) -> int:
        rows = await self._all(
            "DELETE FROM jobs WHERE status = 'done' AND finished_at < ? RETURNING key", (_ts(finished_before),)
        )
        return len(rows)

    async def next_job_due(self) -> datetime | None:
        row = await self._one("SELECT MIN(due_at) FROM jobs WHERE status = 'pending'")
        return _dt(row[0]) if row else None

    # Leases and values.

    async def acquire_lease(self, name: str, owner: str, *, now: datetime, seconds: float) -> bool:
        t = _ts(now)
        rows = await self._all(
            "INSERT INTO leases (name, owner, until) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until"
            " WHERE leases.owner = excluded.owner OR leases.until < ? RETURNING name",
            (name, owner, t + seconds, t),
        )
        return bool(rows)

    async def release_lease(self, name: str, owner: str) -> None:
        await self._all("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    # The embedded calendar.

    async def save_calendar_event(self, event: CalendarEvent) -> None:
        await self._all(
            "INSERT INTO calendar_events (calendar, id, start, end, cancelled, doc) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (calendar, id) DO UPDATE SET start = excluded.start, end = excluded.end,"
            " cancelled = excluded.cancelled, doc = excluded.doc",
            (
                event.calendar,
                event.id,
                _ts(event.start),
                _ts(event.end),
                int(event.cancelled),
                orjson.dumps(calendar_event_to_doc(event)),
            ),
        )

    async def get_calendar_event(self, calendar: str, event_id: str) -> CalendarEvent | None:
        row = await self._one("SELECT doc FROM calendar_events WHERE calendar = ? AND id = ?", (calendar, event_id))
        return None if row is None else calendar_event_from_doc(orjson.loads(row[0]))

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
        clauses = ["start < ?", "end > ?"]
        params: list[Any] = [_ts(end), _ts(start)]
        if calendar is not None:
            clauses.append("calendar = ?")
            params.append(calendar)
        if calendar_prefix is not None:
            # Not LIKE: `_` and `%` are common in names, and LIKE ignores ASCII case.
            clauses.append("substr(calendar, 1, length(?)) = ?")
            params.extend((calendar_prefix, calendar_prefix))
        if not include_cancelled:
            clauses.append("cancelled = 0")
        rows = await self._all(
            "SELECT doc FROM calendar_events WHERE " + " AND ".join(clauses) + " ORDER BY start, calendar, id LIMIT ?",
            (*params, limit),
        )
        return [calendar_event_from_doc(orjson.loads(doc)) for (doc,) in rows]

    async def get_value(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM kv WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    async def set_value(self, key: str, value: str, *, now: datetime) -> None:
        await self._all(
            "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, value, _ts(now)),
        )

    async def delete_value(self, key: str) -> bool:
        return bool(await self._all("DELETE FROM kv WHERE key = ? RETURNING key", (key,)))

    async def list_values(self, prefix: str, *, limit: int = 100) -> list[tuple[str, str]]:
        # A range on the primary key: the prefix and everything sorting after it that still starts with it.
        rows = await self._all(
            "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key DESC LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        )
        return [(str(k), str(v)) for k, v in rows]

    # The change feed.

    async def append_event(self, topic: str, subject: str, data: dict[str, Any]) -> int:
        rows = await self._all(
            "INSERT INTO events (topic, subject, data) VALUES (?, ?, ?) RETURNING id",
            (topic, subject, orjson.dumps(data)),
        )
        return int(rows[0][0])

    async def read_events(self, *, after: int, limit: int = 100) -> list[StoredEvent]:
        rows = await self._all(
            "SELECT id, topic, subject, data, at FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        )
        return [
            StoredEvent(int(i), str(t), str(s), orjson.loads(d), _from_julian(float(at))) for i, t, s, d, at in rows
        ]

    async def last_event_id(self) -> int:
        (last,) = await self._one("SELECT COALESCE(MAX(id), 0) FROM events")
        return int(last)

    async def purge_events(self, *, before: datetime) -> int:
        julian = before.timestamp() / 86400 + 2440587.5
        return len(await self._all("DELETE FROM events WHERE at < ? RETURNING id", (julian,)))

    # Secrets.

    async def delete_secret(self, name: str) -> bool:
        return bool(await self._all("DELETE FROM secrets WHERE name = ? RETURNING name", (name,)))

    async def put_secret(self, name: str, ciphertext: bytes, *, now: datetime) -> None:
        await self._all(
            "INSERT INTO secrets (name, ciphertext, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET ciphertext = excluded.ciphertext,"
            " updated_at = excluded.updated_at",
            (name, ciphertext, _ts(now)),
        )

    async def get_secret(self, name: str) -> bytes | None:
        row = await self._one("SELECT ciphertext FROM secrets WHERE name = ?", (name,))
        return None if row is None else bytes(row[0])


_JOB_COLUMNS = "key, kind, payload, due_at, attempts, seq, lease_owner, last_error"


def _job(r: Any) -> Job:
    return Job(
        key=r[0],
        kind=r[1],
        payload=orjson.loads(r[2]),
        due_at=datetime.fromtimestamp(r[3], UTC),
        attempts=r[4],
        seq=r[5],
        lease_owner=r[6],
        last_error=r[7],
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        key=row["key"],
        delivery_id=row["delivery_id"],
        event=row["event"],
        action=row["action"],
        installation_id=row["installation_id"],
        body=decompress_body(row["body"]),
        received_at=datetime.fromtimestamp(row["received_at"], UTC),
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=datetime.fromtimestamp(row["next_attempt_at"], UTC),
        lease_owner=row["lease_owner"],
        lease_until=_dt(row["lease_until"]),
        last_error=row["last_error"],
        finished_at=_dt(row["finished_at"]),
    )
