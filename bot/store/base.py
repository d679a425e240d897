"""The store's contract: named operations and the records they pass, shared by SQLite and MongoDB."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import lz4.block
import orjson

from ..prstate import pull_state_to_doc

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..calendar import CalendarEvent
    from ..prstate import PullState, ShaChecks
    from ..release import PullRecord, Release


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for a worker (new, or retrying after a failure)
    PROCESSING = "processing"  # claimed under a lease
    DONE = "done"
    PARKED = "parked"  # failed too often; kept with its error for an operator


class VersionConflict(Exception):
    """Someone else saved the record since it was read: read it again and re-apply the change."""


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A verified webhook as it arrived, before any processing."""

    key: str  # app id + ":" + X-GitHub-Delivery: the dedupe key
    delivery_id: str
    event: str
    action: str | None
    installation_id: int | None
    body: bytes  # the raw JSON bytes GitHub signed
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    key: str
    delivery_id: str
    event: str
    action: str | None
    installation_id: int | None
    body: bytes
    received_at: datetime
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Installation:
    """A GitHub App installation as the installation events describe it."""

    id: int
    account_login: str
    account_type: str = "User"
    repository_selection: str = "selected"
    repositories: tuple[str, ...] = ()  # full names, sorted
    suspended: bool = False
    permissions: dict[str, str] = field(default_factory=dict)
    events: tuple[str, ...] = ()
    updated_at: datetime | None = None
    version: int = 0  # 0: not stored yet; the store bumps it on every save


@dataclass(frozen=True, slots=True)
class Job:
    """A durable piece of work due at a time (an outbox write, a timer), coalesced by key."""

    key: str
    kind: str
    payload: dict[str, Any]
    due_at: datetime
    attempts: int = 0
    seq: int = 0  # bumped by every schedule: finishing an older seq leaves the newer request queued
    lease_owner: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job to schedule (see Store.schedule_job), written in one step with the release change that
    caused it: the transactional outbox."""

    key: str
    kind: str
    payload: dict[str, Any]
    due_at: datetime
    keep_earlier: bool = True
    once: bool = False

    def to_doc(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "payload": self.payload,
            "due_at": self.due_at.isoformat(),
            "keep_earlier": self.keep_earlier,
            "once": self.once,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> JobSpec:
        return cls(
            key=doc["key"],
            kind=doc["kind"],
            payload=doc["payload"],
            due_at=datetime.fromisoformat(doc["due_at"]),
            keep_earlier=bool(doc["keep_earlier"]),
            once=bool(doc["once"]),
        )


def job_seq() -> int:
    """A job request's number: the larger of the previous one plus one and this, microseconds of the wall
    clock. A job that finished is deleted, so numbering from 1 again would give its next request the number
    of the run that just ended, and a worker still forgetting that run would take the new one for it."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One entry of the change feed: `topic` "release" or "pr", `subject` the repository it is about."""

    id: int  # only grows: a reader resumes after the last id it saw
    topic: str
    subject: str
    data: dict[str, Any]
    at: datetime


# recover_outbox leaves jobs younger than this to the save that wrote them (it is flushing them now).
OUTBOX_RECOVERY_AGE = timedelta(seconds=10)


