"""One-click App registration (GitHub's App manifest flow) through the real app and the fake GitHub.

The test plays the browser and GitHub's "register a GitHub App" page: it reads the setup page's form (the
state in its action, the manifest in its field), asks the fake GitHub for the code its page would send back
(`manifest_code`, which checks the manifest as GitHub does), and follows the redirect to the bot's callback
with the cookie the page set. The fake then serves `POST /app-manifests/{code}/conversions` and knows the new
App, so the bot's JWT and installation tokens are checked against it."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from bot.app import GITHUB, STORE, make_app
from bot.calendar.oauth import GOOGLE_LINKS
from bot.config import Settings
from bot.context import utcnow
from bot.credentials import STORED_APP, load_registered_app
from bot.doctor import run_doctor
from bot.github import GitHubApp
from bot.secrets import SecretBox, generate_key
from bot.service import ReleaseService
from bot.web.setup import APP_REGISTRATION, CALLBACK_PATH, INSTALLED_PATH, MAX_PENDING, SETUP_COOKIE
from handlers.routes import ALWAYS_DELIVERED, compose, handled_events
from tests.fakes.github import FakeGitHub
from tests.fakes.github_manifest import manifest_problems
from tests.helpers import SECRET, webhook_body, webhook_headers

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
PUBLIC_URL = "https://bot.example.com"
APP_YML = yaml.safe_load((Path(__file__).parents[1] / "app.yml").read_text())
LABELED = webhook_body("pull_request", "labeled")


class _Forms(HTMLParser):
    """The forms of a page: method, action and the values of their named inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"method": values.get("method", "get").lower(), "action": values["action"], "inputs": {}})
        elif tag == "input" and self.forms and "name" in values:
            self.forms[-1]["inputs"][values["name"]] = values.get("value", "")


