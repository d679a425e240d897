"""`/setup`: chat, calendar and dev agents on one page, each stored encrypted, each with the doctor's status.

Slack (a link that opens Slack's app creation with slack-manifest.yml filled in; its tokens), Telegram (the
BotFather token, checked with getMe, then the webhook or polling and the command menu), Google Calendar (a
service account key, as `python -m bot google-service-account` stores it) and A2A dev agents (a URL whose
Agent Card is fetched first). Once an App is configured the page is only for its owner and ADMIN_LOGINS.

Chat tokens stored here are read at start (`load_stored_chat`): the environment wins, platform by platform.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit

from aiohttp import web

from ..a2a.registry import Agent, AgentError, Registry, shown
from ..calendar.planner import SERVICE_ACCOUNT_SECRET
from ..config import Settings, _chat_problems, service_account_problem
from ..doctor import Report, check_calendar, check_chat
from ..secrets import SecretBox, SecretsKeyMissing, SecretStore, SecretUnreadable, Vault
from .auth import WebSession, security_headers
from .dashboard import signed_in
from .dashboard_render import render, wiring

log = logging.getLogger(__name__)

SETUP_PATH: Final = "/setup"
SLACK_MANIFEST: Final = Path(__file__).resolve().parents[2] / "slack-manifest.yml"
MANIFEST_PLACEHOLDER: Final = "https://bot.example.com"
STATUS_TIMEOUT: Final = 15.0  # seconds each section's check may take: a person is waiting for the page
# Vault name -> the Settings field it fills when the environment leaves that platform unset.
SLACK_SECRETS: Final = {
    "chat:slack-bot-token": "slack_bot_token",
    "chat:slack-signing-secret": "slack_signing_secret",
    "chat:slack-app-token": "slack_app_token",
}
TELEGRAM_TOKEN: Final = "chat:telegram-bot-token"  # noqa: S105 - the name it is stored under
TELEGRAM_SECRET: Final = "chat:telegram-webhook-secret"  # noqa: S105 - the name it is stored under
TELEGRAM_SECRETS: Final = {TELEGRAM_TOKEN: "telegram_bot_token", TELEGRAM_SECRET: "telegram_webhook_secret"}
_SCOPE = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9-]{0,38}(/[A-Za-z0-9._-]{1,100})?)$")
_MARKS: Final = {"[ ok ]": "ok", "[warn]": "warn", "[FAIL]": "fail"}


# Stored chat tokens, used at start ----------------------------------------------------------------


async def stored_chat(vault: Vault) -> dict[str, str]:
    """The chat settings kept in the vault, by Settings field name."""
    found = {}
    for name, setting in {**SLACK_SECRETS, **TELEGRAM_SECRETS}.items():
        value = await vault.get(name)
        if value:
            found[setting] = value
    return found


def with_stored_chat(settings: Settings, stored: Mapping[str, str]) -> Settings:
    """`settings` with each chat platform the environment leaves unset filled from the vault."""
    changes: dict[str, object] = {}
    platforms = set(settings.stored_chat)
    if settings.slack_bot_token is None and "slack_bot_token" in stored:
        changes.update({f: stored.get(f) for f in SLACK_SECRETS.values()})
        platforms.add("slack")
    if settings.telegram_bot_token is None and "telegram_bot_token" in stored:
        platforms.add("telegram")
        changes["telegram_bot_token"] = stored["telegram_bot_token"]
        secret = stored.get("telegram_webhook_secret") if _webhook_reachable(settings) else None
        changes["telegram_webhook_secret"] = secret
    return settings.replace(**changes, stored_chat=frozenset(platforms)) if changes else settings


def _webhook_reachable(settings: Settings) -> bool:
    """Telegram sends webhooks to https addresses only; without one the bot polls."""
    return (settings.public_url or "").lower().startswith("https://")


async def load_stored_chat(settings: Settings, store: SecretStore) -> Settings:
    """At start: the settings with the chat tokens stored on the setup page (the environment's win)."""
    if not settings.secrets_keys:
        return settings
    try:
        stored = await stored_chat(Vault(store, SecretBox(settings.secrets_keys)))
    except SecretUnreadable as exc:
        log.error("the chat tokens stored on the setup page cannot be read: %s", exc)
        return settings
    return with_stored_chat(settings, stored)


# Status lines, from the doctor's checks ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusLine:
    kind: str  # ok, warn, fail, more (a continuation of the line before)
    text: str


@dataclass
class Section:
    status: list[StatusLine] = field(default_factory=list)
    notice: str = ""
    error: str = ""


def _lines(report: Report) -> list[StatusLine]:
    out = []
    for line in report.lines:
        kind = _MARKS.get(line[:6], "more")
        out.append(StatusLine(kind, line[6:].strip() if kind != "more" else line.strip()))
    return out


async def _checked(what: str, check: Callable[[Report], Awaitable[None]]) -> list[StatusLine]:
    report = Report(out=io.StringIO())
    try:
        await asyncio.wait_for(check(report), STATUS_TIMEOUT)
    except TimeoutError:
        report.fail(f"{what}: the check did not finish within {STATUS_TIMEOUT:.0f} seconds")
    except Exception as exc:  # noqa: BLE001 - shown on the page, not raised
        report.fail(f"{what}: the check failed: {type(exc).__name__}: {exc}")
    return _lines(report)


async def _agents_status(registry: Registry, report: Report) -> None:
    agents = await registry.agents()
    if not agents:
        report.ok("a2a: no dev agent registered (releases run no playbooks)")
    for agent in agents:
        try:
            card = await registry.card(agent)
        except AgentError as exc:
            report.fail(f"a2a: {agent.scope}: {exc.message}")
            continue
        skills = ", ".join(s.id for s in card.skills) or "none"
        report.ok(f"a2a: {agent.scope}: {card.name} at {shown(agent.url)} (skills: {skills})")


@dataclass(frozen=True, slots=True)
class AgentRow:
    scope: str
    url: str
    name: str
    skills: tuple[str, ...]
    problem: str


async def _agent_rows(registry: Registry) -> list[AgentRow]:
    rows = []
    for agent in await registry.agents():
        try:
            card = await registry.card(agent)
        except AgentError as exc:
            rows.append(AgentRow(agent.scope, shown(agent.url), "", (), exc.message))
            continue
        skills = tuple(f"{s.id}: {s.description}" if s.description else s.id for s in card.skills)
        rows.append(AgentRow(agent.scope, shown(agent.url), card.name, skills, ""))
    return rows


# Who may use the page ------------------------------------------------------------------------------


def may_set_up(settings: Settings, login: str) -> bool:
    """The registered App's owner, or a login in ADMIN_LOGINS (GitHub logins compare without case)."""
    login = login.lower()
    if login in {a.lower() for a in settings.admin_logins}:
        return True
    credentials = settings.credentials
    registered = None if credentials.from_environment else credentials.registered
    return registered is not None and bool(registered.owner) and registered.owner.lower() == login


def _root(request: web.Request) -> str:
    """PUBLIC_URL's path ("" at the root), as the dashboard's links start with it."""
    return urlsplit(wiring(request).settings.public_url or "").path.rstrip("/")


def _message(request: web.Request, status: int, title: str, text: str) -> web.Response:
    return render(
        request, "message.html", status=status, title=title, text=text, root=_root(request), back_href="/dashboard",
        back_text="Back to the releases",
    )  # fmt: skip


async def _person(request: web.Request) -> WebSession | web.Response:
    """The signed-in person allowed to set things up, or the answer for anyone else."""
    settings = wiring(request).settings
    if not settings.credentials.configured:
        await settings.credentials.refresh()
    if not settings.credentials.configured:
        # The GitHub App comes first: its own setup page is the start page.
        return web.Response(status=303, headers={"Location": f"{_root(request)}/", **security_headers(settings)})
    session = await signed_in(request)
    if isinstance(session, web.Response):
        return session
    if not may_set_up(settings, session.login):
        registered = None if settings.credentials.from_environment else settings.credentials.registered
        owner = f"@{registered.owner}" if registered is not None and registered.owner else "the App's owner"
        return _message(
            request,
            403,
            "Only the App's owner sets the bot up",
            f"You are signed in as @{session.login}. Setup is for {owner} and the logins in ADMIN_LOGINS; "
            "ask one of them, or have the operator add you to ADMIN_LOGINS.",
        )
    return session


def _from_env(settings: Settings, platform: str) -> bool:
    """The environment sets this chat platform's token (it wins over the vault)."""
    token = settings.slack_bot_token if platform == "slack" else settings.telegram_bot_token
    return token is not None and platform not in settings.stored_chat


def _environment_only(settings: Settings) -> Settings:
    """`settings` without the chat tokens read from the vault at start (they may have changed since)."""
    changes: dict[str, object] = {}
    if "slack" in settings.stored_chat:
        changes.update(dict.fromkeys(SLACK_SECRETS.values()))
    if "telegram" in settings.stored_chat:
        changes.update(dict.fromkeys(TELEGRAM_SECRETS.values()))
    return settings.replace(**changes, stored_chat=frozenset()) if changes else settings


def _vault(request: web.Request) -> Vault:
    wired = wiring(request)
    return Vault(wired.store, SecretBox(wired.settings.secrets_keys))


def slack_link(settings: Settings, manifest: Path = SLACK_MANIFEST) -> str:
    """Slack's "create an app" page with our manifest filled in, pointed at PUBLIC_URL."""
    text = manifest.read_text()
    if settings.public_url:
        text = text.replace(MANIFEST_PLACEHOLDER, settings.public_url.rstrip("/"))
    return f"https://api.slack.com/apps?new_app=1&manifest_yaml={quote(text, safe='')}"


# The page -------------------------------------------------------------------------------------------


async def _page(
    request: web.Request, session: WebSession, sections: Mapping[str, Section] | None = None, *, status: int = 200
) -> web.Response:
    wired = wiring(request)
    settings, store = wired.settings, wired.store
    shown_sections = {name: Section() for name in ("slack", "telegram", "calendar", "agents")}
    shown_sections.update(sections or {})
    stored: dict[str, str] = {}
    problem = ""
    if not settings.secrets_keys:
        problem = "SECRETS_KEY is not set, so nothing can be stored here (make one with `python -m bot keygen`)."
    else:
        try:
            stored = await stored_chat(_vault(request))
        except SecretUnreadable as exc:
            problem = f"Stored chat tokens cannot be read: {exc}"
    effective = with_stored_chat(_environment_only(settings), stored)  # what the next start will use
    registry = Registry(store, wired.clock)
    slack_only = effective.replace(telegram_bot_token=None, telegram_webhook_secret=None)
    telegram_only = effective.replace(slack_bot_token=None, slack_signing_secret=None, slack_app_token=None)
    slack, telegram, calendar, agents = await asyncio.gather(
        _checked("slack", lambda r: check_chat(slack_only, r)),
        _checked("telegram", lambda r: check_chat(telegram_only, r)),
        _checked("calendar", lambda r: check_calendar(settings, r)),
        _checked("a2a", lambda r: _agents_status(registry, r)),
    )
    for name, lines, unset in (
        ("slack", slack, "slack: not set up (create the app with the link below, then paste its tokens)"),
        ("telegram", telegram, "telegram: not set up (paste the token @BotFather gave)"),
        ("calendar", calendar, ""),
        ("agents", agents, ""),
    ):
        shown_sections[name].status = lines or [StatusLine("warn", unset)]
    return render(
        request,
        "integrations.html",
        status=status,
        title="Setup",
        nav="setup",
        session=session,
        root=_root(request),
        problem=problem,
        sections=shown_sections,
        slack_link=slack_link(settings),
        slack_from_env=_from_env(settings, "slack"),
        telegram_from_env=_from_env(settings, "telegram"),
        calendar_from_env=settings.google_service_account is not None,
        public_url=settings.public_url,
        agents=await _agent_rows(registry),
    )


async def setup_page(request: web.Request) -> web.Response:
    session = await _person(request)
    if isinstance(session, web.Response):
        return session
    return await _page(request, session)


async def _form(request: web.Request) -> tuple[WebSession, Mapping[str, str]] | web.Response:
    """The person and their form, when they may set up and the form carries their CSRF token."""
    session = await _person(request)
    if isinstance(session, web.Response):
        return session
    form = await request.post()
    if not session.csrf_ok(form.get("csrf")):
        return _message(request, 403, "This form is out of date", "Nothing was stored. Reload the page and try again.")
    if not wiring(request).settings.secrets_keys:
        return _message(request, 503, "Nothing can be stored", str(SecretsKeyMissing()))
    return session, {k: v.strip() for k, v in form.items() if isinstance(v, str)}


async def _answer(request: web.Request, session: WebSession, name: str, section: Section) -> web.Response:
    return await _page(request, session, {name: section}, status=400 if section.error else 200)


async def save_slack(request: web.Request) -> web.Response:
    got = await _form(request)
    if isinstance(got, web.Response):
        return got
    session, form = got
    wired = wiring(request)
    settings, vault = wired.settings, _vault(request)
    section = Section()
    if _from_env(settings, "slack"):
        section.error = "SLACK_BOT_TOKEN is set in the environment and wins: nothing was stored. Unset it first."
        return await _answer(request, session, "slack", section)
    values = {
        "slack_bot_token": form.get("bot_token") or None,
        "slack_signing_secret": form.get("signing_secret") or None,
        "slack_app_token": form.get("app_token") or None,
    }
    candidate = settings.replace(**values, telegram_bot_token=None, telegram_webhook_secret=None)
    problems: list[str] = []
    _chat_problems(candidate, problems)
    if values["slack_bot_token"] is None:
        problems.insert(0, "Paste the bot token (xoxb-...) from the app's OAuth & Permissions page.")
    if problems:
        section.error = " ".join(problems) + " Nothing was stored."
        return await _answer(request, session, "slack", section)
    report = Report(out=io.StringIO())
    await check_chat(candidate, report)
    if report.failures:
        section.error = "; ".join(line.text for line in _lines(report) if line.kind == "fail") + ". Nothing was stored."
        return await _answer(request, session, "slack", section)
    now = wired.clock()
    for name, setting in SLACK_SECRETS.items():
        value = values[setting]
        if value is None:
            await wired.store.delete_secret(name)
        else:
            await vault.put(name, value, now=now)
    log.info("slack tokens stored on the setup page", extra={"login": session.login})
    section.notice = "Stored encrypted. The bot uses them from its next start (restart it now)."
    return await _answer(request, session, "slack", section)


async def save_telegram(request: web.Request) -> web.Response:
    from telegram import Bot
    from telegram.error import TelegramError

    from chatops.telegram import TelegramChat

    got = await _form(request)
    if isinstance(got, web.Response):
        return got
    session, form = got
    wired = wiring(request)
    settings, vault = wired.settings, _vault(request)
    section = Section()
    stored = await stored_chat(vault)
    if _from_env(settings, "telegram"):
        section.error = "TELEGRAM_BOT_TOKEN is set in the environment and wins: nothing was stored. Unset it first."
        return await _answer(request, session, "telegram", section)
    token = form.get("token", "")
    if not token:
        section.error = "Paste the token @BotFather gave (it looks like 123456:ABC-DEF...). Nothing was stored."
        return await _answer(request, session, "telegram", section)
    api = settings.telegram_api_url.rstrip("/")
    try:
        bot = Bot(token, base_url=f"{api}/bot", base_file_url=f"{api}/file/bot")
        async with bot:  # getMe
            username = bot.bot.username
    except TelegramError as exc:
        section.error = f"Telegram refused the token: {exc.message}. Nothing was stored."
        return await _answer(request, session, "telegram", section)
    now = wired.clock()
    await vault.put(TELEGRAM_TOKEN, token, now=now)
    secret: str | None = None
    if _webhook_reachable(settings):
        secret = settings.telegram_webhook_secret or stored.get("telegram_webhook_secret") or secrets.token_urlsafe(32)
        await vault.put(TELEGRAM_SECRET, secret, now=now)
    else:
        await wired.store.delete_secret(TELEGRAM_SECRET)
    log.info("telegram token stored on the setup page", extra={"login": session.login})
    chat = TelegramChat(
        settings.replace(telegram_bot_token=token, telegram_webhook_secret=secret), wired.store, wired.clock
    )
    try:
        done = await chat.setup()
    except TelegramError as exc:
        section.error = f"@{username}'s token is stored (encrypted), but Telegram refused the setup: {exc.message}"
        return await _answer(request, session, "telegram", section)
    finally:
        await chat.close()
    section.notice = (
        f"@{username}: token stored encrypted; {'; '.join(done)}. The bot answers there from its next start "
        "(restart it now)."
    )
    return await _answer(request, session, "telegram", section)


async def save_calendar(request: web.Request) -> web.Response:
    got = await _form(request)
    if isinstance(got, web.Response):
        return got
    session, form = got
    wired = wiring(request)
    section = Section()
    text = form.get("service_account", "")
    problem = service_account_problem(text, "The pasted key") if text else "Paste the JSON key file's content."
    if problem is not None:
        section.error = f"{problem}. Nothing was stored."
        return await _answer(request, session, "calendar", section)
    await _vault(request).put(SERVICE_ACCOUNT_SECRET, text, now=wired.clock())
    log.info("google service account stored on the setup page", extra={"login": session.login})
    section.notice = "Stored encrypted; share each release calendar with the service account's address."
    if wired.settings.google_service_account is not None:
        section.notice += " Note: GOOGLE_SERVICE_ACCOUNT_* is set in the environment and wins over the stored key."
    return await _answer(request, session, "calendar", section)


async def save_agent(request: web.Request) -> web.Response:
    got = await _form(request)
    if isinstance(got, web.Response):
        return got
    session, form = got
    wired = wiring(request)
    section = Section()
    url, scope = form.get("url", ""), form.get("scope") or "*"
    if not url.startswith(("https://", "http://")):
        section.error = (
            "The agent's URL must start with https:// (or http:// on a private network). Nothing was stored."
        )
        return await _answer(request, session, "agents", section)
    if not _SCOPE.match(scope):
        section.error = "The scope is owner/repo, an owner, or * for every repository. Nothing was stored."
        return await _answer(request, session, "agents", section)
    registry = Registry(wired.store, wired.clock)
    try:
        card = await registry.card(Agent(scope=scope, url=url.rstrip("/")), fresh=True)
    except AgentError as exc:
        section.error = f"Its Agent Card could not be fetched: {exc.message}. Nothing was stored."
        return await _answer(request, session, "agents", section)
    agent = await registry.add(scope, url)
    log.info("dev agent registered on the setup page", extra={"login": session.login, "scope": scope})
    skills = ", ".join(s.id for s in card.skills) or "none"
    section.notice = f"Registered {card.name} for {agent.scope} (skills: {skills})."
    return await _answer(request, session, "agents", section)


def add_routes(app: web.Application) -> None:
    """`/setup` and its four forms; once per app."""
    app.router.add_get(SETUP_PATH, setup_page)
    app.router.add_post(SETUP_PATH + "/slack", save_slack)
    app.router.add_post(SETUP_PATH + "/telegram", save_telegram)
    app.router.add_post(SETUP_PATH + "/calendar", save_calendar)
    app.router.add_post(SETUP_PATH + "/agents", save_agent)