class Store(Protocol):
    """Every operation the bot needs from its database. Times are aware UTC datetimes."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    # Webhook inbox.
    async def record_delivery(self, delivery: NewDelivery) -> bool:
        """Store a delivery durably; False if its key was already stored (a redelivery)."""

    async def claim_deliveries(self, owner: str, *, now: datetime, lease_seconds: float, limit: int) -> list[Delivery]:
        """Lease up to `limit` due deliveries (pending, or processing with an expired lease)."""

    async def finish_delivery(self, key: str, owner: str, *, now: datetime) -> bool:
        """Mark done; False if the lease was lost to another worker."""

    async def retry_delivery(self, key: str, owner: str, *, error: str, next_attempt_at: datetime) -> bool: ...

    async def park_delivery(self, key: str, owner: str, *, error: str, now: datetime) -> bool: ...

    async def requeue_delivery(self, key: str, *, now: datetime) -> bool:
        """Put a parked delivery back in the queue with a fresh attempt count."""

    async def get_delivery(self, key: str) -> Delivery | None: ...

    async def list_deliveries(self, status: DeliveryStatus | None = None, *, limit: int = 50) -> list[Delivery]:
        """Newest first."""

    async def count_deliveries(self) -> dict[DeliveryStatus, int]: ...

    async def purge_deliveries(self, *, finished_before: datetime) -> int:
        """Drop done deliveries finished before the given time; return how many."""

    async def next_delivery_due(self) -> datetime | None:
        """When the earliest pending delivery becomes due, for the worker's sleep."""

    # Installations.
    async def get_installation(self, installation_id: int) -> Installation | None: ...

    async def save_installation(self, installation: Installation) -> Installation:
        """Insert (version 0) or update (version must match the stored one, else VersionConflict)."""

    async def delete_installation(self, installation_id: int) -> bool: ...

    async def list_installations(self) -> list[Installation]: ...

    # Releases: one active per PR (a second one is a VersionConflict); versioned documents.
    async def get_active_release(self, repo: str, pr: int) -> Release | None: ...

    async def get_latest_release(self, repo: str, pr: int) -> Release | None: ...

    async def save_release(self, release: Release, jobs: Sequence[JobSpec] = ()) -> Release:
        """Insert (version 0) or update (the version must match, else VersionConflict), and queue `jobs`:
        the effects of the change. The jobs are written in the same atomic step as the release, then
        scheduled; a crash in between leaves them for recover_outbox, so a saved change never loses its
        effects and an unsaved one has none. Earlier leftovers of the release are scheduled first."""

    async def recover_outbox(self, *, older_than: timedelta = OUTBOX_RECOVERY_AGE) -> int:
        """Schedule the jobs a crash left between a release's save and their scheduling (those older than
        OUTBOX_RECOVERY_AGE); return how many."""

    async def find_releases(
        self,
        *,
        repo: str | None = None,
        head_sha: str | None = None,
        active_only: bool = True,
        limit: int = 200,
    ) -> list[Release]: ...

    # The bot's own outputs on a PR (sticky comment id, check runs).
    async def get_pull_record(self, repo: str, pr: int) -> PullRecord | None: ...

    async def save_pull_record(self, record: PullRecord) -> PullRecord: ...

    # Jobs: outbox and timers.
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
        """Create or coalesce the job `key`; with keep_earlier a pending job keeps its earlier due time.

        A `once` job (a reply, a reaction) runs at most once per key, ever: scheduling it again, as a
        retried delivery does, changes nothing, and when done it stays as a tombstone until purged."""

    async def claim_jobs(self, owner: str, *, now: datetime, lease_seconds: float, limit: int) -> list[Job]: ...

    async def finish_job(self, job: Job, owner: str) -> bool:
        """Done: removed, unless it was scheduled again meanwhile (then it stays queued)."""

    async def retry_job(self, job: Job, owner: str, *, error: str, due_at: datetime) -> bool: ...

    async def defer_job(self, job: Job, owner: str, *, due_at: datetime) -> bool:
        """Not a failure, not yet: back in the queue until `due_at`, this claim not counted as an attempt
        (a write waiting for its installation's turn waits in the queue, not in a worker slot)."""

    async def park_job(self, job: Job, owner: str, *, error: str) -> bool:
        """Give up on a job (a permanent error, or too many attempts) but keep it, with its error."""

    async def list_parked_jobs(self, *, limit: int = 50) -> list[Job]: ...

    async def purge_jobs(self, *, finished_before: datetime) -> int:
        """Drop tombstones of once-jobs finished before the given time."""

    async def next_job_due(self) -> datetime | None: ...

    async def extend_leases(self, owner: str, *, deliveries: list[str], jobs: list[str], until: datetime) -> None:
        """Heartbeat: keep the leases of work still in progress from expiring under it."""

    # Named leases (one sweeper among many workers) and small durable values (cursors).
    async def acquire_lease(self, name: str, owner: str, *, now: datetime, seconds: float) -> bool:
        """Take or renew the named lease; False while another owner holds it unexpired."""

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the named lease up early (only if `owner` still holds it)."""

    # The embedded calendar: events keyed by (calendar, id), found by the time they overlap.
    async def save_calendar_event(self, event: CalendarEvent) -> None: ...

    async def get_calendar_event(self, calendar: str, event_id: str) -> CalendarEvent | None: ...

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
        """Events overlapping [start, end) in one calendar (None: every calendar), earliest first.

        `calendar_prefix` keeps only calendars whose name starts with exactly that text (no wildcards,
        case-sensitive), and is applied before `limit`: `f"{repo} "` is one repository's lanes."""

    async def get_value(self, key: str) -> str | None: ...

    async def set_value(self, key: str, value: str, *, now: datetime) -> None: ...

    async def delete_value(self, key: str) -> bool:
        """Remove a value; False when there was none."""

    async def list_values(self, prefix: str, *, limit: int = 100) -> list[tuple[str, str]]:
        """The values whose keys start with `prefix`, greatest key first."""

    # Encrypted secrets: the store keeps opaque ciphertext; bot.secrets does the crypto.
    async def put_secret(self, name: str, ciphertext: bytes, *, now: datetime) -> None: ...

    async def get_secret(self, name: str) -> bytes | None: ...

    # The change feed: every change of a release is logged (by save_release, in the same step); other
    # changes are appended. Read in id order, resumable after any id.
    async def append_event(self, topic: str, subject: str, data: dict[str, Any]) -> int: ...

    async def read_events(self, *, after: int, limit: int = 100) -> list[StoredEvent]: ...

    async def last_event_id(self) -> int: ...

    async def purge_events(self, *, before: datetime) -> int: ...

    async def delete_secret(self, name: str) -> bool:
        """Remove a secret for good; False when there was none."""

    # What the bot knows of each PR (bot.prstate), and the latest checks of each commit.
    async def get_pull_state(self, repo: str, number: int) -> PullState | None: ...

    async def save_pull_state(self, state: PullState) -> PullState:
        """Insert (version 0) or update (the version must match, else VersionConflict); returns it with
        version + 1. A save that changes anything but synced_at logs a "pr" entry in the change feed
        (subject the repo; data repo, pr, state, head_sha, version) in the same step."""

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
        """One page of PRs ordered by (repo, number descending), and the cursor of the next page (None:
        the last one). `repos`: exact "owner/name" or "owner/*" (empty: every repo; ValueError for other
        patterns); `label`: PRs carrying it now (any case); `after`: the cursor a previous page returned
        (ValueError when it is not one). Names compare without regard to case, as on GitHub."""

    async def get_sha_checks(self, repo: str, sha: str) -> ShaChecks | None: ...

    async def save_sha_checks(self, checks: ShaChecks) -> None:
        """Last write wins."""


