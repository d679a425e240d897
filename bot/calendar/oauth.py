"""Linking a person's Google calendar to their GitHub login: the OAuth 2.0 web flow with PKCE (S256).

`/ship calendar link` asks `GoogleLinks.start(login)` for a one-time URL on the bot. Opening it sends
the person to Google's consent screen; Google sends them back to the callback with a code, which the
bot exchanges (with the PKCE verifier) for a refresh token, kept encrypted under `google:user:<login>`.

The state is random, bound to the login, valid for 10 minutes and used once. It is stored under its
SHA-256 (so the store never holds a live state, and lookups compare no secret byte by byte) with the
PKCE verifier encrypted by the secret box. No token or verifier is ever logged or shown.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from google.auth.credentials import Credentials

from ..config import Settings
from ..context import utcnow
from ..secrets import Vault
from ..store import Store
from . import SCOPES
from .google import USER_ACCOUNT_PREFIX, GoogleCalendar, user_credentials

log = logging.getLogger(__name__)

START_PATH = "/oauth/google/start"
CALLBACK_PATH = "/oauth/google/callback"
STATE_TTL = timedelta(minutes=10)
TOKEN_TIMEOUT = 30.0  # seconds for the code exchange
_STATE_KEY = "google-oauth-state:"  # + sha256(state), in the store's key-value table
_STATE_LEASE = "google-oauth-state-used:"  # + sha256(state): the atomic claim that makes it single-use
_UNLINKED = json.dumps({"unlinked": True})  # the store cannot delete secrets; this marks one as gone
_RELINK = "Run <code>/ship calendar link</code> again for a fresh link."
_SCOPE_NAMES = {
    "https://www.googleapis.com/auth/calendar.events": "view and edit events on your calendars",
    "https://www.googleapis.com/auth/calendar.freebusy": "see when you are free or busy",
}


class LinkNotConfigured(RuntimeError):
    """Linking needs GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, PUBLIC_URL and SECRETS_KEY."""


class LinkFailed(Exception):
    """The flow stopped; answered as an HTML page saying what happened and what to do."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(title)
        self.status, self.title, self.text = status, title, text  # text is HTML: escape what goes in


@dataclass(frozen=True)
class _State:
    login: str
    expires: datetime
    verifier: str


