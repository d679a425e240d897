"""The sweep finds deliveries GitHub failed to hand us and redelivers each once, through the fake's log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bot.config import Settings
from bot.github import GitHubApp
from bot.redelivery import CURSOR, sweep_failed_deliveries
from bot.store import NewDelivery
from bot.store.sqlite import SqliteStore
from tests.fakes.github import FakeGitHub


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "sweep.db")
    await s.open()
    yield s
    await s.close()


async def test_failed_deliveries_are_redelivered_once(
    app_settings: Settings, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    now = datetime.now(UTC)
    fake_github.clock = lambda: now
    # The log is newest first, ids grow with time: the oldest delivery was logged first.
    old = fake_github.add_hook_delivery(
        event="push", status_code=500, guid="too-old", delivered_at=now - timedelta(days=4)
    )
    ok = fake_github.add_hook_delivery(event="pull_request", action="labeled", status_code=202, guid="ok-1")
    lost = fake_github.add_hook_delivery(event="issue_comment", action="created", status_code=502, guid="lost-1")
    timeout = fake_github.add_hook_delivery(event="check_suite", status_code=0, guid="lost-2")
    stored = fake_github.add_hook_delivery(event="push", status_code=504, guid="stored-late")
    # GitHub timed out on this one while we were still storing it: it is ours already.
    await store.record_delivery(NewDelivery("4242:stored-late", "stored-late", "push", None, 99, b"{}", now))
    async with aiohttp.ClientSession() as session:
        github = GitHubApp(app_settings, session)
        result = await sweep_failed_deliveries(github, store, owner="w1", now=now)
        assert result is not None
        assert (result.failed, result.redelivered) == (2, 2)
        assert sorted(fake_github.redeliveries) == sorted([lost, timeout])
        assert ok not in fake_github.redeliveries and stored not in fake_github.redeliveries
        assert old not in fake_github.redeliveries
        assert await store.get_value(CURSOR) == now.isoformat()

        # Another worker is not allowed to sweep while the lease is held.
        assert await sweep_failed_deliveries(github, store, owner="w2", now=now) is None
    assert fake_github.violations == []


async def test_repeatedly_failing_delivery_is_given_up(
    app_settings: Settings, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    now = datetime.now(UTC)
    fake_github.clock = lambda: now
    fake_github.add_hook_delivery(event="push", status_code=500, guid="poison", delivered_at=now - timedelta(minutes=9))
    for i in range(3):
        fake_github.add_hook_delivery(
            event="push",
            status_code=500,
            guid="poison",
            redelivery=True,
            delivered_at=now - timedelta(minutes=8 - i),
        )
    async with aiohttp.ClientSession() as session:
        result = await sweep_failed_deliveries(GitHubApp(app_settings, session), store, owner="w", now=now)
    assert result is not None and (result.failed, result.redelivered, result.gave_up) == (1, 0, 1)
    assert fake_github.redeliveries == []


async def test_each_sweep_counts_towards_the_limit(
    app_settings: Settings, fake_github: FakeGitHub, store: SqliteStore
) -> None:
    now = datetime.now(UTC)
    original = fake_github.add_hook_delivery(event="push", status_code=413, guid="too-big")
    fake_github.redelivery_status_code = 413  # every redelivery fails the same way
    async with aiohttp.ClientSession() as session:
        github = GitHubApp(app_settings, session)
        results = []
        for i in range(5):
            # Each sweep sees only what was logged since the previous one: earlier redeliveries are
            # out of its window (dropped here), yet the bot stops after three tries.
            for delivery_id in [d for d in fake_github.hook_deliveries if d != original]:
                del fake_github.hook_deliveries[delivery_id]
            result = await sweep_failed_deliveries(github, store, owner="w", now=now + timedelta(seconds=i))
            assert result is not None
            results.append(result.redelivered)
    assert results == [1, 1, 1, 0, 0]
