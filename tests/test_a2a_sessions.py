"""The bot's side of dev agent sessions, on a real store: updates from the stream and from push
notifications applied at once and in any order, key rotation, and the placeholders of playbook
parameters."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from bot.a2a.client import Update
from bot.a2a.registry import MAX_LOG_LINES, Agent, Session
from bot.a2a.runner import DevAgents
from bot.config import Settings
from bot.repo_config import fill_placeholders
from bot.secrets import SecretBox, Vault, generate_key
from bot.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
async def agents(tmp_path: Path) -> AsyncIterator[DevAgents]:
    store = SqliteStore(tmp_path / "bot.db")
    await store.open()
    settings = Settings(public_url="https://bot.example.test", data_dir=tmp_path)
    yield DevAgents(store, settings, lambda: T0, Vault(store, SecretBox((generate_key(),))))
    await store.close()


async def session_of(agents: DevAgents) -> Session:
    return await agents.registry.open_session(
        Agent(scope="*", url="http://agent.example.test"),
        skill="run_playbook",
        playbook="deploy-web",
        parameters={},
        repo="octo-org/webshop",
        release="octo-org/webshop#7/1",
        requested_by="alice",
        push_secret="s",
    )


async def test_lines_applied_at_once_and_out_of_order_are_all_kept_in_order(agents: DevAgents) -> None:
    """The stream and queued push notifications (each with its own copy of the session) apply 30 lines
    concurrently, shuffled, some twice: every line is kept, once, in sequence order."""
    session = await session_of(agents)
    seen: list[Update] = []

    async def on_update(s: Session, update: Update) -> None:
        seen.append(update)

    updates = [Update(task_id="t1", state="working", line=f"line {n}", seq=n) for n in range(1, 31)]
    updates += random.Random(7).sample(updates, 10)  # delivered twice: by the stream and by a push
    random.Random(8).shuffle(updates)
    copies = [await agents.registry.session(session.key) for _ in updates]
    await asyncio.gather(*(agents.absorb(c, u, on_update) for c, u in zip(copies, updates, strict=True) if c))
    stored = await agents.registry.session(session.key)
    assert stored is not None
    assert stored.log == [f"line {n}" for n in range(1, 31)]
    assert stored.task_id == "t1" and [c["state"] for c in stored.changes] == ["sending", "working"]
    assert len([u for u in seen if u.line]) == 30  # each line passed on once


async def test_a_late_snapshot_does_not_bring_a_finished_task_back(agents: DevAgents) -> None:
    session = await session_of(agents)
    calls: list[str] = []

    async def on_update(s: Session, update: Update) -> None:
        calls.append(s.state)

    await agents.absorb(session, Update(task_id="t1", state="completed", text="exit 0", final=True), on_update)
    stale = await agents.registry.session(session.key)
    assert stale is not None
    await agents.absorb(session, Update(task_id="t1", state="working"), on_update)
    await agents.absorb(session, Update(task_id="t1", state="completed", text="exit 0", final=True), on_update)
    stored = await agents.registry.session(session.key)
    assert stored is not None and stored.state == "completed" and stored.result == "exit 0"
    assert [c["state"] for c in stored.changes] == ["sending", "working", "completed"]
    # The final state is passed on every time (what follows it may have died before acting on it).
    assert calls == ["completed", "completed", "completed"]


async def test_only_the_latest_lines_are_kept(agents: DevAgents) -> None:
    session = await session_of(agents)

    async def on_update(s: Session, update: Update) -> None:
        return None

    for n in range(1, MAX_LOG_LINES + 11):
        await agents.absorb(session, Update(task_id="t1", state="working", line=f"l{n}", seq=n), on_update)
    await agents.absorb(session, Update(task_id="t1", state="working", line="late", seq=3), on_update)
    stored = await agents.registry.session(session.key)
    assert stored is not None and stored.log == [f"l{n}" for n in range(11, MAX_LOG_LINES + 11)]


async def test_a_rotated_key_signs_and_both_keys_stay_published(agents: DevAgents) -> None:
    first = (await agents.keys.keys())[0]
    await agents.keys.rotate()
    token = await agents.keys.mint(
        issuer="https://bot.example.test", audience="http://agent", skill="run_playbook", repo="o/r", release="o/r#1/1"
    )
    jwks = await agents.keys.jwks()
    kids = [k["kid"] for k in jwks["keys"]]
    header = jwt.get_unverified_header(token)
    assert kids[1] == first.kid and header["kid"] == kids[0] != first.kid
    public = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(token, public, algorithms=["EdDSA"], audience="http://agent")
    assert claims["exp"] - claims["iat"] == 60 and claims["skill"] == "run_playbook"
    await agents.keys.rotate()
    assert first.kid not in [k["kid"] for k in (await agents.keys.jwks())["keys"]]  # two kept, no more


@pytest.mark.parametrize(
    ("template", "filled"),
    [
        ("{merge_sha}", "abc"),
        ("deploy {environment} of {repo}#{pr}", "deploy production of o/r#7"),
        ("{{literal}}", "{literal}"),
    ],
)
def test_placeholders_are_filled(template: str, filled: str) -> None:
    values = {"merge_sha": "abc", "sha": "def", "repo": "o/r", "pr": "7", "environment": "production"}
    assert fill_placeholders(template, values) == filled


@pytest.mark.parametrize("template", ["{sha:>400000000}", "{unknown}", "{sha!r}", "{", "}"])
def test_anything_but_a_plain_placeholder_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="not a placeholder the bot fills in"):
        fill_placeholders(template, {"sha": "x"})
