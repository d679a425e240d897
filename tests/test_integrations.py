"""The `/setup` page for chat, calendar and dev agents, through the real app: who may open it, CSRF, and each
form against a fake (Telegram's Bot API, an agent serving its card); tokens are stored encrypted."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from aiohttp import web
from aiohttp.test_utils import TestClient
from google.protobuf.json_format import MessageToDict

from bot.a2a.registry import Registry
from bot.app import SETTINGS, STORE, make_app
from bot.config import Settings
from bot.credentials import RegisteredApp
from bot.secrets import SecretBox, Vault
from bot.web.integrations import SLACK_MANIFEST, TELEGRAM_TOKEN, slack_link, with_stored_chat
from tests.fakes.github import FakeGitHub
from tests.fakes.keys import AppKey
from tests.fakes.server import LocalServer
from tests.fakes.telegram import FakeTelegram
from tests.helpers import SECRET
from tests.scenario import Clock
from tests.test_dashboard import APP_ID, CLIENT_ID, CLIENT_SECRET, NOW, PUBLIC, arrange_github, form_value, sign_in

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]


class CardServer(LocalServer):
    """A dev agent as far as registering it goes: its Agent Card at the well-known path."""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/agent-card.json", self.card)

    async def card(self, request: web.Request) -> web.Response:
        card = AgentCard(
            name="Deploy Agent",
            description="Runs release playbooks.",
            version="1.0",
            supported_interfaces=[AgentInterface(url=self.url, protocol_binding="JSONRPC", protocol_version="1.0")],
            capabilities=AgentCapabilities(streaming=True),
            default_input_modes=["application/json"],
            default_output_modes=["text/plain"],
            skills=[AgentSkill(id="run_playbook", name="Run a playbook", description="Runs one.", tags=["release"])],
        )
        return web.json_response(MessageToDict(card))


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as telegram:
        yield telegram


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory,
    settings: Settings,
    fake_github: FakeGitHub,
    fake_telegram: FakeTelegram,
    app_key: AppKey,
) -> TestClient:
    """A bot whose App was registered through the setup page by alice (no App in the environment)."""
    arrange_github(fake_github, app_key)
    configured = settings.replace(
        github_api_url=fake_github.url,
        github_url=fake_github.url,
        github_client_id=CLIENT_ID,
        github_client_secret=CLIENT_SECRET,
        public_url=PUBLIC,
        telegram_api_url=fake_telegram.url,
    )
    configured.credentials.use(
        RegisteredApp(
            app_id=APP_ID,
            slug="release-secretary",
            owner="alice",
            html_url=f"{fake_github.url}/apps/release-secretary",
            private_key=app_key.rsa_private_key_pem.decode(),
            webhook_secret=SECRET,
            client_id=None,
            client_secret=None,
        )
    )
    return await aiohttp_client(make_app(configured, clock=Clock(NOW)))


def plain(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.split("<main", 1)[-1])))


async def owner_page(client: TestClient, fake_github: FakeGitHub) -> str:
    await sign_in(client, fake_github, "alice", next_path="/setup")  # and back to the page after signing in
    page = await client.get("/setup")
    assert page.status == 200, await page.text()
    return await page.text()


async def raw_secrets(client: TestClient) -> bytes:
    store = client.server.app[STORE]
    names = [TELEGRAM_TOKEN, "chat:telegram-webhook-secret"]
    return b"".join([await store.get_secret(n) or b"" for n in names])


async def test_without_a_session_the_page_sends_to_sign_in(client: TestClient) -> None:
    answer = await client.get("/setup", allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/login?next=%2Fsetup"


async def test_someone_who_does_not_own_the_app_is_refused(client: TestClient, fake_github: FakeGitHub) -> None:
    await sign_in(client, fake_github, "carol")
    answer = await client.get("/setup")
    assert answer.status == 403
    text = plain(await answer.text())
    assert "@carol" in text and "@alice" in text and "ADMIN_LOGINS" in text
    csrf = form_value(await (await client.get("/dashboard")).text(), "csrf")
    posted = await client.post("/setup/telegram", data={"csrf": csrf, "token": "1:x"})
    assert posted.status == 403


async def test_an_admin_login_may_set_up(client: TestClient) -> None:
    from bot.web.integrations import may_set_up

    settings = client.server.app[SETTINGS]
    assert may_set_up(settings, "ALICE")
    assert not may_set_up(settings, "carol")
    assert may_set_up(settings.replace(admin_logins=("Carol",)), "carol")
    assert Settings.from_env({"ADMIN_LOGINS": " carol, dave ,"}).admin_logins == ("carol", "dave")


async def test_the_owner_sees_four_sections_with_status_lines(client: TestClient, fake_github: FakeGitHub) -> None:
    page = await owner_page(client, fake_github)
    text = plain(page)
    headings = re.findall(r"<h2 id=\"[a-z]+-h\">([^<]+)</h2>", page)
    assert headings == ["Slack", "Telegram", "Google Calendar", "A2A dev agents"]
    assert page.count('class="status-lines"') == 4
    assert "slack: not set up" in text
    assert "telegram: not set up" in text
    assert "✓ calendar: built-in" in text
    assert "✓ a2a: no dev agent registered" in text
    assert "/ship calendar link" in text


async def test_the_slack_link_carries_the_manifest_pointed_at_the_bot(
    client: TestClient, fake_github: FakeGitHub
) -> None:
    page = await owner_page(client, fake_github)
    manifest = SLACK_MANIFEST.read_text().replace("https://bot.example.com", PUBLIC)
    link = html.unescape(re.search(r'href="(https://api\.slack\.com/apps\?[^"]+)"', page).group(1))  # type: ignore[union-attr]
    assert link == f"https://api.slack.com/apps?new_app=1&manifest_yaml={quote(manifest, safe='')}"
    assert quote(f"{PUBLIC}/slack/events", safe="") in link
    assert "bot.example.com" not in link
    assert "bot.example.com" in slack_link(Settings(data_dir=Path("unused")))  # no PUBLIC_URL: left as it is


async def test_forms_without_the_csrf_token_are_refused(client: TestClient, fake_github: FakeGitHub) -> None:
    await owner_page(client, fake_github)
    for section, data in (
        ("telegram", {"token": "1:x"}),
        ("slack", {"bot_token": "xoxb-1"}),
        ("calendar", {"service_account": "{}"}),
        ("agents", {"url": "https://agent.example"}),
    ):
        answer = await client.post(f"/setup/{section}", data={**data, "csrf": "guess"})
        assert answer.status == 403, section
    assert await raw_secrets(client) == b""


async def test_a_good_telegram_token_is_checked_stored_encrypted_and_set_up(
    client: TestClient, fake_github: FakeGitHub, fake_telegram: FakeTelegram
) -> None:
    csrf = form_value(await owner_page(client, fake_github), "csrf")
    answer = await client.post("/setup/telegram", data={"csrf": csrf, "token": fake_telegram.token})
    text = plain(await answer.text())
    assert answer.status == 200, text
    assert "@release_secretary_bot: token stored encrypted" in text
    assert "the bot polls" in text  # PUBLIC_URL is http: Telegram sends webhooks to https only
    raw = await raw_secrets(client)
    assert raw and fake_telegram.token.encode() not in raw
    assert fake_telegram.calls_to("setMyCommands") and fake_telegram.calls_to("deleteWebhook")
    store = client.server.app[STORE]
    settings = client.server.app[SETTINGS]
    vault = Vault(store, SecretBox(settings.secrets_keys))
    assert await vault.get(TELEGRAM_TOKEN) == fake_telegram.token
    assert await vault.get("chat:telegram-webhook-secret") is None
    # The next start uses it (the environment sets no Telegram token); the page's status checks it now.
    from bot.web.integrations import load_stored_chat

    started = await load_stored_chat(settings, store)
    assert started.telegram_bot_token == fake_telegram.token and started.telegram_configured
    assert "✓ telegram: @release_secretary_bot, polling for updates" in plain(await (await client.get("/setup")).text())


async def test_a_bad_telegram_token_says_what_telegram_answered(
    client: TestClient, fake_github: FakeGitHub, fake_telegram: FakeTelegram
) -> None:
    csrf = form_value(await owner_page(client, fake_github), "csrf")
    answer = await client.post("/setup/telegram", data={"csrf": csrf, "token": "999:wrong-token"})
    assert answer.status == 400
    text = plain(await answer.text())
    assert "Telegram refused the token:" in text and "Nothing was stored." in text
    assert await raw_secrets(client) == b""
    assert not fake_telegram.calls_to("setMyCommands")


async def test_an_agent_whose_card_is_served_is_registered_with_its_skills(
    client: TestClient, fake_github: FakeGitHub
) -> None:
    csrf = form_value(await owner_page(client, fake_github), "csrf")
    async with CardServer() as agent:
        answer = await client.post("/setup/agents", data={"csrf": csrf, "url": agent.url, "scope": "octo-org"})
        text = plain(await answer.text())
        assert answer.status == 200, text
        assert "Registered Deploy Agent for octo-org (skills: run_playbook)" in text
        assert "run_playbook: Runs one." in text
        agents = await Registry(client.server.app[STORE], Clock(NOW)).agents()
        assert [(a.scope, a.url) for a in agents] == [("octo-org", agent.url.rstrip("/"))]


async def test_an_agent_without_a_card_is_not_registered(client: TestClient, fake_github: FakeGitHub) -> None:
    csrf = form_value(await owner_page(client, fake_github), "csrf")
    async with CardServer() as agent:
        gone = agent.url
    answer = await client.post("/setup/agents", data={"csrf": csrf, "url": gone})
    assert answer.status == 400
    assert "Its Agent Card could not be fetched" in plain(await answer.text())
    assert await Registry(client.server.app[STORE], Clock(NOW)).agents() == []


async def test_a_pasted_service_account_is_checked_then_stored(client: TestClient, fake_github: FakeGitHub) -> None:
    csrf = form_value(await owner_page(client, fake_github), "csrf")
    bad = await client.post("/setup/calendar", data={"csrf": csrf, "service_account": '{"type": "user"}'})
    assert bad.status == 400
    assert "must be a service account key file" in plain(await bad.text())
    assert await client.server.app[STORE].get_secret("google:service-account") is None


async def test_slack_tokens_are_checked_before_anything_is_stored(client: TestClient, fake_github: FakeGitHub) -> None:
    csrf = form_value(await owner_page(client, fake_github), "csrf")
    answer = await client.post("/setup/slack", data={"csrf": csrf, "bot_token": "xoxp-user", "signing_secret": "s"})
    assert answer.status == 400
    assert "SLACK_BOT_TOKEN must be the app's bot token (xoxb-...)" in plain(await answer.text())
    assert await client.server.app[STORE].get_secret("chat:slack-bot-token") is None


def test_the_environment_wins_over_stored_chat_tokens(tmp_path: Path) -> None:
    stored = {"telegram_bot_token": "1:stored", "telegram_webhook_secret": "s", "slack_bot_token": "xoxb-stored"}
    env = Settings(data_dir=tmp_path, telegram_bot_token="2:env")
    filled = with_stored_chat(env, stored)
    assert filled.telegram_bot_token == "2:env" and filled.telegram_webhook_secret is None
    assert filled.slack_bot_token == "xoxb-stored" and filled.stored_chat == {"slack"}
    polling = with_stored_chat(Settings(data_dir=tmp_path), stored)
    assert polling.telegram_bot_token == "1:stored" and polling.telegram_webhook_secret is None  # no PUBLIC_URL
    webhook = with_stored_chat(Settings(data_dir=tmp_path, public_url="https://bot.test"), stored)
    assert webhook.telegram_webhook_secret == "s" and webhook.stored_chat == {"slack", "telegram"}
