"""The sweep that closes the webhook gap: GitHub never redelivers by itself, so deliveries we failed to
store (bot down, 5xx, timeout) are found in the App's delivery log and redelivered.

One worker sweeps at a time (a named lease); the cursor of the last sweep is kept in the store so a
restart neither misses a window nor rescans three days.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import gidgethub

from .github import GitHubApp
from .store import Store

log = logging.getLogger(__name__)

LEASE = "sweep:webhook-deliveries"
CURSOR = "sweep:webhook-deliveries:since"
# GitHub keeps the delivery log for three days; a redelivery older than that is impossible anyway.
MAX_LOOKBACK = timedelta(days=3)
# A delivery redelivered this many times without success is left for a human (doctor shows it).
MAX_REDELIVERIES = 3
_OVERLAP = timedelta(minutes=5)  # sweeps overlap so a delivery logged late is still seen


@dataclass(frozen=True)
class SweepResult:
    scanned: int
    failed: int
    redelivered: int
    gave_up: int


def _ok(attempt: dict[str, Any]) -> bool:
    code = attempt.get("status_code") or 0
    return 200 <= int(code) < 400


def _when(attempt: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(attempt["delivered_at"]).replace("Z", "+00:00"))


async def sweep_failed_deliveries(
    github: GitHubApp, store: Store, *, owner: str, now: datetime, lease_seconds: float = 600
) -> SweepResult | None:
    """Redeliver every recent delivery that never reached us; None if another worker is sweeping."""
    if not await store.acquire_lease(LEASE, owner, now=now, seconds=lease_seconds):
        return None
    app_id = github.app_id
    saved = await store.get_value(CURSOR)
    since = max(now - MAX_LOOKBACK, datetime.fromisoformat(saved) - _OVERLAP if saved else now - MAX_LOOKBACK)
    gh = github.app_client()
    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    scanned = 0
    # Newest first: stop paging once past the window.
    async for attempt in gh.getiter("/app/hook/deliveries?per_page=100"):
        if _when(attempt) < since:
            break
        scanned += 1
        attempts[attempt["guid"]].append(attempt)

    failed = redelivered = gave_up = 0
    # Where the next sweep starts: now, unless a redelivery was refused (then from that delivery on).
    resume_from = now
    for guid, tries in attempts.items():
        if any(_ok(t) for t in tries):
            continue
        if await store.get_delivery(f"{app_id}:{guid}") is not None:
            continue  # stored after all (GitHub timed out while we were committing)
        failed += 1
        # Counted in the store: a sweep sees only the attempts since the previous one.
        counter = f"sweep:redelivered:{guid}"
        done_before = int(await store.get_value(counter) or 0)
        if max(done_before, sum(1 for t in tries if t.get("redelivery"))) >= MAX_REDELIVERIES:
            gave_up += 1
            log.warning("webhook delivery %s failed %d times; not redelivering again", guid, len(tries))
            continue
        latest = max(tries, key=_when)
        try:
            await gh.post("/app/hook/deliveries/{delivery_id}/attempts", {"delivery_id": latest["id"]}, data=b"")
        except gidgethub.HTTPException as exc:
            log.warning("redelivery of %s refused: %s", guid, exc)
            resume_from = min(resume_from, min(_when(t) for t in tries))
            continue
        redelivered += 1
        await store.set_value(counter, str(done_before + 1), now=now)
        log.info(
            "redelivered a webhook we never stored",
            extra={
                "delivery": guid,
                "gh_event": latest.get("event"),
                "status_code": latest.get("status_code"),
            },
        )
    await store.set_value(CURSOR, resume_from.isoformat(), now=now)
    return SweepResult(scanned=scanned, failed=failed, redelivered=redelivered, gave_up=gave_up)