def installation_to_doc(inst: Installation) -> dict[str, Any]:
    return {
        "id": inst.id,
        "account_login": inst.account_login,
        "account_type": inst.account_type,
        "repository_selection": inst.repository_selection,
        "repositories": list(inst.repositories),
        "suspended": inst.suspended,
        "permissions": inst.permissions,
        "events": list(inst.events),
        "updated_at": inst.updated_at.isoformat() if inst.updated_at else None,
    }


def installation_from_doc(doc: dict[str, Any], version: int) -> Installation:
    updated = doc.get("updated_at")
    return Installation(
        id=doc["id"],
        account_login=doc["account_login"],
        account_type=doc.get("account_type", "User"),
        repository_selection=doc.get("repository_selection", "selected"),
        repositories=tuple(doc.get("repositories", ())),
        suspended=bool(doc.get("suspended", False)),
        permissions=dict(doc.get("permissions", {})),
        events=tuple(doc.get("events", ())),
        updated_at=datetime.fromisoformat(updated) if updated else None,
        version=version,
    )


_LZ4 = b"L"  # codec tag; zlib streams start with 0x78, so rows written before the tag still read


def compress_body(body: bytes) -> bytes:
    # LZ4: a 31 kB payload shrinks ~6.5x in ~8 us (zlib level 1: ~8x in ~35 us); on the intake path
    # CPU is the scarce thing, and either is far cheaper than writing the raw bytes.
    return _LZ4 + bytes(lz4.block.compress(body))


