"""Linking a Google calendar: the bot's pages under aiohttp, the fake Google's consent screen and token
endpoint over HTTP, and the linked credentials used against the fake Calendar API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.calendar import SCOPES
from bot.calendar.oauth import GoogleLinks, LinkNotConfigured, add_routes
from bot.config import Settings
from bot.secrets import SecretBox, Vault, generate_key
from bot.store.sqlite import SqliteStore
from tests.fakes.google_calendar import Consent, FakeGoogle, pkce_challenge

PUBLIC_URL = "https://bot.example"
CALLBACK = f"{PUBLIC_URL}/oauth/google/callback"
CLIENT_ID = "1234-bot.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-not-a-real-secret"
ADA = "ada@example.com"

Client = TestClient[web.Request, web.Application]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def fake_google() -> AsyncIterator[FakeGoogle]:
    async with FakeGoogle() as fake:
        fake.add_oauth_client(CLIENT_ID, CLIENT_SECRET, CALLBACK)
        fake.add_calendar(ADA, acl={ADA: "owner"})
        fake.consent = Consent(account=ADA)
        yield fake
        assert fake.violations == []


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "bot.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def links(fake_google: FakeGoogle, store: SqliteStore, clock: Clock) -> GoogleLinks:
    settings = Settings(
        public_url=PUBLIC_URL,
        google_client_id=CLIENT_ID,
        google_client_secret=CLIENT_SECRET,
        google_auth_url=fake_google.auth_url,
        google_token_url=fake_google.token_url,
        google_calendar_api_url=fake_google.url,
    )
    return GoogleLinks(settings, store, Vault(store, SecretBox((generate_key(),))), clock)


@pytest.fixture
async def client(links: GoogleLinks, aiohttp_client: Callable[[web.Application], Awaitable[Client]]) -> Client:
    app = web.Application()
    add_routes(app, links)
    return await aiohttp_client(app)


def local(url: str) -> str:
    """A URL on the bot's public address as a path for the test client."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL
    return f"{parts.path}?{parts.query}"


