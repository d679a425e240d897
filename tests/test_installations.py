"""Installation events, signed and posted to the real app, keep the store's view of installations."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import GITHUB, STORE, make_app
from bot.config import Settings
from bot.store import DeliveryStatus
from bot.worker import Worker
from handlers.routes import compose
from tests.fakes.github import FakeGitHub
from tests.helpers import webhook_body, webhook_headers

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]


@pytest.fixture
async def client(aiohttp_client: ClientFactory, app_settings: Settings) -> TestClient:
    return await aiohttp_client(make_app(app_settings))


async def deliver(client: TestClient, settings: Settings, event: str, body: bytes) -> None:
    response = await client.post("/webhooks/github", data=body, headers=webhook_headers(event, body))
    assert response.status == 202
    app = client.server.app
    assert await Worker(app[STORE], settings, compose(), app[GITHUB]).drain() == 1
    counts = await app[STORE].count_deliveries()
    assert counts[DeliveryStatus.DONE] >= 1 and counts[DeliveryStatus.PARKED] == 0


def _with(event: str, name: str, **changes: object) -> bytes:
    data = json.loads(webhook_body(event, name))
    data.update(changes)
    return json.dumps(data).encode()


async def test_installation_lifecycle(
    client: TestClient,
    app_settings: Settings,
    fake_github: FakeGitHub,
) -> None:
    store = client.server.app[STORE]
    await deliver(client, app_settings, "installation", webhook_body("installation", "created"))
    inst = await store.get_installation(957387)
    assert inst is not None
    assert (inst.account_login, inst.repositories, inst.suspended) == (
        "Codertocat",
        ("Codertocat/Hello-World",),
        False,
    )
    assert inst.permissions and inst.version == 1

    added = json.loads(webhook_body("installation_repositories", "added"))
    added["installation"]["id"] = 957387
    added["repositories_added"] = [{"id": 2, "name": "api", "full_name": "Codertocat/api", "private": True}]
    await deliver(client, app_settings, "installation_repositories", json.dumps(added).encode())
    inst = await store.get_installation(957387)
    assert inst is not None and inst.repositories == ("Codertocat/Hello-World", "Codertocat/api")

    removed = json.loads(webhook_body("installation_repositories", "removed"))
    removed["installation"]["id"] = 957387
    removed["repositories_removed"] = [{"id": 1, "name": "Hello-World", "full_name": "Codertocat/Hello-World"}]
    await deliver(client, app_settings, "installation_repositories", json.dumps(removed).encode())
    inst = await store.get_installation(957387)
    assert inst is not None and inst.repositories == ("Codertocat/api",)

    suspend = json.loads(webhook_body("installation", "suspend"))
    suspend["installation"]["id"] = 957387
    await deliver(client, app_settings, "installation", json.dumps(suspend).encode())
    inst = await store.get_installation(957387)
    assert inst is not None and inst.suspended and inst.repositories == ("Codertocat/api",)
    assert inst.version == 4

    deleted = json.loads(webhook_body("installation", "deleted"))
    deleted["installation"]["id"] = 957387
    await deliver(client, app_settings, "installation", json.dumps(deleted).encode())
    assert await store.get_installation(957387) is None
    # None of this needed a GitHub call, not even an installation token.
    assert fake_github.requests == []


async def test_repositories_event_for_an_unknown_installation_creates_it(
    client: TestClient,
    app_settings: Settings,
) -> None:
    body = webhook_body("installation_repositories", "added")
    await deliver(client, app_settings, "installation_repositories", body)
    data = json.loads(body)
    inst = await client.server.app[STORE].get_installation(data["installation"]["id"])
    assert inst is not None
    assert set(inst.repositories) == {r["full_name"] for r in data["repositories_added"]}
