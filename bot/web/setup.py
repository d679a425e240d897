"""One-click GitHub App registration (GitHub's App manifest flow): the setup page, and GitHub's way back.

While no App is configured the start page is this setup page. Its button posts a manifest built from
app.yml (name, description, permissions, events) with this bot's webhook, redirect, OAuth callback and
setup URLs to GITHUB_URL's page for registering an App (or an organization's), with a single-use `state`.
GitHub creates the App and sends the browser back to CALLBACK_PATH with a `code`; the bot exchanges it
(`POST /app-manifests/{code}/conversions`) for the App's id, private key, webhook secret and OAuth client,
keeps them encrypted in the store, acts as the App at once (bot/credentials.py: no restart, no .env) and
sends the browser on to the App's install page. With an App in the environment the flow is refused.

The state is bound to the browser that asked for it. The page gives the browser a random value in a
cookie (SETUP_COOKIE: HttpOnly, SameSite=Lax, sent only to /setup/github) and the store keeps, under that
value's SHA-256, the state's SHA-256 and an expiry an hour away (GitHub's limit for the whole flow). The
callback takes a state only from the browser holding the cookie, and only once; a later page view in the
same browser replaces it. The store never holds a live state or cookie value, and the code, the key and
the secrets are never logged or shown.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import gidgethub
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from chatops.identity import CALLBACK_PATH as CHAT_LINK_CALLBACK_PATH

from ..calendar.oauth import GITHUB_CALLBACK_PATH as CALENDAR_LINK_CALLBACK_PATH
from ..config import Settings
from ..credentials import STORED_APP, RegisteredApp
from ..github import GitHubApp
from ..store import Store
from ..webhook_proxy import DEFAULT_CHANNEL_SERVICE, ChannelError, create_channel
from .auth import CALLBACK_PATH as SIGN_IN_CALLBACK_PATH

log = logging.getLogger(__name__)

CALLBACK_PATH = "/setup/github/callback"  # the manifest's redirect_url
INSTALLED_PATH = "/setup/github/installed"  # the manifest's setup_url: where GitHub sends people after installing
COOKIE_PATH = "/setup/github"
SETUP_COOKIE = "rs_app_setup"
STATE_TTL = timedelta(hours=1)
MAX_PENDING = 100  # registrations begun and not finished, kept at most (each page view may begin one)
WEBHOOK_PATH = "/webhooks/github"
# Where GitHub's user authorization may send people back: chat linking, calendar linking, dashboard sign-in.
OAUTH_CALLBACK_PATHS = (CHAT_LINK_CALLBACK_PATH, CALENDAR_LINK_CALLBACK_PATH, SIGN_IN_CALLBACK_PATH)
APP_YML = Path(__file__).resolve().parents[2] / "app.yml"
CHANNEL_PATH = "/setup/webhook-channel"
_REGISTER_LEASE = "setup:register"  # held from the last check until the new App is stored
_STATE_KEY = "app-setup:"  # + sha256(the browser's cookie value) -> {"state": sha256(state), "expires"}
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")  # a state or cookie value as secrets.token_urlsafe makes them
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
# GitHub logins: alphanumerics and single hyphens, not at either end, at most 39 characters.
_LOGIN = re.compile(r"^[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}$")
_START_AGAIN = 'Start again from <a href="{root}/">the start page</a>.'


class SetupRefused(Exception):
    """The flow stopped; answered as a page. `text` is HTML, already escaped."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(title)
        self.status, self.title, self.text = status, title, text


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def load_seed(path: Path = APP_YML) -> dict[str, Any]:
    """app.yml (Probot's manifest format): the App's name, description, permissions and events."""
    seed = yaml.safe_load(path.read_text())
    if not isinstance(seed, dict) or not seed.get("name"):
        raise ValueError(f"{path} is not an App manifest: it has no name")
    return seed


