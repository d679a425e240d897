"""A worker killed with SIGKILL mid-delivery loses nothing: after its lease expires a restarted worker
(the real `python -m bot worker`) processes the delivery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bot.store import DeliveryStatus, NewDelivery
from bot.store.sqlite import SqliteStore
from tests.helpers import SECRET, webhook_body

ROOT = Path(__file__).resolve().parent.parent


async def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_sigkilled_worker_delivery_is_processed_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "DATABASE_PATH": str(db),
        "DATA_DIR": str(tmp_path / "data"),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "WORKER_LEASE_SECONDS": "2",
        "WORKER_POLL_INTERVAL": "0.1",
    }
    store = SqliteStore(db)
    await store.open()
    try:
        await _crash_and_recover(store, env, tmp_path)
    finally:
        await store.close()


async def _crash_and_recover(store: SqliteStore, env: dict[str, str], tmp_path: Path) -> None:
    body = webhook_body("installation", "created")
    await store.record_delivery(
        NewDelivery(
            key="0:crash-1",
            delivery_id="crash-1",
            event="installation",
            action="created",
            installation_id=957387,
            body=body,
            received_at=datetime.now(UTC),
        )
    )
    marker = tmp_path / "started"
    victim = subprocess.Popen(  # noqa: ASYNC220 - a real process to kill
        [sys.executable, str(ROOT / "tests" / "crash_worker.py"), str(marker)], env=env, cwd=tmp_path
    )
    try:
        await _wait_for(lambda: asyncio.sleep(0, marker.exists()))
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.wait()
    claimed = await store.get_delivery("0:crash-1")
    assert claimed is not None and claimed.status is DeliveryStatus.PROCESSING and claimed.attempts == 1
    assert await store.get_installation(957387) is None

    worker = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "bot", "worker"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:

        async def done() -> bool:
            d = await store.get_delivery("0:crash-1")
            return d is not None and d.status is DeliveryStatus.DONE

        await _wait_for(done)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=15)
        assert worker.returncode == 0, stderr
    finally:
        worker.kill()
        if worker.stderr:
            worker.stderr.close()
    final = await store.get_delivery("0:crash-1")
    assert final is not None and final.attempts == 2
    installation = await store.get_installation(957387)
    assert installation is not None and installation.account_login == "Codertocat"
    assert "worker stopped" in stderr
