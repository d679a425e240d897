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


async def _screenshot(settings: Settings, name: str) -> str:
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
                page = await browser.new_page(viewport={"width": 1000, "height": 900})
                response = await page.goto(str(server.make_url("/")))
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