def build_manifest(seed: Mapping[str, Any], base_url: str, hook_url: str | None = None) -> dict[str, Any]:
    """The manifest GitHub registers: app.yml's name, description, permissions and events, with this bot's
    URLs (`base_url`: PUBLIC_URL, or the address the page was reached at) instead of app.yml's placeholders."""
    base = base_url.rstrip("/")
    return {
        "name": str(seed["name"]),
        "url": str(seed.get("url") or base),
        "description": str(seed.get("description") or ""),
        "public": bool(seed.get("public", False)),
        # On a laptop GitHub posts to the webhook proxy's channel, which the bot reads (WEBHOOK_PROXY_URL).
        "hook_attributes": {"url": hook_url or base + WEBHOOK_PATH, "active": True},
        "redirect_url": base + CALLBACK_PATH,
        "callback_urls": [base + path for path in OAUTH_CALLBACK_PATHS],
        "setup_url": base + INSTALLED_PATH,
        "setup_on_update": True,
        "default_events": list(seed.get("default_events") or []),
        "default_permissions": dict(seed.get("default_permissions") or {}),
    }


def new_app_url(github_url: str, org: str | None, state: str) -> str:
    """GitHub's page that registers an App from a posted manifest, for a person's account or an organization."""
    where = f"/organizations/{quote(org, safe='')}/settings/apps/new" if org else "/settings/apps/new"
    return f"{github_url.rstrip('/')}{where}?{urlencode({'state': state})}"


