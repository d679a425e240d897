"""Linking a Google calendar: the bot's pages under aiohttp, GitHub's user authorization (the fake GitHub's
web flow and GET /user) confirming who opened the link, the fake Google's consent screen and token
endpoint over HTTP, and the linked credentials used against the fake Calendar API. Each test client is a
browser with a cookie jar of its own: the flow's cookies bind each leg to the browser that began it."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from http.cookies import Morsel
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpServer

from bot.calendar import SCOPES
from bot.calendar.oauth import GoogleLinks, LinkNotConfigured, add_routes
from bot.config import Settings
from bot.secrets import SecretBox, Vault, generate_key
from bot.store.sqlite import SqliteStore
from tests.fakes.github import FakeGitHub
from tests.fakes.google_calendar import Consent, FakeGoogle, Recorded, pkce_challenge

PUBLIC_URL = "https://bot.example"
CALLBACK = f"{PUBLIC_URL}/oauth/google/callback"
GITHUB_CALLBACK = f"{PUBLIC_URL}/oauth/google/github"
CLIENT_ID = "1234-bot.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-not-a-real-secret"
GITHUB_CLIENT_ID = "Iv1.0123456789abcdef"
GITHUB_CLIENT_SECRET = "not-a-real-github-client-secret"
ADA = "ada@example.com"

Client = TestClient[web.Request, web.Application]
Browsers = Callable[[], Awaitable[Client]]


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
def github(fake_github: FakeGitHub) -> FakeGitHub:
    """The fake GitHub with the App's OAuth client, and ada signed in to GitHub in the test's browser."""
    fake_github.add_oauth_app(GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET, GITHUB_CALLBACK)
    fake_github.signed_in_as = "ada"
    return fake_github


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
async def links(
    fake_google: FakeGoogle, github: FakeGitHub, store: SqliteStore, clock: Clock
) -> AsyncIterator[GoogleLinks]:
    settings = Settings(
        public_url=PUBLIC_URL,
        github_url=github.url,
        github_api_url=github.url,
        github_client_id=GITHUB_CLIENT_ID,
        github_client_secret=GITHUB_CLIENT_SECRET,
        google_client_id=CLIENT_ID,
        google_client_secret=CLIENT_SECRET,
        google_auth_url=fake_google.auth_url,
        google_token_url=fake_google.token_url,
        google_calendar_api_url=fake_google.url,
    )
    yield GoogleLinks(settings, store, Vault(store, SecretBox((generate_key(),))), clock)
    assert github.violations == []


@pytest.fixture
async def server(links: GoogleLinks, aiohttp_server: AiohttpServer) -> TestServer:
    app = web.Application()
    add_routes(app, links)
    return await aiohttp_server(app)


@pytest.fixture
async def browsers(server: TestServer) -> AsyncIterator[Browsers]:
    """Opens browsers on the bot, each with its own cookie jar. The bot's PUBLIC_URL is https (a TLS proxy
    in front), so its cookies are Secure: the jar counts the plain-http test server as that secure origin
    and otherwise keeps and sends cookies as a browser does (Path, Max-Age, deletion)."""
    opened: list[Client] = []

    async def open_browser() -> Client:
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=server.make_url("/"))
        browser = TestClient(server, cookie_jar=jar)
        await browser.start_server()
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        await browser.close()


@pytest.fixture
async def client(browsers: Browsers) -> Client:
    """The browser of the person the link is for."""
    return await browsers()


def local(url: str) -> str:
    """A URL on the bot's public address as a path for the test client."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL
    return f"{parts.path}?{parts.query}"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def follow(url: str) -> str:
    """The person's browser at GitHub's or Google's page (the fakes decide); where it sends them."""
    async with aiohttp.ClientSession() as session, session.get(url, allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        return answer.headers["Location"]


async def to_github(client: Client, start_url: str) -> str:
    """Open the link: the bot sends the person to GitHub's authorization page."""
    answer = await client.get(local(start_url), allow_redirects=False)
    assert answer.status == 302, await answer.text()
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    return answer.headers["Location"]


async def back_from_github(client: Client, start_url: str) -> str:
    """Open the link and sign in at GitHub: the bot's GitHub callback URL, with GitHub's code."""
    return await follow(await to_github(client, start_url))


async def to_google(client: Client, start_url: str) -> str:
    """Open the link, let GitHub confirm who you are: the bot sends you on to Google's consent screen."""
    answer = await client.get(local(await back_from_github(client, start_url)), allow_redirects=False)
    assert answer.status == 302, await answer.text()
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.headers["Location"]


def token_requests(fake_google: FakeGoogle) -> list[Recorded]:
    return [r for r in fake_google.requests if r.path == "/token"]


async def link_records(store: SqliteStore) -> list[str]:
    rows = await store.db.execute_fetchall("SELECT key FROM kv WHERE key LIKE 'google-oauth-%'")
    return [str(row[0]) for row in rows]


def jar(browser: Client) -> dict[str, str]:
    """The cookies the browser would send back to the bot's flow."""
    url = browser.make_url("/oauth/google/callback")
    return {name: morsel.value for name, morsel in browser.session.cookie_jar.filter_cookies(url).items()}


def set_cookie(answer: aiohttp.ClientResponse, name: str) -> Morsel[str]:
    [header] = [h for h in answer.headers.getall("Set-Cookie", []) if h.startswith(f"{name}=")]
    morsel = answer.cookies[name]
    assert morsel.OutputString() in header
    return morsel


async def test_linking_keeps_an_encrypted_refresh_token_that_works(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, github: FakeGitHub, store: SqliteStore
) -> None:
    start_url = await links.start("ada")
    state = query_of(start_url)["state"]
    assert start_url.startswith(f"{PUBLIC_URL}/oauth/google/start?state=")

    github_url = await to_github(client, start_url)
    assert github_url.startswith(f"{github.url}/login/oauth/authorize?")
    asked = query_of(github_url)
    github_challenge = asked.pop("code_challenge")
    github_state = asked.pop("state")
    assert asked == {
        "client_id": GITHUB_CLIENT_ID,
        "redirect_uri": GITHUB_CALLBACK,
        "login": "ada",
        "allow_signup": "false",
        "code_challenge_method": "S256",
    }
    assert state not in github_url  # GitHub gets a state of its own; the link's goes no further
    assert github_state.startswith(hashlib.sha256(state.encode()).hexdigest() + ".")

    back = await follow(github_url)
    assert back.startswith(GITHUB_CALLBACK + "?") and query_of(back)["state"] == github_state
    confirmed = await client.get(local(back), allow_redirects=False)
    assert confirmed.status == 302, await confirmed.text()
    assert confirmed.headers["Referrer-Policy"] == "no-referrer"
    [exchange] = [r for r in github.requests if r.path == "/login/oauth/access_token"]
    assert exchange.method == "POST" and exchange.headers["accept"] == "application/json"
    github_verifier = exchange.form.pop("code_verifier")
    assert pkce_challenge(github_verifier) == github_challenge
    assert exchange.form == {
        "client_id": GITHUB_CLIENT_ID,
        "client_secret": GITHUB_CLIENT_SECRET,
        "code": query_of(back)["code"],
        "redirect_uri": GITHUB_CALLBACK,
    }
    [who] = github.calls("users/get-authenticated")
    [user_token] = github.user_tokens
    assert who.headers["authorization"] == f"Bearer {user_token}" and who.status == 200
    assert who.headers["x-github-api-version"] == "2022-11-28"

    google_url = confirmed.headers["Location"]
    assert google_url.startswith(fake_google.auth_url + "?")
    asked = query_of(google_url)
    challenge = asked.pop("code_challenge")
    google_state = asked.pop("state")
    assert asked == {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": CALLBACK,
        "scope": " ".join(SCOPES),
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    }
    assert state not in google_url and google_state != github_state

    page = await client.get(local(await follow(google_url)))
    assert page.status == 200, await page.text()
    assert "Calendar linked for @ada" in await page.text()
    assert page.headers["Referrer-Policy"] == "no-referrer"

    [exchange] = token_requests(fake_google)
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
    assert await link_records(store) == []  # the spent link leaves nothing behind

    calendar = await links.calendar_for("ada")
    assert calendar is not None and calendar.account == "google:user:ada"
    now = datetime(2026, 11, 27, 13, tzinfo=UTC)
    busy = await calendar.free_busy(["primary"], now, now + timedelta(hours=1))
    assert busy.errors == {} and busy.busy == {"primary": []}
    [query] = fake_google.calendar_calls("POST")
    assert query.account == ADA and query.status == 200


async def test_the_store_and_the_logs_hold_no_state_code_token_or_verifier(
    client: Client,
    links: GoogleLinks,
    fake_google: FakeGoogle,
    github: FakeGitHub,
    store: SqliteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    start_url = await links.start("ada")
    github_url = await to_github(client, start_url)
    back = await follow(github_url)
    google_url = (await client.get(local(back), allow_redirects=False)).headers["Location"]
    cookies = jar(client)
    dumps = []
    for table in ("kv", "secrets"):
        rows = await store.db.execute_fetchall(f"SELECT * FROM {table}")
        dumps.append(repr([tuple(row) for row in rows]))
    await client.get(local(await follow(google_url)))
    rows = await store.db.execute_fetchall("SELECT * FROM kv")
    dumps.append(repr([tuple(row) for row in rows]))
    dump = "\n".join(dumps)

    [user_token] = github.user_tokens
    github_verifier = next(r for r in github.requests if r.path == "/login/oauth/access_token").form["code_verifier"]
    google_verifier = next(r for r in fake_google.requests if r.path == "/token").form["code_verifier"]
    secrets_seen = {
        "link state": query_of(start_url)["state"],
        "GitHub's state": query_of(github_url)["state"].partition(".")[2],
        "GitHub's code": query_of(back)["code"],
        "GitHub user token": user_token,
        "GitHub verifier": github_verifier,
        "Google's state": query_of(google_url)["state"].partition(".")[2],
        "Google verifier": google_verifier,
        "GitHub leg's cookie": cookies["rs_calendar_signin"],
        "Google leg's cookie": cookies["rs_calendar_link"],
    }
    # Everything logged, SQL included, but the test server's access log: the bot runs with access_log=None.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    for what, value in secrets_seen.items():
        assert value not in dump, what
        assert value not in logged, what


async def test_each_leg_gives_the_browser_a_secure_httponly_lax_cookie_the_store_keeps_only_hashed(
    client: Client, links: GoogleLinks, github: FakeGitHub, store: SqliteStore, clock: Clock
) -> None:
    start_url = await links.start("ada")
    clock.now += timedelta(minutes=4)
    opened = await client.get(local(start_url), allow_redirects=False)
    assert opened.status == 302
    sign_in = set_cookie(opened, "rs_calendar_signin")
    assert (sign_in["path"], sign_in["samesite"], sign_in["httponly"], sign_in["secure"]) == (
        "/oauth/google",
        "Lax",  # sent on the top-level GET back from GitHub's and Google's sites
        True,
        True,
    )
    assert sign_in["max-age"] == "360"  # what is left of the link's 10 minutes

    confirmed = await client.get(local(await follow(opened.headers["Location"])), allow_redirects=False)
    assert confirmed.status == 302
    link = set_cookie(confirmed, "rs_calendar_link")
    assert (link["path"], link["samesite"], link["httponly"], link["secure"]) == ("/oauth/google", "Lax", True, True)
    assert link["max-age"] == "600"  # the confirmed person's own 10 minutes
    assert link.value != sign_in.value
    rows = await store.db.execute_fetchall("SELECT * FROM kv")
    dump = repr([tuple(row) for row in rows])
    assert link.value not in dump and hashlib.sha256(link.value.encode()).hexdigest() in dump

    page = await client.get(local(await follow(confirmed.headers["Location"])))
    assert page.status == 200, await page.text()
    cleared = set_cookie(page, "rs_calendar_link")
    assert (cleared.value, cleared["max-age"], cleared["path"]) == ("", "0", "/oauth/google")
    assert "rs_calendar_link" not in jar(client)


async def test_over_plain_http_the_cookies_are_not_marked_secure(links: GoogleLinks, client: Client) -> None:
    links.settings = links.settings.replace(public_url="http://127.0.0.1:8080")
    start_url = await links.start("ada")
    opened = await client.get("/oauth/google/start", params=query_of(start_url), allow_redirects=False)
    assert opened.status == 302
    sign_in = set_cookie(opened, "rs_calendar_signin")
    assert (sign_in["secure"], sign_in["httponly"], sign_in["samesite"]) == ("", True, "Lax")


@pytest.mark.parametrize("victims_cookie", ["none", "her own link's", "made up"])
async def test_googles_consent_url_forwarded_to_someone_else_links_nothing_and_spends_the_link(
    client: Client,
    browsers: Browsers,
    links: GoogleLinks,
    fake_google: FakeGoogle,
    github: FakeGitHub,
    store: SqliteStore,
    victims_cookie: str,
) -> None:
    # Mallory opens her own link in her browser, GitHub confirms her, and she forwards Google's consent URL.
    github.signed_in_as = "mallory"
    google_url = await to_google(client, await links.start("mallory"))
    record = "google-oauth-state:" + query_of(google_url)["state"].partition(".")[0]
    victim = await browsers()
    if victims_cookie == "her own link's":
        github.signed_in_as = "ada"
        await to_google(victim, await links.start("ada"))
        assert "rs_calendar_link" in jar(victim)
    elif victims_cookie == "made up":
        made_up = {"rs_calendar_link": secrets.token_urlsafe(32)}  # as the bot would set it: Path=/oauth/google
        victim.session.cookie_jar.update_cookies(made_up, victim.make_url("/oauth/google/callback"))

    back = await follow(google_url)  # the victim consents as ada@example.com; Google sends her to the bot
    page = await victim.get(local(back))
    assert page.status == 403
    text = await page.text()
    assert "This calendar link was confirmed in another browser" in text
    assert "nothing was linked" in text and "in the browser where you are signed in to GitHub" in text
    assert page.headers["Cache-Control"] == "no-store"
    assert token_requests(fake_google) == []  # the victim's code was never used
    assert await store.get_secret("google:user:mallory") is None
    assert record not in await link_records(store)  # spent
    assert "rs_calendar_link" not in jar(victim)

    # Not even Mallory, in the browser GitHub confirmed, can bring the victim's answer back later.
    replayed = await client.get(local(back))
    assert replayed.status == 400
    assert "not known" in await replayed.text()
    assert token_requests(fake_google) == []
    assert await links.credentials_for("mallory") is None


async def test_githubs_answer_replayed_in_another_browser_is_refused_and_the_link_still_works(
    client: Client, browsers: Browsers, links: GoogleLinks, github: FakeGitHub
) -> None:
    start_url = await links.start("ada")
    back = await back_from_github(client, start_url)  # ada's GitHub callback URL, code and all, leaks
    other = await browsers()
    page = await other.get(local(back), allow_redirects=False)
    assert page.status == 403
    assert "This sign-in began in another browser" in await page.text()
    assert "rs_calendar_link" not in jar(other)
    await to_github(other, start_url)  # a sign-in of its own does not make ada's its
    assert (await other.get(local(back), allow_redirects=False)).status == 403
    assert [r for r in github.requests if r.path == "/login/oauth/access_token"] == []  # the code was not used

    confirmed = await client.get(local(back), allow_redirects=False)  # ada's browser goes on
    assert confirmed.status == 302, await confirmed.text()
    assert (await client.get(local(await follow(confirmed.headers["Location"])))).status == 200
    assert await links.credentials_for("ada") is not None


async def test_someone_else_opening_the_link_is_refused_and_spends_it(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, github: FakeGitHub, store: SqliteStore
) -> None:
    start_url = await links.start("ada")  # posted in a PR comment: mallory can read it too
    github.signed_in_as = "mallory"

    page = await client.get(local(await back_from_github(client, start_url)), allow_redirects=False)
    assert page.status == 403
    text = await page.text()
    assert (
        "This link was made for @ada, but you are signed in to GitHub as @mallory: ask @ada to open it, or "
        "comment <code>/ship calendar link</code> yourself."
    ) in text
    assert page.headers["Cache-Control"] == "no-store"
    assert await link_records(store) == []  # burned
    assert fake_google.requests == []  # nobody got near Google
    assert await store.get_secret("google:user:ada") is None

    github.signed_in_as = "ada"  # too late: the link is spent
    assert (await client.get(local(start_url), allow_redirects=False)).status == 400


async def test_github_logins_compare_without_case(client: Client, links: GoogleLinks, github: FakeGitHub) -> None:
    github.signed_in_as = "ADA"
    page = await client.get(local(await follow(await to_google(client, await links.start("Ada")))))
    assert page.status == 200, await page.text()
    assert await links.credentials_for("Ada") is not None


async def test_googles_callback_refuses_a_link_github_has_not_confirmed(
    client: Client,
    browsers: Browsers,
    links: GoogleLinks,
    fake_google: FakeGoogle,
    github: FakeGitHub,
    store: SqliteStore,
) -> None:
    start_url = await links.start("ada")
    # Mallory opens the link and skips GitHub: she takes the record's id from GitHub's state and brings
    # Google's answer for her own account straight to the bot's callback.
    mallory = await browsers()
    github_state = query_of(await to_github(mallory, start_url))["state"]
    forged = {"state": github_state, "code": "4/mallorys-own-code"}
    page = await mallory.get("/oauth/google/callback", params=forged)
    assert page.status == 403
    assert "GitHub has not confirmed this link" in await page.text()
    page = await mallory.get("/oauth/google/callback", params={"state": query_of(start_url)["state"], "code": "4/x"})
    assert page.status == 400  # the link's own state is good for the start page only
    assert token_requests(fake_google) == []
    assert await store.get_secret("google:user:ada") is None

    # None of that spent ada's link: she opens it, GitHub confirms her, and it links her calendar.
    google_url = await to_google(client, start_url)
    record_id = query_of(google_url)["state"].partition(".")[0]
    guessed = await mallory.get("/oauth/google/callback", params={"state": f"{record_id}.guess", "code": "4/x"})
    assert guessed.status == 400
    assert (await client.get(local(await follow(google_url)))).status == 200
    assert await links.credentials_for("ada") is not None


async def test_a_link_works_once(client: Client, links: GoogleLinks, fake_google: FakeGoogle) -> None:
    start_url = await links.start("ada")
    google_url = await to_google(client, start_url)
    again = await client.get(local(start_url), allow_redirects=False)  # confirmed: the link is taken
    assert again.status == 400
    assert "already used" in await again.text()
    back = await follow(google_url)
    assert (await client.get(local(back))).status == 200

    replayed = await client.get(local(back))
    assert replayed.status == 400
    assert "not known" in await replayed.text()
    restart = await client.get(local(start_url), allow_redirects=False)
    assert restart.status == 400
    assert len(token_requests(fake_google)) == 1  # the code was not tried twice


async def test_a_link_opened_in_several_tabs_works_from_any_of_them_once(
    client: Client, links: GoogleLinks, github: FakeGitHub
) -> None:
    start_url = await links.start("ada")
    opened = [await back_from_github(client, start_url) for _ in range(6)]  # a chat's link preview, tabs...
    assert len(jar(client)["rs_calendar_signin"].split(".")) == 5  # the browser keeps as many as the link
    stale = await client.get(local(opened[0]), allow_redirects=False)  # only the latest five are kept
    assert stale.status == 400
    assert "out of date" in await stale.text()
    assert github.calls("users/get-authenticated") == []  # refused before asking GitHub anything

    confirmed = await client.get(local(opened[2]), allow_redirects=False)
    assert confirmed.status == 302
    later = await client.get(local(opened[5]), allow_redirects=False)
    assert later.status == 400
    assert "already used" in await later.text()
    assert (await client.get(local(await follow(confirmed.headers["Location"])))).status == 200


async def test_a_link_expires_after_ten_minutes(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, clock: Clock, store: SqliteStore
) -> None:
    start_url = await links.start("ada")
    back = await follow(await to_google(client, start_url))
    clock.now += timedelta(minutes=10, seconds=1)

    page = await client.get(local(back))
    assert page.status == 400
    assert "expired" in await page.text()
    assert await link_records(store) == []  # deleted on sight
    assert (await client.get(local(start_url), allow_redirects=False)).status == 400
    assert token_requests(fake_google) == []
    assert await store.get_secret("google:user:ada") is None


async def test_a_link_not_opened_in_time_expires_at_the_start_page(
    client: Client, links: GoogleLinks, clock: Clock, store: SqliteStore
) -> None:
    start_url = await links.start("ada")
    clock.now += timedelta(minutes=10)
    page = await client.get(local(start_url), allow_redirects=False)
    assert page.status == 400
    assert "expired" in await page.text()
    assert await link_records(store) == []


async def test_declining_on_google_links_nothing(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, store: SqliteStore
) -> None:
    fake_google.consent.deny = True
    start_url = await links.start("ada")
    back = await follow(await to_google(client, start_url))
    assert query_of(back)["error"] == "access_denied"

    page = await client.get(local(back))
    assert page.status == 400
    text = await page.text()
    assert "declined" in text and "/ship calendar link" in text
    assert await store.get_secret("google:user:ada") is None
    assert await link_records(store) == []  # spent
    assert "rs_calendar_link" not in jar(client)
    assert (await client.get(local(start_url), allow_redirects=False)).status == 400


async def test_declining_on_github_links_nothing_and_the_link_still_works(
    client: Client, links: GoogleLinks, github: FakeGitHub
) -> None:
    github.oauth_deny = True
    start_url = await links.start("ada")
    back = await back_from_github(client, start_url)
    assert query_of(back)["error"] == "access_denied"
    page = await client.get(local(back))
    assert page.status == 400
    assert "You declined on GitHub" in await page.text()

    github.oauth_deny = False  # a change of mind within the 10 minutes
    assert (await client.get(local(await follow(await to_google(client, start_url))))).status == 200


async def test_unticked_calendar_boxes_link_nothing(
    client: Client, links: GoogleLinks, fake_google: FakeGoogle, store: SqliteStore
) -> None:
    fake_google.consent.scopes = ("https://www.googleapis.com/auth/calendar.freebusy",)
    page = await client.get(local(await follow(await to_google(client, await links.start("ada")))))

    assert page.status == 400
    text = await page.text()
    assert "not granted" in text and "view and edit events" in text
    assert await links.credentials_for("ada") is None


@pytest.mark.parametrize(
    ("status", "error", "shown", "said"),
    [(400, "invalid_grant", 400, "invalid_grant"), (503, "temporarily_unavailable", 502, "HTTP 503")],
)
async def test_a_failed_google_code_exchange_says_so(
    client: Client,
    links: GoogleLinks,
    fake_google: FakeGoogle,
    status: int,
    error: str,
    shown: int,
    said: str,
) -> None:
    back = await follow(await to_google(client, await links.start("ada")))
    fake_google.fail_next(status=status, reason=error, target="token")

    page = await client.get(local(back))
    assert page.status == shown
    assert said in await page.text()
    assert await links.credentials_for("ada") is None


async def test_a_code_github_refuses_is_a_400_and_the_link_still_works(
    client: Client, links: GoogleLinks, github: FakeGitHub, store: SqliteStore
) -> None:
    start_url = await links.start("ada")
    back = await back_from_github(client, start_url)
    tampered = {**query_of(back), "code": "0123456789abcdef0123"}
    page = await client.get("/oauth/google/github", params=tampered)
    assert page.status == 400
    text = await page.text()
    assert "GitHub refused the sign-in" in text and "bad_verification_code" in text
    assert github.calls("users/get-authenticated") == []
    assert await link_records(store) != []  # a refused code spends nothing

    assert (await client.get(local(await follow(await to_google(client, start_url))))).status == 200


async def test_a_wrong_github_client_secret_is_the_operators_to_fix(
    client: Client, links: GoogleLinks, caplog: pytest.LogCaptureFixture
) -> None:
    links.settings = links.settings.replace(github_client_secret="stale-secret")
    page = await client.get(local(await back_from_github(client, await links.start("ada"))))
    assert page.status == 400
    assert "incorrect_client_credentials" in await page.text()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "GITHUB_CLIENT_SECRET" in record.getMessage() and "stale-secret" not in caplog.text


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("where", "title"),
    [
        ("token: 5xx", "GitHub failed"),
        ("token: unreachable", "GitHub could not be reached"),
        ("user: 5xx", "GitHub failed"),
        ("user: unreachable", "GitHub could not be reached"),
    ],
)
async def test_github_down_is_a_502_and_the_link_still_works(
    client: Client, links: GoogleLinks, github: FakeGitHub, store: SqliteStore, where: str, title: str
) -> None:
    start_url = await links.start("ada")
    back = await back_from_github(client, start_url)
    healthy = links.settings
    step, _, how = where.partition(": ")
    if how == "5xx":
        path = "^/login/oauth/access_token$" if step == "token" else "^/user$"
        github.fail_next("*", path, 503)
    elif step == "token":
        links.settings = healthy.replace(github_url=closed_port_url())
    else:
        links.settings = healthy.replace(github_api_url=closed_port_url())

    page = await client.get(local(back))
    assert page.status == 502
    assert title in await page.text()
    assert await store.get_secret("google:user:ada") is None

    links.settings = healthy
    assert (await client.get(local(await follow(await to_google(client, start_url))))).status == 200


async def test_unknown_states_and_odd_errors_are_refused_safely(client: Client) -> None:
    page = await client.get("/oauth/google/callback", params={"state": "made-up", "code": "4/x"})
    assert page.status == 400
    assert "not known" in await page.text()
    page = await client.get("/oauth/google/github", params={"state": f"{'0' * 64}.x", "code": "abc"})
    assert page.status == 400
    assert "not known" in await page.text()

    for path in ("/oauth/google/callback", "/oauth/google/github"):
        page = await client.get(path, params={"state": "made-up", "error": "<script>x</script>"})
        assert page.status == 400
        text = await page.text()
        assert "&lt;script&gt;" in text and "<script>" not in text
        page = await client.get(path, params={"state": "made-up"})
        assert page.status == 400
        assert "sent no code back" in await page.text()

    assert (await client.get("/oauth/google/start", params={"state": ""}, allow_redirects=False)).status == 400


async def test_unlinking_deletes_the_token(client: Client, links: GoogleLinks, store: SqliteStore) -> None:
    await client.get(local(await follow(await to_google(client, await links.start("ada")))))
    assert await links.credentials_for("ada") is not None

    assert await links.unlink("ada") is True
    assert await store.get_secret("google:user:ada") is None
    assert await links.credentials_for("ada") is None
    assert await links.calendar_for("ada") is None
    assert await links.unlink("ada") is False


async def test_an_unlinked_marker_from_before_counts_as_no_link(links: GoogleLinks, store: SqliteStore) -> None:
    await links.vault.put("google:user:bob", json.dumps({"unlinked": True}), now=datetime.now(UTC))
    assert await links.credentials_for("bob") is None
    assert await links.unlink("bob") is False
    assert await store.get_secret("google:user:bob") is None  # cleaned up all the same


async def test_a_token_under_a_removed_key_can_still_be_unlinked(links: GoogleLinks, store: SqliteStore) -> None:
    old = Vault(store, SecretBox((generate_key(),)))
    await old.put("google:user:ada", json.dumps({"refresh_token": "1//x"}), now=datetime.now(UTC))
    assert await links.unlink("ada") is True
    assert await store.get_secret("google:user:ada") is None


async def test_spent_records_from_before_are_refused_and_removed(
    client: Client, links: GoogleLinks, store: SqliteStore
) -> None:
    state = "from-an-older-release"
    key = "google-oauth-state:" + hashlib.sha256(state.encode()).hexdigest()
    await store.set_value(key, json.dumps({"used": True, "login": "ada"}), now=datetime.now(UTC))
    page = await client.get("/oauth/google/start", params={"state": state}, allow_redirects=False)
    assert page.status == 400
    assert "already used" in await page.text()
    assert await link_records(store) == []


@pytest.mark.parametrize(
    ("unset", "missing"),
    [
        ({"google_client_secret": None, "public_url": None}, "GOOGLE_CLIENT_SECRET, PUBLIC_URL"),
        ({"github_client_id": None, "github_client_secret": None}, "GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET"),
    ],
)
async def test_linking_needs_both_oauth_clients_and_a_public_url(
    links: GoogleLinks,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    unset: dict[str, None],
    missing: str,
) -> None:
    bare = GoogleLinks(links.settings.replace(**unset), links.store, links.vault)
    assert not bare.configured
    assert ", ".join(bare.missing()) == missing
    with pytest.raises(LinkNotConfigured, match=missing):
        await bare.start("ada")

    app = web.Application()
    add_routes(app, bare)
    client = await aiohttp_client(app)
    for path in ("/oauth/google/start", "/oauth/google/github", "/oauth/google/callback"):
        page = await client.get(path, params={"state": "x", "code": "y"}, allow_redirects=False)
        assert page.status == 404
        assert "Calendar linking is off" in await page.text()


def test_the_urls_to_register() -> None:
    links = GoogleLinks(Settings(public_url=PUBLIC_URL + "/"), None, None)  # type: ignore[arg-type]
    assert (links.redirect_uri, links.github_redirect_uri) == (CALLBACK, GITHUB_CALLBACK)