def _forms(page: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


class Browser:
    """A browser on the bot: the setup cookie kept by hand (the test server is plain http on 127.0.0.1,
    where a client cookie jar would keep neither a Secure cookie nor one from an IP address)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.cookie: str | None = None

    async def open_setup(self, query: str = "") -> tuple[str, dict[str, Any], ClientResponse]:
        """The setup page through the link the bot logged: its POST form to GitHub (action with the state,
        and the manifest)."""
        token = self.client.app[APP_REGISTRATION].token
        query = (query + "&" if query else "?") + f"setup={token}"
        response = await self.client.get("/" + query, headers=self._headers())
        assert response.status == 200, await response.text()
        if SETUP_COOKIE in response.cookies:
            self.cookie = response.cookies[SETUP_COOKIE].value
        page = await response.text()
        [form] = [f for f in _forms(page) if f["method"] == "post"]
        return form["action"], json.loads(form["inputs"]["manifest"]), response

    async def back_from_github(self, code: str, state: str) -> ClientResponse:
        return await self.client.get(
            CALLBACK_PATH, params={"code": code, "state": state}, headers=self._headers(), allow_redirects=False
        )

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{SETUP_COOKIE}={self.cookie}"} if self.cookie else {}


def _state(action: str) -> str:
    [state] = parse_qs(urlsplit(action).query)["state"]
    return state


def _raw_store(settings: Settings) -> bytes:
    """Every byte SQLite keeps: the database file and its write-ahead log."""
    path = settings.sqlite_path
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


@pytest.fixture
def setup_settings(tmp_path: Path, fake_github: FakeGitHub) -> Settings:
    """A bot with no App yet (nor a webhook secret), a key to store secrets, at the fake GitHub."""
    return Settings(
        data_dir=tmp_path / "data",
        secrets_keys=(generate_key(),),
        public_url=PUBLIC_URL,
        github_url=fake_github.url,
        github_api_url=fake_github.url,
        github_write_interval=0.0,
        github_max_retry_wait=5.0,
    )


async def test_the_setup_page_posts_app_yml_as_a_manifest_github_accepts(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub
) -> None:
    client = await aiohttp_client(make_app(setup_settings))
    browser = Browser(client)
    action, manifest, response = await browser.open_setup()

    assert action.startswith(f"{fake_github.url}/settings/apps/new?state=")
    assert manifest["default_events"] == APP_YML["default_events"]
    assert manifest["default_permissions"] == APP_YML["default_permissions"]
    assert set(manifest["default_events"]) == handled_events(compose()) - ALWAYS_DELIVERED
    assert (manifest["name"], manifest["public"]) == (APP_YML["name"], False)
    assert manifest["hook_attributes"] == {"url": f"{PUBLIC_URL}/webhooks/github", "active": True}
    assert manifest["redirect_url"] == f"{PUBLIC_URL}{CALLBACK_PATH}"
    assert manifest["setup_url"] == f"{PUBLIC_URL}{INSTALLED_PATH}"
    assert manifest["callback_urls"] == [
        f"{PUBLIC_URL}/github/oauth/callback",
        f"{PUBLIC_URL}/oauth/google/github",
        f"{PUBLIC_URL}/login/callback",
    ]
    assert manifest_problems(manifest, fake_github.spec) == []

    cookie = response.cookies[SETUP_COOKIE]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    assert (cookie["path"], cookie["max-age"]) == ("/setup/github", "3600")
    assert response.headers["Cache-Control"] == "no-store"
    csp = response.headers["Content-Security-Policy"]
    assert f"form-action 'self' {fake_github.url}" in csp and "frame-ancestors 'none'" in csp
    # The store keeps the state and the cookie only as hashes.
    raw = _raw_store(setup_settings)
    assert _state(action).encode() not in raw and cookie.value.encode() not in raw
    assert fake_github.violations == []


async def test_an_organization_owns_the_app_when_one_is_named(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub
) -> None:
    client = await aiohttp_client(make_app(setup_settings))
    action, _, _ = await Browser(client).open_setup("?org=octo-org")
    assert action.startswith(f"{fake_github.url}/organizations/octo-org/settings/apps/new?state=")

    response = await client.get("/", params={"org": "not an org/../x"})
    page = await response.text()
    assert response.status == 200
    assert "is not an organization name" in page
    assert [f for f in _forms(page) if f["method"] == "post"] == []  # nothing to post to GitHub


async def test_registering_stores_the_app_encrypted_and_the_bot_runs_as_it_at_once(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub
) -> None:
    app = make_app(setup_settings)
    client = await aiohttp_client(app)
    browser = Browser(client)
    # Before: webhooks are refused, fail closed.
    refused = await client.post("/webhooks/github", data=LABELED, headers=webhook_headers("pull_request", LABELED))
    assert refused.status == 503

    action, manifest, _ = await browser.open_setup()
    code = fake_github.manifest_code(json.dumps(manifest), owner="octo-org")
    response = await browser.back_from_github(code, _state(action))

    assert response.status == 303, await response.text()
    [conversion] = fake_github.calls("apps/create-from-manifest")
    created = conversion.response
    assert "authorization" not in conversion.headers  # the code is the credential
    assert response.headers["Location"] == f"{created['html_url']}/installations/new"
    assert response.cookies[SETUP_COOKIE].value == ""  # the cookie is dropped: its work is done
    new_app_id, new_secret = created["id"], created["webhook_secret"]
    assert fake_github.apps[new_app_id].events == APP_YML["default_events"]
    assert fake_github.apps[new_app_id].permissions == APP_YML["default_permissions"]
    assert fake_github.manifests[new_app_id]["hook_attributes"]["url"] == f"{PUBLIC_URL}/webhooks/github"

    # Stored encrypted: nothing of the key or the secrets in the database's bytes, and the vault has it all.
    raw = _raw_store(setup_settings)
    for secret in (created["pem"].splitlines()[1], "PRIVATE KEY", new_secret, created["client_secret"]):
        assert secret.encode() not in raw
    ciphertext = await app[STORE].get_secret(STORED_APP)
    assert ciphertext is not None
    kept = json.loads(SecretBox(setup_settings.secrets_keys).decrypt(ciphertext))
    assert (kept["app_id"], kept["slug"], kept["owner"]) == (new_app_id, created["slug"], "octo-org")
    assert (kept["private_key"], kept["webhook_secret"]) == (created["pem"], new_secret)
    assert (kept["client_id"], kept["client_secret"]) == (created["client_id"], created["client_secret"])

    # The bot now is the new App, with no restart: its JWT, an installation token, its webhook secret.
    github = app[GITHUB]
    assert (await github.app_client().getitem("/app"))["id"] == new_app_id
    fake_github.add_repo("octo-org/widgets")
    fake_github.add_installation(77, "octo-org", repos=["octo-org/widgets"], app_id=new_app_id)
    assert (await github.installation_token(77)).token in fake_github.tokens
    signed = webhook_headers("pull_request", LABELED, secret=new_secret)
    accepted = await client.post("/webhooks/github", data=LABELED, headers=signed)
    assert accepted.status == 202, await accepted.text()
    key = f"{new_app_id}:{signed['X-GitHub-Delivery']}"
    assert [d.key for d in await app[STORE].list_deliveries(None, limit=5)] == [key]
    forged = await client.post("/webhooks/github", data=LABELED, headers=webhook_headers("pull_request", LABELED))
    assert forged.status == 401  # signed with another secret
    # What else reads the App's credentials sees them too: which check runs are the bot's own, the OAuth client.
    assert ReleaseService(app[STORE], setup_settings, utcnow).read.app_id == new_app_id
    assert setup_settings.credentials.client_id == created["client_id"]
    assert "GITHUB_CLIENT_ID" not in app[GOOGLE_LINKS].missing()

    page = await (await client.get("/")).text()
    assert "Connected" in page and created["slug"] in page and f"{created['html_url']}/installations/new" in page
    assert new_secret not in page and "PRIVATE KEY" not in page
    installed = await client.get(INSTALLED_PATH, params={"installation_id": "77", "setup_action": "install"})
    assert installed.status == 200 and "is installed" in await installed.text()

    # The same way back again: refused, and GitHub is not asked twice.
    again = await browser.back_from_github(code, _state(action))
    assert again.status == 400 and "already finished" in await again.text()
    assert len(fake_github.calls("apps/create-from-manifest")) == 1
    assert fake_github.violations == []


async def test_other_processes_use_the_registered_app_without_a_restart(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub, tmp_path: Path
) -> None:
    """`python -m bot web` twice (or web + worker) on one store: the one that did not run the flow reads
    the stored App when a request needs it; one started later reads it at start."""
    same = {
        k: getattr(setup_settings, k)
        for k in ("data_dir", "secrets_keys", "public_url", "github_url", "github_api_url", "github_write_interval")
    }
    registrar = await aiohttp_client(make_app(setup_settings))
    other_settings = Settings(**same)
    other_settings.credentials.refresh_interval = 0.0  # the one-second pause between looks is not under test
    other = await aiohttp_client(make_app(other_settings))
    # A worker process started before the registration, on the same store.
    worker_settings = Settings(**same)
    await load_registered_app(worker_settings.credentials, registrar.server.app[STORE], worker_settings.secrets_keys)
    worker_settings.credentials.refresh_interval = 0.0
    assert not worker_settings.credentials.configured

    browser = Browser(registrar)
    action, manifest, _ = await browser.open_setup()
    response = await browser.back_from_github(fake_github.manifest_code(manifest), _state(action))
    assert response.status == 303
    [conversion] = fake_github.calls("apps/create-from-manifest")
    created = conversion.response

    signed = webhook_headers("pull_request", LABELED, secret=created["webhook_secret"])
    assert (await other.post("/webhooks/github", data=LABELED, headers=signed)).status == 202
    assert other_settings.credentials.app_id == created["id"]

    later_settings = Settings(**same)
    later = await aiohttp_client(make_app(later_settings))
    assert later_settings.credentials.app_id == created["id"]
    assert "Connected" in await (await later.get("/")).text()
    # The worker's GitHubApp asks the store when it first needs a token.
    fake_github.add_installation(78, "octocat", app_id=created["id"])
    github = GitHubApp(worker_settings, registrar.session)
    assert not github.configured
    await github.installation_token(78)
    assert github.app_id == created["id"]


async def test_doctor_checks_the_registered_app(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub
) -> None:
    client = await aiohttp_client(make_app(setup_settings))
    browser = Browser(client)
    action, manifest, _ = await browser.open_setup()
    assert (await browser.back_from_github(fake_github.manifest_code(manifest), _state(action))).status == 303
    [conversion] = fake_github.calls("apps/create-from-manifest")
    out = io.StringIO()
    fresh = Settings(
        **{k: getattr(setup_settings, k) for k in ("data_dir", "secrets_keys", "public_url", "github_api_url")}
    )
    assert await run_doctor(fresh, out) == 0, out.getvalue()
    report = out.getvalue()
    assert f"App 'release-secretary' (id {conversion.response['id']})" in report
    assert "registered on the start page is stored encrypted" in report


@pytest.mark.parametrize(
    ("case", "status", "says"),
    [
        ("forged state", 403, "not started in this browser"),
        ("state from another browser", 403, "not started in this browser"),
        ("no cookie", 403, "did not start the registration"),
        ("no code", 400, "sent no code back"),
    ],
)
async def test_a_forged_or_misplaced_way_back_is_refused_and_github_is_not_asked(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub, case: str, status: int, says: str
) -> None:
    client = await aiohttp_client(make_app(setup_settings))
    browser = Browser(client)
    action, manifest, _ = await browser.open_setup()
    code = fake_github.manifest_code(manifest)
    state = _state(action)
    if case == "forged state":
        state = "A" * 43
    elif case == "state from another browser":
        other = Browser(client)
        await other.open_setup()
        browser = other  # someone else's browser, with the victim's state and code
    elif case == "no cookie":
        browser.cookie = None
    elif case == "no code":
        code = ""
    response = await browser.back_from_github(code, state)

    assert response.status == status
    page = await response.text()
    assert says in page and 'href="/"' in page
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert fake_github.calls("apps/create-from-manifest") == []
    assert not setup_settings.credentials.configured
    assert fake_github.violations == []


async def test_a_refused_attempt_does_not_spend_the_real_one(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub
) -> None:
    client = await aiohttp_client(make_app(setup_settings))
    browser = Browser(client)
    action, manifest, _ = await browser.open_setup()
    code = fake_github.manifest_code(manifest)
    assert (await browser.back_from_github(code, "B" * 43)).status == 403
    assert (await browser.back_from_github(code, _state(action))).status == 303
    assert setup_settings.credentials.configured


async def test_a_state_expires_after_an_hour(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub
) -> None:
    now = [datetime(2026, 11, 24, 9, 0, tzinfo=UTC)]
    client = await aiohttp_client(make_app(setup_settings, clock=lambda: now[0]))
    browser = Browser(client)
    action, manifest, _ = await browser.open_setup()
    now[0] += timedelta(minutes=61)
    response = await browser.back_from_github(fake_github.manifest_code(manifest), _state(action))
    assert response.status == 400 and "expired" in await response.text()
    assert fake_github.calls("apps/create-from-manifest") == []


async def test_a_code_github_does_not_know_registers_nothing(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub
) -> None:
    client = await aiohttp_client(make_app(setup_settings))
    browser = Browser(client)
    action, _, _ = await browser.open_setup()
    response = await browser.back_from_github("0123456789abcdef0123", _state(action))
    assert response.status == 400
    assert "GitHub did not take the code" in await response.text()
    assert [c.status for c in fake_github.calls("apps/create-from-manifest")] == [404]
    assert not setup_settings.credentials.configured
    assert await client.server.app[STORE].get_secret(STORED_APP) is None


async def test_with_the_app_in_the_environment_the_flow_is_refused(
    aiohttp_client: ClientFactory, app_settings: Settings, fake_github: FakeGitHub
) -> None:
    client = await aiohttp_client(make_app(app_settings.replace(public_url=PUBLIC_URL, github_url=fake_github.url)))
    page = await (await client.get("/")).text()
    assert "Connected" in page and "from the environment" in page
    assert [f for f in _forms(page) if f["method"] == "post"] == []

    # Even with a code and a state GitHub sent for another bot, nothing changes.
    response = await client.get(
        CALLBACK_PATH,
        params={"code": "abc", "state": "C" * 43},
        headers={"Cookie": f"{SETUP_COOKIE}={'D' * 43}"},
        allow_redirects=False,
    )
    assert response.status == 409
    assert "set in the environment" in await response.text()
    assert fake_github.calls("apps/create-from-manifest") == []
    assert app_settings.credentials.app_id == 4242


async def test_without_a_secrets_key_the_page_says_what_to_set(tmp_path: Path, aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(Settings(data_dir=tmp_path)))
    response = await client.get("/")
    page = await response.text()
    assert "SECRETS_KEY" in page and "python -m bot keygen" in page
    assert [f for f in _forms(page) if f["method"] == "post"] == []
    assert SETUP_COOKIE not in response.cookies
    # Without PUBLIC_URL the page says where GitHub would send webhooks, and how to make that reachable.
    assert "PUBLIC_URL is not set" in page and "WEBHOOK_PROXY_URL" in page
    assert f"{str(client.make_url('/')).rstrip('/')}/webhooks/github" in page


async def test_without_the_logged_link_nobody_can_register(
    aiohttp_client: ClientFactory, setup_settings: Settings
) -> None:
    client = await aiohttp_client(make_app(setup_settings))
    for query in ("", "?setup=guess", "?setup="):
        page = await (await client.get("/" + query)).text()
        assert "needs the link the bot printed in its log" in page
        assert not [f for f in _forms(page) if f["method"] == "post"]


async def test_page_views_without_the_cookie_cannot_fill_the_store(
    aiohttp_client: ClientFactory, setup_settings: Settings
) -> None:
    client = await aiohttp_client(make_app(setup_settings))
    # Without the logged link the page offers no registration, so it begins none.
    for _ in range(20):
        assert (await client.get("/")).status == 200
    assert await client.server.app[STORE].list_values("app-setup:", limit=10) == []
    link = f"/?setup={client.server.app[APP_REGISTRATION].token}"
    for _ in range(MAX_PENDING + 20):
        assert (await client.get(link)).status == 200
    pending = await client.server.app[STORE].list_values("app-setup:", limit=10 * MAX_PENDING)
    assert len(pending) == MAX_PENDING
    # A browser that keeps its cookie keeps one pending registration, however often it reloads.
    browser = Browser(client)
    for _ in range(5):
        await browser.open_setup()
    assert len(await client.server.app[STORE].list_values("app-setup:", limit=10 * MAX_PENDING)) == MAX_PENDING


async def test_the_environment_webhook_secret_wins_and_the_page_says_so(
    aiohttp_client: ClientFactory, setup_settings: Settings, fake_github: FakeGitHub
) -> None:
    settings = setup_settings.replace(github_webhook_secret=SECRET)
    client = await aiohttp_client(make_app(settings))
    browser = Browser(client)
    action, manifest, response = await browser.open_setup()
    assert "GITHUB_WEBHOOK_SECRET</code> is set in the environment" in await response.text()
    assert (await browser.back_from_github(fake_github.manifest_code(manifest), _state(action))).status == 303
    assert settings.credentials.webhook_secret == SECRET
    assert (
        await client.post("/webhooks/github", data=LABELED, headers=webhook_headers("pull_request", LABELED))
    ).status == 202


def test_on_a_laptop_github_posts_to_the_webhook_proxy_channel() -> None:
    from bot.web.setup import build_manifest, load_seed

    channel = "https://smee.io/AbC123xyz"
    manifest = build_manifest(load_seed(), "http://localhost:3000", channel)
    assert manifest["hook_attributes"] == {"url": channel, "active": True}
    assert build_manifest(load_seed(), "https://bot.example")["hook_attributes"]["url"] == (
        "https://bot.example/webhooks/github"
    )


async def test_without_a_public_url_the_setup_page_makes_a_webhook_proxy_channel(
    aiohttp_client: ClientFactory, setup_settings: Settings
) -> None:
    from bot.web.setup import CHANNEL_PATH, CHANNEL_SERVICE
    from tests.fakes.smee import FakeSmee

    async with FakeSmee() as smee:
        app = make_app(setup_settings.replace(public_url=None))
        app[CHANNEL_SERVICE] = smee.url
        client = await aiohttp_client(app)
        token = client.server.app[APP_REGISTRATION].token
        page = await (await client.get(f"/?setup={token}")).text()
        assert "Create a webhook proxy channel" in page
        # Without the one-time link (another site's form, a stranger): refused, no channel made.
        refused = await client.post(CHANNEL_PATH, data={"setup": "guess"})
        assert refused.status == 403
        made = await client.post(CHANNEL_PATH, data={"setup": token})
        text = await made.text()
        assert made.status == 200 and f"WEBHOOK_PROXY_URL={smee.url}/" in text
