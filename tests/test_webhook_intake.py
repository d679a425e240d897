"""Webhook intake through the real app: verify, store before acknowledging, dedupe, refuse bad input."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import GITHUB, STORE, make_app
from bot.config import Settings
from bot.store import DeliveryStatus
from bot.worker import Worker
from handlers.routes import compose
from tests.fakes.github import FakeGitHub
from tests.helpers import SECRET, sign, webhook_body, webhook_fixtures, webhook_headers

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
LABELED = webhook_body("pull_request", "labeled")


@pytest.fixture
async def client(aiohttp_client: ClientFactory, settings: Settings) -> TestClient:
    return await aiohttp_client(make_app(settings))


def _worker(client: TestClient, settings: Settings) -> Worker:
    app = client.server.app
    return Worker(app[STORE], settings, compose(), app[GITHUB])


FIXTURES = list(webhook_fixtures())


async def test_every_fixture_payload_is_accepted_and_dispatched(
    aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub
) -> None:
    """Every GitHub example payload goes through intake and the real handlers without an error,
    against a fake GitHub that knows the payloads' installations and repositories."""
    assert len(FIXTURES) == 99
    for _, path in FIXTURES:
        data = json.loads(path.read_bytes())
        repo = (data.get("repository") or {}).get("full_name")
        if repo and repo.lower() not in fake_github.repos:
            fake_github.add_repo(repo)
        installation = (data.get("installation") or {}).get("id")
        if installation and installation not in fake_github.installations:
            fake_github.add_installation(installation, repo.split("/")[0] if repo else "octocat", app_id=4242)
    client = await aiohttp_client(make_app(app_settings))
    for event, path in FIXTURES:
        body = path.read_bytes()
        response = await client.post("/webhooks/github", data=body, headers=webhook_headers(event, body))
        assert response.status == 202, (path, await response.text())
    worker = _worker(client, app_settings)
    await worker.drain()
    store = client.server.app[STORE]
    counts = await store.count_deliveries()
    assert counts[DeliveryStatus.DONE] == 99, [(d.event, d.action, d.last_error) for d in await store.list_deliveries()]
    assert counts[DeliveryStatus.PARKED] == counts[DeliveryStatus.PENDING] == 0
    assert fake_github.violations == []


