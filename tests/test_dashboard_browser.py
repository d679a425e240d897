"""The dashboard in a real browser (Debian's Chromium driven by Playwright): signing in through GitHub's
authorization, releases in every state, a release page that follows a webhook live, at desktop and phone
widths, with no console errors and every link and button reachable with the keyboard.

Screenshots go to tests/artifacts/ (not committed)."""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bot.app import GITHUB, STORE, make_app
from bot.config import Settings
from bot.worker import Worker
from handlers.routes import compose
from tests.fakes.github import FakeGitHub
from tests.fakes.keys import AppKey
from tests.helpers import webhook_headers
from tests.scenario import Clock, pr_comment
from tests.test_dashboard import CONFIG, NOW, WIDGETS, arrange_github, dashboard_settings, seed, seeded_releases

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
FOCUSABLE = "a[href], button:not([disabled]), input:not([type=hidden]), select, textarea, summary, [tabindex='0']"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium package)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _tab_through(page: Any) -> None:
    """Tab from the top of the page to the end: every link and button must get the focus, in order."""
    wanted = await page.eval_on_selector_all(
        FOCUSABLE, "els => els.filter(e => e.offsetParent !== null || e.getClientRects().length).length"
    )
    await page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    reached: list[str] = []
    for _ in range(wanted + 5):
        await page.keyboard.press("Tab")
        key = await page.evaluate(
            """() => {
                const el = document.activeElement;
                if (!el || el === document.body) return null;
                if (el.dataset.tabbed) return "again";
                el.dataset.tabbed = "1";
                const box = el.getBoundingClientRect();
                const style = getComputedStyle(el);
                const ring = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
                return `${el.tagName}:${ring && box.width > 0 && box.height > 0 ? "visible" : "HIDDEN"}:` +
                    (el.getAttribute("href") || el.textContent.trim());
            }"""
        )
        if key is None or key == "again":
            break
        reached.append(key)
    assert len(reached) == wanted, reached
    assert all(":visible:" in key for key in reached), [k for k in reached if ":visible:" not in k]
    assert reached[0] == "A:visible:#main"  # the skip link comes first
    await page.evaluate("() => document.querySelectorAll('[data-tabbed]').forEach(e => delete e.dataset.tabbed)")


async def test_dashboard_in_chromium(
    tmp_path: Path, settings: Settings, fake_github: FakeGitHub, app_key: AppKey
) -> None:
    from playwright.async_api import async_playwright

    port = _free_port()
    public = f"http://127.0.0.1:{port}"
    arrange_github(fake_github, app_key, public)
    fake_github.signed_in_as = "alice"
    seeded = {r.pr: r for r in seeded_releases() if r.repo == WIDGETS}
    fake_github.add_pull(WIDGETS, 8, head_sha=seeded[8].head_sha, title="Widget colours", user_login="bob")
    fake_github.set_file(WIDGETS, ".github/release-secretary.yml", CONFIG)
    clock = Clock(NOW)
    bot_settings = dashboard_settings(settings, fake_github, app_key, public)
    app = make_app(bot_settings, clock=clock)
    from bot.web.dashboard import add_routes

    add_routes(app)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    problems: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        await seed(app[STORE], clock)
        worker = Worker(app[STORE], bot_settings, compose(), app[GITHUB], clock=clock)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
            )
            try:
                context = await browser.new_context(viewport=DESKTOP)
                page = await context.new_page()
                page.on(
                    "console",
                    lambda m: (
                        problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None
                    ),
                )
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

                # Signed out: the dashboard sends the browser to the sign-in page.
                await page.goto(f"{public}/dashboard")
                assert page.url == f"{public}/login?next=%2Fdashboard"
                await page.screenshot(path=str(ARTIFACTS / "dashboard-sign-in-1280.png"), full_page=True)
                await _tab_through(page)
                await page.set_viewport_size(PHONE)
                await page.screenshot(path=str(ARTIFACTS / "dashboard-sign-in-390.png"))
                await page.set_viewport_size(DESKTOP)

                # Sign in with GitHub: the fake's authorization page answers at once for alice.
                await page.click("text=Sign in with GitHub")
                await page.wait_for_url(f"{public}/dashboard")
                await page.wait_for_selector("#live-status:has-text('Live updates on')")
                text = await page.inner_text("main")
                for heading in ("Upcoming", "In progress", "Released", "Failed or rolled back", "Cancelled"):
                    assert heading in text
                assert "Faster widgets" in text and "Secret launch" not in text
                assert "Rolling out 2 of 6 pods" in text
                await page.screenshot(path=str(ARTIFACTS / "dashboard-1280.png"), full_page=True)
                await _tab_through(page)
                await page.set_viewport_size(PHONE)
                assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
                await page.screenshot(path=str(ARTIFACTS / "dashboard-390.png"), full_page=True)
                await page.evaluate("window.scrollTo(0, 0)")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-390-top.png"))  # the phone's first screen
                await page.set_viewport_size(DESKTOP)

                # The week: windows, the freeze, bookings and the calendar link.
                await page.click("nav[aria-label=Dashboard] >> text=Week")
                await page.wait_for_selector("h1:has-text('Week of')")
                assert "Frozen: Thanksgiving" in await page.inner_text("main")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-week-1280.png"), full_page=True)
                await _tab_through(page)
                await page.set_viewport_size(PHONE)
                assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
                await page.screenshot(path=str(ARTIFACTS / "dashboard-week-390.png"), full_page=True)
                await page.evaluate("window.scrollTo(0, 0)")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-week-390-top.png"))
                await page.set_viewport_size(DESKTOP)

                # A release page follows a webhook live: alice comments `/ship cancel` on the PR.
                await page.goto(f"{public}/dashboard/releases/{WIDGETS}/8/1")
                await page.wait_for_selector("#live-status:has-text('Live updates on')")
                assert "Verifying" in await page.inner_text("#state")
                await page.screenshot(path=str(ARTIFACTS / "release-before-1280.png"), full_page=True)
                await _tab_through(page)
                await page.evaluate("window.__sameDocument = true")
                comment_id = fake_github.add_comment(WIDGETS, 8, "/ship cancel", user_login="alice")
                body = json.dumps(pr_comment(8, "/ship cancel", sender="alice", comment_id=comment_id)).encode()
                headers = webhook_headers("issue_comment", body, delivery=str(uuid.uuid4()))
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(f"{public}/webhooks/github", data=body, headers=headers) as posted,
                ):
                    assert posted.status == 202
                assert await worker.drain() > 0
                await page.wait_for_selector("#state:has-text('Cancelled')", timeout=10_000)
                assert await page.evaluate("window.__sameDocument === true")  # updated in place, not reloaded
                assert "Updated at" in await page.inner_text("#live-status")
                timeline = await page.inner_text(".timeline")
                assert "cancel" in timeline.lower() and "@alice" in timeline
                await page.screenshot(path=str(ARTIFACTS / "release-live-1280.png"), full_page=True)
                await _tab_through(page)
                await page.set_viewport_size(PHONE)
                assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
                await page.screenshot(path=str(ARTIFACTS / "release-live-390.png"), full_page=True)

                # The running release at phone width: its live step, deploy log and agent session.
                await page.goto(f"{public}/dashboard/releases/{WIDGETS}/10/1")
                await page.wait_for_selector("text=Rolling out 2 of 6 pods")
                await page.screenshot(path=str(ARTIFACTS / "release-running-390.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await server.close()
    assert problems == []
    assert fake_github.violations == []
