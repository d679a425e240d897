"""The start page in a real browser (Debian's Chromium driven by Playwright): what an operator sees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from bot.app import make_app
from bot.config import Settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium package)"
)


async def _screenshot(settings: Settings, name: str, *, with_setup_link: bool = False, width: int = 1000) -> str:
    from playwright.async_api import async_playwright

    server = TestServer(make_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
            )
            try:
                page = await browser.new_page(viewport={"width": width, "height": 900})
                path = "/"
                if with_setup_link:  # the link the bot logs at start while no App is configured
                    from bot.web.setup import APP_REGISTRATION

                    path = f"/?setup={server.app[APP_REGISTRATION].token}"
                response = await page.goto(str(server.make_url(path)))
                assert response is not None and response.status == 200
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
                return await page.inner_text("body")
            finally:
                await browser.close()
    finally:
        await server.close()


async def test_unconfigured_start_page_says_what_is_missing(tmp_path: Path) -> None:
    text = await _screenshot(Settings(data_dir=tmp_path), "start-unconfigured")
    assert "Not connected to GitHub yet" in text
    for name in ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH", "GITHUB_WEBHOOK_SECRET"):
        assert name in text
    assert "python -m bot doctor" in text


async def test_configured_start_page_shows_the_webhook_url(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    settings = Settings(
        data_dir=tmp_path,
        github_app_id=4242,
        github_private_key=pem,
        github_webhook_secret="s3cret-value",
        public_url="https://bot.example.com",
    )
    text = await _screenshot(settings, "start-configured")
    assert "Connected" in text and "https://bot.example.com/webhooks/github" in text
    assert "s3cret-value" not in text and "PRIVATE KEY" not in text


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_linking_a_calendar_in_the_browser(tmp_path: Path, fake_github: object, fake_google: object) -> None:
    """A person opens the link from the PR: GitHub confirms who they are, Google asks for consent, and
    the bot says it is done; the same link a second time, and someone else's link, are refused."""
    from playwright.async_api import async_playwright

    from bot.calendar.oauth import GOOGLE_LINKS
    from bot.secrets import generate_key
    from tests.fakes.github import FakeGitHub
    from tests.fakes.google_calendar import Consent, FakeGoogle

    assert isinstance(fake_github, FakeGitHub) and isinstance(fake_google, FakeGoogle)
    port = _free_port()
    public = f"http://127.0.0.1:{port}"
    fake_github.add_oauth_app("Iv1.0123456789abcdef", "github-secret", f"{public}/oauth/google/github")
    fake_github.signed_in_as = "ada"
    fake_google.add_oauth_client("1234.apps.googleusercontent.com", "google-secret", f"{public}/oauth/google/callback")
    fake_google.add_calendar("ada@example.com", acl={"ada@example.com": "owner"})
    fake_google.consent = Consent(account="ada@example.com")
    settings = Settings(
        data_dir=tmp_path,
        secrets_keys=(generate_key(),),
        public_url=public,
        github_url=fake_github.url,
        github_api_url=fake_github.url,
        github_client_id="Iv1.0123456789abcdef",
        github_client_secret="github-secret",
        google_client_id="1234.apps.googleusercontent.com",
        google_client_secret="google-secret",
        google_auth_url=fake_google.auth_url,
        google_token_url=fake_google.token_url,
        google_calendar_api_url=fake_google.url,
    )
    app = make_app(settings)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        links = app[GOOGLE_LINKS]
        mine, theirs = await links.start("ada"), await links.start("bob")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
            )
            try:
                page = await browser.new_page(viewport={"width": 900, "height": 600})
                ARTIFACTS.mkdir(exist_ok=True)
                response = await page.goto(mine)
                assert response is not None and response.status == 200
                await page.screenshot(path=str(ARTIFACTS / "calendar-linked.png"), full_page=True)
                assert "@ada" in await page.inner_text("body")
                assert await links.credentials_for("ada") is not None

                response = await page.goto(mine)
                assert response is not None and response.status in (400, 403, 404, 410)
                await page.screenshot(path=str(ARTIFACTS / "calendar-link-used.png"), full_page=True)
                assert "/ship calendar link" in await page.inner_text("body")

                response = await page.goto(theirs)  # ada is signed in to GitHub, the link is bob's
                assert response is not None and response.status == 403
                await page.screenshot(path=str(ARTIFACTS / "calendar-link-not-yours.png"), full_page=True)
                text = await page.inner_text("body")
                assert "@bob" in text and "@ada" in text
                assert await links.credentials_for("bob") is None
            finally:
                await browser.close()
    finally:
        await server.close()


@pytest.mark.parametrize("width", [1280, 390])
async def test_setup_page_offers_one_click_registration(tmp_path: Path, width: int) -> None:
    from bot.secrets import generate_key

    text = await _screenshot(
        Settings(data_dir=tmp_path, secrets_keys=(generate_key(),)),
        f"start-setup-{width}",
        with_setup_link=True,
        width=width,
    )
    assert "Not connected to GitHub yet" in text and "Register the GitHub App" in text
    assert "Organization that will own the App" in text
    assert "PUBLIC_URL is not set" in text and "WEBHOOK_PROXY_URL" in text
    assert "Or set it up by hand" in text and "python -m bot doctor" in text