class GoogleLinks:
    """People's Google calendar links: the web flow that makes them and the credentials they give."""

    def __init__(self, settings: Settings, store: Store, vault: Vault, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.store = store
        self.vault = vault
        self.clock = clock

    def missing(self) -> list[str]:
        """The settings an operator still has to set before people can link calendars."""
        settings = self.settings
        wanted = {
            "GOOGLE_CLIENT_ID": settings.google_client_id,
            "GOOGLE_CLIENT_SECRET": settings.google_client_secret,
            "PUBLIC_URL": settings.public_url,
        }
        missing = [name for name, value in wanted.items() if not value]
        if not self.vault.box.configured:
            missing.append("SECRETS_KEY")
        return missing

    @property
    def configured(self) -> bool:
        return not self.missing()

    @property
    def redirect_uri(self) -> str:
        return f"{(self.settings.public_url or '').rstrip('/')}{CALLBACK_PATH}"

    async def start(self, login: str) -> str:
        """A one-time URL on the bot that starts linking `login`'s Google calendar (10 minutes)."""
        if missing := self.missing():
            raise LinkNotConfigured(f"linking Google calendars needs {', '.join(missing)}")
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-]: RFC 7636 asks 43 to 128
        now = self.clock()
        record = {
            "login": login,
            "expires": (now + STATE_TTL).isoformat(),
            "verifier": self.vault.box.encrypt(verifier).decode("ascii"),
        }
        await self.store.set_value(_STATE_KEY + _digest(state), json.dumps(record), now=now)
        return f"{(self.settings.public_url or '').rstrip('/')}{START_PATH}?{urlencode({'state': state})}"

    async def authorization_url(self, state: str) -> str:
        """Google's consent screen for a valid state; the state stays usable for the callback."""
        found = await self._state(state)
        params = {
            "response_type": "code",
            "client_id": self.settings.google_client_id or "",
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(SCOPES),
            "state": state,
            "code_challenge": _challenge(found.verifier),
            "code_challenge_method": "S256",
            # A refresh token (offline), every time (consent): a repeated link must get a new one.
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
        }
        return f"{self.settings.google_auth_url}?{urlencode(params)}"

    async def complete(self, state: str, code: str) -> str:
        """Use up the state, exchange the code, keep the refresh token; the linked login."""
        found = await self._claim(state)
        answer = await self._exchange(code, found.verifier)
        granted = set(str(answer.get("scope", "")).split())
        if lacking := [s for s in SCOPES if s not in granted]:
            wants = ", ".join(_SCOPE_NAMES.get(s, s) for s in lacking)
            raise LinkFailed(
                400,
                "Calendar access was not granted",
                f"Release Secretary needs permission to {html.escape(wants)}; those boxes were left unticked "
                f"on Google's consent screen, so nothing was linked. {_RELINK} and allow both.",
            )
        refresh_token = answer.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            raise LinkFailed(
                400,
                "Google gave no lasting access",
                "Google did not hand out a refresh token, so the bot could not use your calendar later. "
                "Remove Release Secretary at https://myaccount.google.com/permissions, then run "
                "<code>/ship calendar link</code> again.",
            )
        now = self.clock()
        linked = {"refresh_token": refresh_token, "scopes": sorted(granted), "linked_at": now.isoformat()}
        await self.vault.put(_secret_name(found.login), json.dumps(linked), now=now)
        log.info("google calendar linked", extra={"login": found.login})
        return found.login

    async def abandon(self, state: str) -> None:
        """Use up the state of a flow that came back without a code (the person declined)."""
        with contextlib.suppress(LinkFailed):  # unknown, expired or used: nothing left to spend
            await self._claim(state)

    async def credentials_for(self, login: str) -> Credentials | None:
        """The linked person's credentials, or None when `login` has not linked (or has unlinked)."""
        raw = await self.vault.get(_secret_name(login))
        if raw is None or raw == _UNLINKED:
            return None
        return user_credentials(json.loads(raw)["refresh_token"], self.settings)

    async def calendar_for(self, login: str) -> GoogleCalendar | None:
        """A GoogleCalendar acting as the linked person (building one parses the discovery document:
        keep it rather than asking for each call)."""
        credentials = await self.credentials_for(login)
        if credentials is None:
            return None
        return GoogleCalendar(credentials, USER_ACCOUNT_PREFIX + login, api_url=self.settings.google_calendar_api_url)

    async def unlink(self, login: str) -> bool:
        """Forget the person's refresh token; whether there was one. (It stays valid at Google until
        they remove the app's access there.)"""
        name = _secret_name(login)
        raw = await self.vault.get(name)
        if raw is None or raw == _UNLINKED:
            return False
        await self.vault.put(name, _UNLINKED, now=self.clock())
        log.info("google calendar unlinked", extra={"login": login})
        return True

    # The state.

    async def _state(self, state: str) -> _State:
        raw = await self.store.get_value(_STATE_KEY + _digest(state)) if state else None
        if raw is None:
            raise LinkFailed(400, "This link is not known", f"It may be mistyped or from another bot. {_RELINK}")
        data = json.loads(raw)
        if data.get("used"):
            raise LinkFailed(400, "This link was already used", f"Each link works once. {_RELINK}")
        found = _State(
            login=data["login"],
            expires=datetime.fromisoformat(data["expires"]),
            verifier=self.vault.box.decrypt(data["verifier"].encode("ascii"), name="OAuth state"),
        )
        if self.clock() >= found.expires:
            raise LinkFailed(400, "This link has expired", f"Links work for 10 minutes. {_RELINK}")
        return found

    async def _claim(self, state: str) -> _State:
        found = await self._state(state)
        digest = _digest(state)
        now = self.clock()
        # Two callbacks racing with one state: the store grants the named lease to one of them only.
        claimed = await self.store.acquire_lease(
            _STATE_LEASE + digest, secrets.token_hex(8), now=now, seconds=STATE_TTL.total_seconds() + 60
        )
        if not claimed:
            raise LinkFailed(400, "This link was already used", f"Each link works once. {_RELINK}")
        await self.store.set_value(_STATE_KEY + digest, json.dumps({"used": True, "login": found.login}), now=now)
        return found

    async def _exchange(self, code: str, verifier: str) -> dict[str, object]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.settings.google_client_id or "",
            "client_secret": self.settings.google_client_secret or "",
            "code_verifier": verifier,
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT)) as session,
                session.post(self.settings.google_token_url, data=form, headers={"Accept": "application/json"}) as resp,
            ):
                status = resp.status
                try:
                    answer = await resp.json(content_type=None)
                except ValueError:
                    answer = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("google token endpoint unreachable: %s", type(exc).__name__)
            raise LinkFailed(
                502, "Google could not be reached", f"Nothing was linked; try again in a minute. {_RELINK}"
            ) from exc
        if status == 200 and isinstance(answer, dict):
            return answer
        error = str(answer.get("error", "")) if isinstance(answer, dict) else ""
        log.warning("google refused the authorization code: HTTP %s %s", status, error)
        if status >= 500:
            raise LinkFailed(502, "Google failed", f"Google answered HTTP {status}; nothing was linked. {_RELINK}")
        raise LinkFailed(
            400,
            "Google refused the sign-in",
            f"Google did not accept the code it had just given ({html.escape(error or f'HTTP {status}')}), so "
            f"nothing was linked. {_RELINK}",
        )