async def consent(google_url: str) -> str:
    """The person at Google's consent screen (the fake decides per `fake.consent`); where Google sends them."""
    async with aiohttp.ClientSession() as session, session.get(google_url, allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        return answer.headers["Location"]


async def to_google(client: Client, start_url: str) -> str:
    answer = await client.get(local(start_url), allow_redirects=False)
    assert answer.status == 302, await answer.text()
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.headers["Location"]


async def test_linking_keeps_an_encrypted_refresh_token_that_works(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, store: SqliteStore
) -> None:
    start_url = await links.start("ada")
    state = parse_qs(urlsplit(start_url).query)["state"][0]
    assert start_url.startswith(f"{PUBLIC_URL}/oauth/google/start?state=")

    google_url = await to_google(client, start_url)
    assert google_url.startswith(fake_google.auth_url + "?")
    asked = {k: v[0] for k, v in parse_qs(urlsplit(google_url).query).items()}
    challenge = asked.pop("code_challenge")
    assert asked == {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": CALLBACK,
        "scope": " ".join(SCOPES),
        "state": state,
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    }

    page = await client.get(local(await consent(google_url)))
    assert page.status == 200, await page.text()
    assert "Calendar linked for @ada" in await page.text()
    assert page.headers["Referrer-Policy"] == "no-referrer"

    [exchange] = [r for r in fake_google.requests if r.path == "/token"]
    verifier = exchange.form.pop("code_verifier")
    assert pkce_challenge(verifier) == challenge
    assert set(exchange.form) == {"grant_type", "code", "redirect_uri", "client_id", "client_secret"}
    assert (exchange.form["grant_type"], exchange.form["redirect_uri"], exchange.status) == (
        "authorization_code",
        CALLBACK,
        200,
    )

    [refresh_token] = fake_google.grants
    blob = await store.get_secret("google:user:ada")
    assert blob is not None and refresh_token.encode() not in blob and b"refresh_token" not in blob
    stored = json.loads(await links.vault.get("google:user:ada") or "{}")
    assert stored == {
        "refresh_token": refresh_token,
        "scopes": sorted(SCOPES),
        "linked_at": "2026-11-24T09:00:00+00:00",
    }

    calendar = await links.calendar_for("ada")
    assert calendar is not None and calendar.account == "google:user:ada"
    now = datetime(2026, 11, 27, 13, tzinfo=UTC)
    busy = await calendar.free_busy(["primary"], now, now + timedelta(hours=1))
    assert busy.errors == {} and busy.busy == {"primary": []}
    [query] = fake_google.calendar_calls("POST")
    assert query.account == ADA and query.status == 200


async def test_the_store_holds_neither_the_state_nor_the_verifier(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, store: SqliteStore
) -> None:
    start_url = await links.start("ada")
    state = parse_qs(urlsplit(start_url).query)["state"][0]
    await client.get(local(await consent(await to_google(client, start_url))))
    verifier = next(r for r in fake_google.requests if r.path == "/token").form["code_verifier"]

    rows = await store.db.execute_fetchall("SELECT key, value FROM kv")
    dump = json.dumps([tuple(row) for row in rows])
    assert state not in dump and verifier not in dump


async def test_a_link_works_once(client: Client, links: GoogleLinks, fake_google: FakeGoogle) -> None:
    start_url = await links.start("ada")
    back = await consent(await to_google(client, start_url))
    assert (await client.get(local(back))).status == 200

    again = await client.get(local(back))
    assert again.status == 400
    assert "already used" in await again.text()
    restart = await client.get(local(start_url), allow_redirects=False)
    assert restart.status == 400
    assert len([r for r in fake_google.requests if r.path == "/token"]) == 1  # the code was not tried twice


async def test_a_link_expires_after_ten_minutes(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, clock: Clock, store: SqliteStore
) -> None:
    start_url = await links.start("ada")
    back = await consent(await to_google(client, start_url))
    clock.now += timedelta(minutes=10, seconds=1)

    page = await client.get(local(back))
    assert page.status == 400
    assert "expired" in await page.text()
    assert (await client.get(local(start_url), allow_redirects=False)).status == 400
    assert [r for r in fake_google.requests if r.path == "/token"] == []
    assert await store.get_secret("google:user:ada") is None


async def test_declining_links_nothing(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, store: SqliteStore
) -> None:
    fake_google.consent.deny = True
    start_url = await links.start("ada")
    back = await consent(await to_google(client, start_url))
    assert parse_qs(urlsplit(back).query)["error"] == ["access_denied"]

    page = await client.get(local(back))
    assert page.status == 400
    text = await page.text()
    assert "declined" in text and "/ship calendar link" in text
    assert await store.get_secret("google:user:ada") is None
    assert (await client.get(local(start_url), allow_redirects=False)).status == 400  # spent


async def test_unticked_calendar_boxes_link_nothing(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, store: SqliteStore
) -> None:
    fake_google.consent.scopes = ("https://www.googleapis.com/auth/calendar.freebusy",)
    page = await client.get(local(await consent(await to_google(client, await links.start("ada")))))

    assert page.status == 400
    text = await page.text()
    assert "not granted" in text and "view and edit events" in text
    assert await links.credentials_for("ada") is None


@pytest.mark.parametrize(
    ("status", "error", "shown", "said"),
    [(400, "invalid_grant", 400, "invalid_grant"), (503, "temporarily_unavailable", 502, "HTTP 503")],
)
async def test_a_failed_code_exchange_says_so(
    client: Client,
    links: GoogleLinks,
    fake_google: FakeGoogle,
    status: int,
    error: str,
    shown: int,
    said: str,
) -> None:
    back = await consent(await to_google(client, await links.start("ada")))
    fake_google.fail_next(status=status, reason=error, target="token")

    page = await client.get(local(back))
    assert page.status == shown
    assert said in await page.text()
    assert await links.credentials_for("ada") is None


async def test_unknown_states_and_odd_errors_are_refused_safely(client: Client) -> None:
    page = await client.get("/oauth/google/callback", params={"state": "made-up", "code": "4/x"})
    assert page.status == 400
    assert "not known" in await page.text()

    page = await client.get("/oauth/google/callback", params={"state": "made-up", "error": "<script>x</script>"})
    assert page.status == 400
    text = await page.text()
    assert "&lt;script&gt;" in text and "<script>" not in text

    assert (await client.get("/oauth/google/start", params={"state": ""}, allow_redirects=False)).status == 400


async def test_unlinking_forgets_the_token(client: Client, links: GoogleLinks) -> None:
    await client.get(local(await consent(await to_google(client, await links.start("ada")))))
    assert await links.credentials_for("ada") is not None

    assert await links.unlink("ada") is True
    assert await links.credentials_for("ada") is None
    assert await links.calendar_for("ada") is None
    assert await links.unlink("ada") is False


async def test_linking_needs_an_oauth_client_and_a_public_url(
    links: GoogleLinks, aiohttp_client: Callable[[web.Application], Awaitable[Client]]
) -> None:
    bare = GoogleLinks(links.settings.replace(google_client_secret=None, public_url=None), links.store, links.vault)
    assert not bare.configured
    assert bare.missing() == ["GOOGLE_CLIENT_SECRET", "PUBLIC_URL"]
    with pytest.raises(LinkNotConfigured, match="GOOGLE_CLIENT_SECRET, PUBLIC_URL"):
        await bare.start("ada")

    app = web.Application()
    add_routes(app, bare)
    client = await aiohttp_client(app)
    assert (await client.get("/oauth/google/start", params={"state": "x"})).status == 404