class AppRegistration:
    """The manifest flow's two ends: a state for the page's form, and the code GitHub sends back."""

    def __init__(self, settings: Settings, store: Store, github: GitHubApp, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.store = store
        self.github = github
        self.clock = clock
        # Printed in this process's log at start: whoever registers the App must have read it, so a stranger
        # who can reach the page (a LAN, a fresh deploy) cannot make the bot run as an App of theirs.
        self.token = secrets.token_urlsafe(18)

    def admits(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    @property
    def refused(self) -> str | None:
        """Why this bot cannot register an App now (HTML), or None."""
        credentials = self.settings.credentials
        if credentials.from_environment:
            return (
                f"The GitHub App is set in the environment (<code>GITHUB_APP_ID</code> "
                f"{credentials.app_id}), which wins over a registered one."
            )
        if credentials.configured:
            return f"GitHub App {credentials.app_id} is already registered."
        if credentials.problem:
            return (
                "A registered GitHub App is stored but cannot be read (was <code>SECRETS_KEY</code> changed?): "
                "it is not replaced. Restore the key, or remove the stored App with an operator's care."
            )
        if not self.settings.secrets_keys:
            return (
                "The App's private key and secrets are stored encrypted, so registering needs "
                "<code>SECRETS_KEY</code>: make one with <code>python -m bot keygen</code>, set it and restart."
            )
        return None

    async def begin(self, browser: str | None) -> tuple[str, str]:
        """A new state for this browser's form, and the cookie value that binds it (the browser's own, or
        a new one). The browser's earlier state, if any, is replaced."""
        now = self.clock()
        if browser is None or not _TOKEN.match(browser):
            browser = secrets.token_urlsafe(32)
        key = _STATE_KEY + _digest(browser)
        if await self.store.get_value(key) is None:
            await self._make_room(now)
        state = secrets.token_urlsafe(32)
        record = {"state": _digest(state), "expires": (now + STATE_TTL).isoformat()}
        await self.store.set_value(key, json.dumps(record), now=now)
        return state, browser

    async def _make_room(self, now: datetime) -> None:
        """Page views from browsers without the cookie each begin a registration: drop the expired ones,
        and past MAX_PENDING the oldest, so nobody can fill the store from the start page."""
        pending: list[tuple[str, str]] = []
        for key, raw in await self.store.list_values(_STATE_KEY, limit=2 * MAX_PENDING):
            expires = _expiry(raw)
            if expires is None or expires <= now:
                await self.store.delete_value(key)
            else:
                pending.append((expires.isoformat(), key))
        for _, key in sorted(pending)[: max(0, len(pending) - MAX_PENDING + 1)]:
            await self.store.delete_value(key)

    async def finish(self, state: str, code: str, browser: str | None) -> RegisteredApp:
        """GitHub came back: check the state against this browser's, spend it, exchange the code and keep
        the new App (encrypted). Raises SetupRefused with the page to show."""
        again = _START_AGAIN.format(root=html.escape(_root(self.settings.public_url)))
        credentials = self.settings.credentials
        if credentials.from_environment:
            raise SetupRefused(409, "The GitHub App is set in the environment", f"{self.refused} Nothing was changed.")
        if browser is None or not _TOKEN.match(browser):
            raise SetupRefused(
                403,
                "This browser did not start the registration",
                "The page that sent you to GitHub gave your browser a cookie, and it did not come back: finish "
                f"in the browser you started in, and let it keep cookies from this site. {again}",
            )
        if not code or not _CODE.match(code):
            raise SetupRefused(400, "GitHub sent no code back", f"Nothing was registered. {again}")
        key = _STATE_KEY + _digest(browser)
        raw = await self.store.get_value(key)
        expires = _expiry(raw) if raw is not None else None
        if raw is None or expires is None:
            raise SetupRefused(
                400, "This registration is already finished", f"Each registration link works once. {again}"
            )
        if expires <= self.clock():
            await self.store.delete_value(key)
            raise SetupRefused(400, "This registration has expired", f"GitHub's flow must end within an hour. {again}")
        if not hmac.compare_digest(str(json.loads(raw).get("state", "")), _digest(state)):
            raise SetupRefused(
                403,
                "This registration was not started in this browser",
                f"The link GitHub sent you back with does not belong to the page this browser opened. {again}",
            )
        if not await self.store.delete_value(key):  # another request spent it a moment ago
            raise SetupRefused(
                400, "This registration is already finished", f"Each registration link works once. {again}"
            )
        # One registration at a time, across processes: two callbacks at once must not both register.
        owner = secrets.token_hex(8)
        if not await self.store.acquire_lease(_REGISTER_LEASE, owner, now=self.clock(), seconds=120):
            raise SetupRefused(409, "Another registration is finishing", f"Reload the start page in a minute. {again}")
        try:
            await credentials.load()  # registered meanwhile, through another process?
            if self.refused is None and await self.store.get_secret(STORED_APP) is not None:
                raise SetupRefused(409, "No App was registered", "An App is already stored. Nothing was changed.")
            if self.refused is not None:
                raise SetupRefused(409, "No App was registered", f"{self.refused} Nothing was changed.")
            app = _registered(await self._convert(code), again)
            await credentials.register(app, now=self.clock())
        finally:
            await self.store.release_lease(_REGISTER_LEASE, owner)
        log.info(
            "GitHub App registered through the setup page",
            extra={"app_id": app.app_id, "slug": app.slug, "owner": app.owner},
        )
        return app

    async def _convert(self, code: str) -> Any:
        """GitHub's side of the handshake: the code (valid for an hour, once) for the App's credentials."""
        gh = self.github.anonymous_client()
        lost = (
            "If GitHub created the App anyway, it is listed under Developer settings &rarr; GitHub Apps: delete "
            "it and register again, or set its credentials in the environment."
        )
        try:
            return await gh.post("/app-manifests/{code}/conversions", {"code": code}, data=b"")
        except gidgethub.BadRequest as exc:
            if exc.status_code in (404, 422):
                raise SetupRefused(
                    400,
                    "GitHub did not take the code",
                    "GitHub answered that the code is unknown: it works once, within an hour. Nothing was "
                    f"registered here. {lost}",
                ) from None
            raise SetupRefused(
                502, "GitHub refused the code", f"GitHub answered HTTP {exc.status_code}. {lost}"
            ) from None
        except (gidgethub.GitHubException, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("manifest conversion failed: %s", type(exc).__name__)
            raise SetupRefused(
                502, "GitHub could not be reached", f"{html.escape(type(exc).__name__)}. {lost}"
            ) from None


def _expiry(raw: str) -> datetime | None:
    try:
        return datetime.fromisoformat(json.loads(raw)["expires"])
    except (ValueError, KeyError, TypeError):
        return None


def _registered(answer: Any, again: str) -> RegisteredApp:
    """GitHub's answer as a RegisteredApp, checked: what is kept must be usable."""
    try:
        owner = answer.get("owner") or {}
        app = RegisteredApp(
            app_id=int(answer["id"]),
            slug=str(answer["slug"]),
            owner=str(owner.get("login") or ""),
            html_url=str(answer["html_url"]).rstrip("/"),
            private_key=str(answer["pem"]),
            webhook_secret=answer.get("webhook_secret") or None,
            client_id=answer.get("client_id") or None,
            client_secret=answer.get("client_secret") or None,
        )
        key = load_pem_private_key(app.private_key.encode(), password=None)
        usable = isinstance(key, rsa.RSAPrivateKey) and urlsplit(app.html_url).scheme in ("http", "https")
    except (AttributeError, KeyError, TypeError, ValueError):
        usable = False
    if not usable:
        log.error("GitHub's manifest conversion answer lacks what the bot needs")
        raise SetupRefused(
            502,
            "GitHub's answer was incomplete",
            "GitHub created the App but its answer lacked the App's id, key or address. Delete the App under "
            f"Developer settings &rarr; GitHub Apps and register again. {again}",
        )
    return app


def _root(public_url: str | None) -> str:
    """The path the bot is served under (PUBLIC_URL may carry a prefix, behind a proxy at /bot)."""
    return urlsplit(public_url or "").path.rstrip("/")


APP_REGISTRATION = web.AppKey("app_registration", AppRegistration)


def add_routes(app: web.Application) -> None:
    """GitHub's way back (the manifest's redirect_url) and the page it shows after an install (setup_url)."""
    app.router.add_get(CALLBACK_PATH, callback)
    app.router.add_get(INSTALLED_PATH, installed)
    app.router.add_post(CHANNEL_PATH, new_channel)


CHANNEL_SERVICE = web.AppKey("webhook_channel_service", str)  # smee.io, or a test's local one


async def new_channel(request: web.Request) -> web.Response:
    """The setup page's "create a webhook proxy channel": a new smee.io channel, and what to do with it."""
    registration = request.app.get(APP_REGISTRATION)
    form = await request.post()
    token = form.get("setup")
    if (
        registration is None
        or registration.refused is not None
        or not registration.admits(token if isinstance(token, str) else None)
    ):
        return page(403, "Not from the setup page", "Open the link the bot printed in its log, and use its button.")
    try:
        channel = await create_channel(request.app.get(CHANNEL_SERVICE, DEFAULT_CHANNEL_SERVICE))
    except ChannelError as exc:
        return page(502, "No channel was made", f"The webhook proxy service failed: {html.escape(str(exc))}.")
    return page(
        200,
        "A webhook proxy channel",
        f"Your channel is <code>{html.escape(channel)}</code>. Set "
        f"<code>WEBHOOK_PROXY_URL={html.escape(channel)}</code> "
        "(in <code>.env</code>), restart the bot, then register the App: GitHub will post to the channel and the "
        "bot reads it. Keep the URL to yourself: whoever has it can read the webhooks.",
    )


async def setup_page(request: web.Request, settings: Settings) -> web.Response:
    """The start page while no App is configured: register one here, or set it up by hand."""
    base = settings.public_url or str(request.url.origin())
    registration = request.app.get(APP_REGISTRATION)
    org = request.query.get("org", "").strip()
    org_problem = None
    if org and (len(org) > 39 or not _LOGIN.match(org)):
        org_problem = f"{org!r} is not an organization name on GitHub (letters, digits and single hyphens)."
    try:
        manifest: dict[str, Any] | None = build_manifest(load_seed(), base, settings.webhook_proxy_url)
        seed_problem = None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        manifest, seed_problem = None, f"The App's manifest (app.yml) cannot be read: {exc}"
        log.error("%s", seed_problem)
    refused = registration.refused if registration is not None else "The bot is still starting."
    token = request.query.get("setup")
    if refused is None and registration is not None and not registration.admits(token):
        refused = (
            "Registering an App here needs the link the bot printed in its log when it started "
            "(<code>/?setup=…</code>): so nobody else who can reach this page registers an App of theirs as "
            "this bot. Look for “open … to register” in the bot's output."
        )
    form = None
    browser = None
    if manifest is not None and refused is None and org_problem is None and registration is not None:
        state, browser = await registration.begin(request.cookies.get(SETUP_COOKIE))
        form = new_app_url(settings.github_url, org or None, state)
    body = render_setup_page(
        settings,
        base,
        manifest=manifest,
        action=form,
        org=org,
        problems=[p for p in (seed_problem, org_problem) if p],
        refused=refused,
        token=token if registration is not None and registration.admits(token) else None,
    )
    response = web.Response(text=body, content_type="text/html", headers=_headers(settings))
    if browser is not None:
        response.set_cookie(
            SETUP_COOKIE,
            browser,
            path=_root(settings.public_url) + COOKIE_PATH,
            max_age=int(STATE_TTL.total_seconds()),
            httponly=True,
            samesite="Lax",
            secure=base.lower().startswith("https://"),
        )
    return response


async def callback(request: web.Request) -> web.StreamResponse:
    """GitHub created the App: exchange the code, keep the credentials, go on to the App's install page."""
    registration = request.app.get(APP_REGISTRATION)
    if registration is None:
        return page(503, "Not ready", "The bot is still starting: reload this page in a moment.")
    query = request.query
    try:
        app = await registration.finish(
            query.get("state", ""), query.get("code", ""), request.cookies.get(SETUP_COOKIE)
        )
    except SetupRefused as exc:
        return page(exc.status, exc.title, exc.text)
    response = web.Response(
        status=303, headers={"Location": f"{app.html_url}/installations/new", "Referrer-Policy": "no-referrer"}
    )
    settings = registration.settings
    response.del_cookie(
        SETUP_COOKIE,
        path=_root(settings.public_url) + COOKIE_PATH,
        httponly=True,
        samesite="Lax",
        secure=(settings.public_url or str(request.url.origin())).lower().startswith("https://"),
    )
    return response


async def installed(request: web.Request) -> web.Response:
    """Where GitHub sends people after they install the App (or change its repositories)."""
    registration = request.app.get(APP_REGISTRATION)
    credentials = registration.settings.credentials if registration is not None else None
    registered = credentials.registered if credentials is not None and not credentials.from_environment else None
    more = ""
    if registered is not None:
        link = html.escape(f"{registered.html_url}/installations/new")
        more = f' To add repositories later, open <a href="{link}">the App\'s install page</a>.'
    return page(
        200,
        "Release Secretary is installed",
        "GitHub now sends the bot what happens in the repositories you chose. Label a pull request "
        "<code>Ready for Prod</code> or comment <code>/ship friday</code> on it to book a release." + more,
    )


def _headers(settings: Settings) -> dict[str, str]:
    """The start page carries a live state: never cached, never framed, its forms go here or to GitHub."""
    github = urlsplit(settings.github_url)
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'unsafe-inline'; "
            f"form-action 'self' {github.scheme}://{github.netloc}; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
    }


STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 3rem auto; padding: 0 1rem;
  color: #1f2328; }
h1 { font-size: 1.6rem; } code { background: #f6f8fa; padding: .1em .3em; border-radius: 4px; overflow-wrap: anywhere; }
section { border: 1px solid #d0d7de; border-radius: 8px; padding: .5rem 1.25rem; margin: 1.5rem 0; }
section.warn { border-left: 6px solid #bf8700; } section.ok { border-left: 6px solid #1a7f37; }
footer { color: #59636e; font-size: .9rem; }
label { font-weight: 600; } .hint { color: #59636e; font-size: .9rem; margin-top: .25rem; }
input[type=text] { font: inherit; padding: .3rem .5rem; border: 1px solid #8c959f; border-radius: 6px; }
button { font: inherit; padding: .35rem .9rem; border: 1px solid #8c959f; border-radius: 6px; background: #f6f8fa;
  cursor: pointer; }
button.primary { background: #1f883d; border-color: #1a7f37; color: #fff; font-weight: 600; }
:focus-visible { outline: 3px solid #0969da; outline-offset: 2px; }
.problem { color: #d1242f; font-weight: 600; } .note { background: #fff8c5; padding: .5rem .75rem; border-radius: 6px; }
details { margin: 1rem 0; } dt { font-weight: 600; } dd { margin: 0 0 .5rem 1rem; }
"""


def page_html(title: str, body: str, *, footer: str = "") -> str:
    """The start page's look: `title` plain text, `body` and `footer` HTML already escaped."""
    heading = "Release Secretary" if title == "Release Secretary" else f"{title} - Release Secretary"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(heading)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body>
<main>
<h1>{html.escape(title)}</h1>
{body}
</main>
{f"<footer>{footer}</footer>" if footer else ""}
</body></html>"""


def page(status: int, title: str, text: str) -> web.Response:
    """A page of the flow: `title` plain text, `text` HTML already escaped. Never cached or sent as a referrer
    (the callback's address carries a code)."""
    body = page_html(title, f"<p>{text}</p>")
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
    return web.Response(status=status, text=body, content_type="text/html", headers=headers)


def render_setup_page(
    settings: Settings,
    base_url: str,
    *,
    manifest: Mapping[str, Any] | None,
    action: str | None,
    org: str,
    problems: list[str],
    refused: str | None,
    token: str | None = None,
) -> str:
    """The start page with no App: register one with GitHub (when `action` is set) or by hand."""
    esc = html.escape
    root = _root(settings.public_url)
    keep = f'<input type="hidden" name="setup" value="{esc(token)}">' if token else ""
    webhook_url = f"{base_url.rstrip('/')}{WEBHOOK_PATH}"
    notes = [f'<p class="problem" role="alert">{esc(p)}</p>' for p in problems]
    if refused is not None:
        notes.append(f'<p class="note">{refused}</p>')
    if settings.credentials.problem:
        notes.append(f'<p class="problem" role="alert">{esc(settings.credentials.problem)}.</p>')
    if settings.public_url is None and settings.webhook_proxy_url is None:
        offer = ""
        if token:  # the one-time link keeps strangers (and other sites' forms) from using this button
            offer = (
                f'<form method="post" action="{esc(root)}{CHANNEL_PATH}"><input type="hidden" name="setup" '
                f'value="{esc(token)}"><button type="submit">Create a webhook proxy channel</button></form>'
            )
        notes.append(
            '<p class="note">PUBLIC_URL is not set, so the bot takes its address from this page: GitHub will send '
            f"webhooks to <code>{esc(webhook_url)}</code>, and GitHub must be able to reach it. Set "
            "<code>PUBLIC_URL</code> to the bot's public address, or, on a laptop, relay webhooks through a "
            "webhook proxy URL (<code>WEBHOOK_PROXY_URL</code>), and restart before registering. The webhook URL "
            f"can also be changed later on the App's settings page.</p>{offer}"
        )
    if settings.github_webhook_secret is not None and not settings.credentials.from_environment:
        notes.append(
            '<p class="note"><code>GITHUB_WEBHOOK_SECRET</code> is set in the environment, and the environment '
            "wins: webhooks signed with the secret GitHub makes for the new App would be refused. Unset it before "
            "registering, or put its value in the App's webhook settings afterwards.</p>"
        )
    register = ""
    if action is not None and manifest is not None:
        owner = f"the organization <strong>{esc(org)}</strong>" if org else "your personal account"
        button = f"Register the GitHub App for {esc(org)}" if org else "Register the GitHub App"
        register = f"""
  <form method="get" action="{esc(root)}/">
    <p><label for="org">Organization that will own the App</label><br>
    <input type="text" id="org" name="org" value="{esc(org)}" maxlength="39" autocomplete="off" spellcheck="false"
      aria-describedby="org-help">{keep}
    <button type="submit">Use this owner</button></p>
    <p class="hint" id="org-help">Leave it empty for your personal account. For an organization you must be one
    of its owners or App managers.</p>
  </form>
  <p>The App will belong to {owner}.</p>
  <form method="post" action="{esc(action)}">
    <input type="hidden" name="manifest" value="{esc(json.dumps(manifest))}">
    <button type="submit" class="primary">{button}</button>
  </form>
  {_manifest_summary(manifest)}"""
    elif problems and refused is None:
        register = f"""
  <form method="get" action="{esc(root)}/">
    <p><label for="org">Organization that will own the App</label><br>
    <input type="text" id="org" name="org" value="{esc(org)}" maxlength="39" autocomplete="off"
      spellcheck="false">{keep}
    <button type="submit">Use this owner</button></p>
  </form>"""
    missing = "".join(f"<li><code>{esc(m)}</code></li>" for m in settings.missing_for_github())
    body = f"""
<p>Label a pull request <code>Ready for Prod</code> or comment <code>/ship friday</code>: the bot
verifies the PR, books a release window and keeps the thread up to date.</p>
<section class="warn" aria-labelledby="setup">
  <h2 id="setup">Not connected to GitHub yet</h2>
  <p>Register the bot as a GitHub App in one step: GitHub creates the App with the permissions and events in
  <code>app.yml</code> and hands its credentials back to the bot, which keeps them encrypted and uses them at
  once. No restart, no <code>.env</code> to edit.</p>
  {"".join(notes)}{register}
</section>
<section aria-labelledby="by-hand">
  <h2 id="by-hand">Or set it up by hand</h2>
  <p>Set these environment variables (or put them in a <code>.env</code> file next to the Makefile) and
  restart:</p>
  <ul>{missing}</ul>
  <ol>
    <li>Create a GitHub App (Settings &rarr; Developer settings &rarr; GitHub Apps &rarr; New). Use
    <code>app.yml</code> in this repository for its permissions and events.</li>
    <li>Webhook URL: <code>{esc(webhook_url)}</code>; content type <code>application/json</code>;
    a long random webhook secret (the same value goes in <code>GITHUB_WEBHOOK_SECRET</code>).</li>
    <li>Generate a private key; point <code>GITHUB_PRIVATE_KEY_PATH</code> at the downloaded
    <code>.pem</code>, and set <code>GITHUB_APP_ID</code> to the App ID shown on the App's page.</li>
    <li>Check everything with <code>python -m bot doctor</code>.</li>
  </ol>
</section>"""
    footer = f'Store: {esc(settings.store_kind)} &middot; health: <a href="{esc(root)}/healthz">/healthz</a>'
    return page_html("Release Secretary", body, footer=footer)


def _manifest_summary(manifest: Mapping[str, Any]) -> str:
    esc = html.escape
    hook = manifest.get("hook_attributes") or {}
    events = ", ".join(esc(str(e)) for e in manifest.get("default_events") or []) or "none"
    permissions = ", ".join(
        f"{esc(str(name))}: {esc(str(level))}"
        for name, level in sorted((manifest.get("default_permissions") or {}).items())
    )
    callbacks = "".join(f"<li><code>{esc(str(u))}</code></li>" for u in manifest.get("callback_urls") or [])
    return f"""<details>
    <summary>What GitHub will be asked for</summary>
    <dl>
      <dt>Webhook URL</dt><dd><code>{esc(str(hook.get("url", "")))}</code></dd>
      <dt>Events</dt><dd>{events}</dd>
      <dt>Permissions</dt><dd>{permissions or "none"}</dd>
      <dt>Back to the bot after registering</dt><dd><code>{esc(str(manifest.get("redirect_url", "")))}</code></dd>
      <dt>Sign-in callback URLs</dt><dd><ul>{callbacks}</ul></dd>
      <dt>After installing</dt><dd><code>{esc(str(manifest.get("setup_url", "")))}</code></dd>
    </dl>
  </details>"""