def decompress_body(blob: bytes) -> bytes:
    if blob[:1] == _LZ4:
        return bytes(lz4.block.decompress(blob[1:]))
    return zlib.decompress(blob)


def pull_record_to_doc(record: PullRecord) -> dict[str, Any]:
    return {
        "repo": record.repo,
        "pr": record.pr,
        "comment_id": record.comment_id,
        "check_runs": record.check_runs,
        "rendered": record.rendered,
        "rendered_at": record.rendered_at.isoformat() if record.rendered_at else None,
        "config_problems": list(record.config_problems),
    }


def pull_record_from_doc(doc: dict[str, Any], version: int) -> PullRecord:
    from ..release import PullRecord

    rendered_at = doc.get("rendered_at")
    return PullRecord(
        repo=doc["repo"],
        pr=doc["pr"],
        comment_id=doc.get("comment_id"),
        check_runs={str(k): int(v) for k, v in (doc.get("check_runs") or {}).items()},
        rendered=doc.get("rendered"),
        rendered_at=datetime.fromisoformat(rendered_at) if rendered_at else None,
        config_problems=tuple(doc.get("config_problems") or ()),
        version=version,
    )


def calendar_event_to_doc(event: CalendarEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "calendar": event.calendar,
        "start": event.start.isoformat(),
        "end": event.end.isoformat(),
        "summary": event.summary,
        "description": event.description,
        "cancelled": event.cancelled,
        "release": event.release,
        "lane": event.lane,
        "outcome": event.outcome.value if event.outcome else None,
        "priority": event.priority,
        "link": event.link,
        "updated": event.updated.isoformat() if event.updated else None,
    }


def calendar_event_from_doc(doc: dict[str, Any]) -> CalendarEvent:
    from ..calendar import CalendarEvent, Outcome

    return CalendarEvent(
        id=doc["id"],
        calendar=doc["calendar"],
        start=datetime.fromisoformat(doc["start"]),
        end=datetime.fromisoformat(doc["end"]),
        summary=doc["summary"],
        description=doc.get("description", ""),
        cancelled=bool(doc.get("cancelled")),
        release=doc.get("release"),
        lane=doc.get("lane"),
        outcome=Outcome(doc["outcome"]) if doc.get("outcome") else None,
        priority=bool(doc.get("priority")),
        link=doc.get("link"),
        updated=datetime.fromisoformat(doc["updated"]) if doc.get("updated") else None,
    )


def pull_state_digest(state: PullState) -> str:
    """What a PR record says, bar when it was last synced: a save that only confirms it logs no event."""
    doc = pull_state_to_doc(state)
    del doc["synced_at"]
    return hashlib.blake2b(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def pull_event_data(state: PullState, version: int) -> dict[str, Any]:
    """The change feed's entry for a PR (SQLite's triggers write the same fields)."""
    return {
        "repo": state.repo,
        "pr": state.number,
        "state": state.state,
        "head_sha": state.head_sha,
        "version": version,
    }


@dataclass(frozen=True, slots=True)
class RepoFilter:
    """`repos` of list_pull_states: exact names and whole owners, all lower case."""

    names: tuple[str, ...]
    owners: tuple[str, ...]

    @property
    def everything(self) -> bool:
        return not self.names and not self.owners


def repo_filter(repos: Sequence[str]) -> RepoFilter:
    names: list[str] = []
    owners: list[str] = []
    for pattern in repos:
        owner, slash, name = pattern.strip().partition("/")
        if not slash or not owner or not name or "*" in owner or "/" in name or ("*" in name and name != "*"):
            raise ValueError(f"{pattern!r} is not a repository: give owner/name or owner/*")
        if name == "*":
            owners.append(owner.lower())
        else:
            names.append(f"{owner}/{name}".lower())
    return RepoFilter(tuple(names), tuple(owners))


def encode_cursor(repo: str, number: int) -> str:
    """The opaque cursor after the PR (repo, number) in list_pull_states' order."""
    return base64.urlsafe_b64encode(orjson.dumps([repo, number])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        repo, number = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise ValueError(f"{cursor!r} is not a cursor this list returned") from None
    if not isinstance(repo, str) or not isinstance(number, int):
        raise ValueError(f"{cursor!r} is not a cursor this list returned")
    return repo, number