GOOGLE_LINKS = web.AppKey("google_links", GoogleLinks)


def add_routes(app: web.Application, links: GoogleLinks | None = None) -> None:
    """Mount the flow's two pages; `links` (or whatever is later put at app[GOOGLE_LINKS]) serves them."""
    if links is not None:
        app[GOOGLE_LINKS] = links
    app.router.add_get(START_PATH, start_page)
    app.router.add_get(CALLBACK_PATH, callback_page)


async def start_page(request: web.Request) -> web.Response:
    links = request.app.get(GOOGLE_LINKS)
    if links is None or not links.configured:
        return _page(404, "Calendar linking is off", "This bot is not set up to link Google calendars.")
    try:
        target = await links.authorization_url(request.query.get("state", ""))
    except LinkFailed as exc:
        return _page(exc.status, exc.title, exc.text)
    return web.Response(status=302, headers={"Location": target, **_HEADERS})


async def callback_page(request: web.Request) -> web.Response:
    links = request.app.get(GOOGLE_LINKS)
    if links is None or not links.configured:
        return _page(404, "Calendar linking is off", "This bot is not set up to link Google calendars.")
    query = request.query
    state = query.get("state", "")
    if "error" in query:
        await links.abandon(state)
        error = query["error"]
        if error == "access_denied":
            return _page(400, "Nothing was linked", f"You declined access on Google's consent screen. {_RELINK}")
        return _page(400, "Google stopped the sign-in", f"Google said: {html.escape(error)}. {_RELINK}")
    if not query.get("code"):
        return _page(400, "Nothing was linked", f"Google sent no code back. {_RELINK}")
    try:
        login = await links.complete(state, query["code"])
    except LinkFailed as exc:
        return _page(exc.status, exc.title, exc.text)
    return _page(
        200,
        f"Calendar linked for @{login}",
        "Release Secretary can now book releases on your Google calendar and see when you are busy. "
        "You can close this page. To undo it, run <code>/ship calendar unlink</code>.",
    )


# The callback URL carries the code: keep it out of caches and of Referer headers.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title} - Release Secretary</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}</style>
</head><body><h1>{title}</h1><p>{text}</p></body></html>
"""


def _page(status: int, title: str, text: str) -> web.Response:
    """`title` is plain text (escaped here); `text` is HTML its makers have already escaped."""
    body = _PAGE.format(title=html.escape(title, quote=False), text=text)
    return web.Response(status=status, text=body, content_type="text/html", headers=_HEADERS)


def _secret_name(login: str) -> str:
    return USER_ACCOUNT_PREFIX + login


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode("ascii").rstrip("=")