async def test_delivery_is_stored_with_its_metadata_before_the_ack(client: TestClient) -> None:
    headers = webhook_headers("pull_request", LABELED, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    response = await client.post("/webhooks/github", data=LABELED, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "queued", "delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    stored = await client.server.app[STORE].get_delivery("0:72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert stored is not None
    assert (stored.event, stored.action, stored.body) == ("pull_request", "labeled", LABELED)
    assert stored.installation_id == json.loads(LABELED)["installation"]["id"]


async def test_installation_id_is_indexed(client: TestClient) -> None:
    body = webhook_body("installation", "created")
    headers = webhook_headers("installation", body, delivery="inst-1")
    assert (await client.post("/webhooks/github", data=body, headers=headers)).status == 202
    stored = await client.server.app[STORE].get_delivery("0:inst-1")
    assert stored is not None and stored.installation_id == json.loads(body)["installation"]["id"]


async def test_redelivery_is_answered_200_and_stored_once(client: TestClient) -> None:
    headers = webhook_headers("pull_request", LABELED, delivery="same-id")
    statuses = [(await client.post("/webhooks/github", data=LABELED, headers=headers)).status for _ in range(10)]
    assert statuses == [202] + [200] * 9
    counts = await client.server.app[STORE].count_deliveries()
    assert sum(counts.values()) == 1


def _bad(headers: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = dict(headers)
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


GOOD = webhook_headers("pull_request", LABELED, delivery="bad-input")


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        (_bad(GOOD, X_Hub_Signature_256=None), LABELED, 401, "missing X-Hub-Signature-256"),
        (_bad(GOOD, X_Hub_Signature_256=sign(LABELED, "wrong")), LABELED, 401, "signature does not match"),
        (_bad(GOOD, X_Hub_Signature_256="sha256=zz"), LABELED, 401, "signature does not match"),
        (_bad(GOOD, X_Hub_Signature_256="sha256=\u00e9\u00e9"), LABELED, 401, "must be sha256=<hex digest>"),
        (_bad(GOOD, X_Hub_Signature_256="sha1=" + "0" * 40), LABELED, 401, "must be sha256=<hex digest>"),
        (_bad(GOOD, X_Hub_Signature_256=None, X_Hub_Signature="sha1=abc"), LABELED, 401, "missing X-Hub"),
        (GOOD, LABELED + b" ", 401, "signature does not match"),
        (_bad(GOOD, Content_Type="application/x-www-form-urlencoded"), LABELED, 415, "application/json"),
        (_bad(GOOD, Content_Type="text/plain"), LABELED, 415, "content type 'text/plain'"),
        (_bad(GOOD, X_GitHub_Delivery=None), LABELED, 400, "X-GitHub-Delivery"),
        (_bad(GOOD, X_GitHub_Delivery="../../etc"), LABELED, 400, "X-GitHub-Delivery"),
        (_bad(GOOD, X_GitHub_Event=None), LABELED, 400, "X-GitHub-Event"),
        (_bad(GOOD, X_Hub_Signature_256=sign(b"{not json")), b"{not json", 400, "not valid JSON"),
        (_bad(GOOD, X_Hub_Signature_256=sign(b"[1, 2]")), b"[1, 2]", 400, "Expected `object`, got `array`"),
        (
            _bad(GOOD, X_Hub_Signature_256=sign(b'{"installation": {"id": "7"}}')),
            b'{"installation": {"id": "7"}}',
            400,
            "Expected `int`, got `str` - at `$.installation.id`",
        ),
    ],
)
async def test_bad_input_gets_its_status_and_nothing_is_stored(
    client: TestClient,
    headers: dict[str, str],
    body: bytes,
    status: int,
    message: str,
) -> None:
    response = await client.post("/webhooks/github", data=body, headers=headers)
    assert response.status == status
    assert response.content_type == "application/json"
    payload = await response.json()
    assert message in payload["error"]
    assert "Traceback" not in payload["error"]
    assert sum((await client.server.app[STORE].count_deliveries()).values()) == 0


async def test_body_over_25_mb_is_refused_413(client: TestClient) -> None:
    body = b'{"a": "' + b"x" * (25 * 1024 * 1024) + b'"}'
    response = await client.post("/webhooks/github", data=io.BytesIO(body), headers=webhook_headers("push", body))
    assert response.status == 413
    assert "payload over" in (await response.json())["error"]


async def test_chunked_body_over_25_mb_is_refused_413(client: TestClient) -> None:
    chunk = b"x" * (1024 * 1024)

    async def stream():
        yield b'{"a": "'
        for _ in range(26):
            yield chunk
        yield b'"}'

    headers = webhook_headers("push", b"")
    response = await client.post("/webhooks/github", data=stream(), headers=headers)
    assert response.status == 413


async def test_without_a_secret_webhooks_are_refused_not_accepted(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(make_app(Settings(data_dir=tmp_path)))
    response = await client.post("/webhooks/github", data=LABELED, headers=webhook_headers("pull_request", LABELED))
    assert response.status == 503
    assert "GITHUB_WEBHOOK_SECRET" in (await response.json())["error"]


async def test_healthz_and_start_page(client: TestClient) -> None:
    health = await client.get("/healthz")
    assert health.status == 200
    assert await health.json() == {"status": "ok", "store": "sqlite"}
    page = await (await client.get("/")).text()
    assert "Not connected to GitHub yet" in page
    assert "GITHUB_APP_ID" in page and "GITHUB_PRIVATE_KEY" in page
    assert SECRET not in page


async def test_healthz_reports_a_dead_store(client: TestClient) -> None:
    await client.server.app[STORE].close()
    health = await client.get("/healthz")
    assert health.status == 503
    assert "store unreachable" in (await health.json())["error"]
