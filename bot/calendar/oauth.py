"""Linking a person's Google calendar to their GitHub login: GitHub confirms who they are, then Google's
OAuth 2.0 web flow with PKCE (S256) hands over access to their calendar.

`/ship calendar link` asks `GoogleLinks.start(login)` for a one-time URL on the bot. That URL is posted
in a PR comment, which others can read, so opening it proves nothing: whoever opens it is first sent
through the GitHub App's user authorization (the web flow on GITHUB_URL), and only if GitHub says they
are the login the link was made for do they reach Google's consent screen. Google sends them back with
a code, which the bot exchanges (with the PKCE verifier) for a refresh token, kept encrypted under
`google:user:<login>`. The GitHub user token is used for one `GET /user` and then dropped.

One record per link, under the SHA-256 of the link's state, valid for 10 minutes, used once, deleted
when spent. The link's state is only ever accepted at the bot's start page; GitHub and Google each get
a state of their own, `<sha256 of the link's state>.<random>`, whose random part the record keeps only
as a hash, next to that leg's PKCE verifier encrypted by the secret box. So the store never holds a
live state, and no token, code or verifier is ever logged or shown.

Each leg is bound to the browser that began it, so a URL that leaks or is forwarded is no use elsewhere.
The start page gives the browser a fresh random value in a cookie (SIGN_IN_COOKIE, holding the latest
few, one per opening), and GitHub's answer is only taken from a browser that holds it. The GitHub
callback that confirms the person gives it a second fresh value (LINK_COOKIE), and Google's answer is
only taken from a browser that holds that: otherwise Mallory, confirmed as herself, could forward Google's
consent URL to someone else and keep their calendar under her login. The records keep only the values'
SHA-256. A Google answer in a browser without the cookie spends the link: it is someone's consent brought
to the wrong place, and no later request may redeem it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Never
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from google.auth.credentials import Credentials

from ..config import Settings
from ..context import utcnow
from ..github import USER_AGENT
from ..secrets import SecretUnreadable, Vault
from ..store import Store
from . import SCOPES
from .google import USER_ACCOUNT_PREFIX, GoogleCalendar, user_credentials

log = logging.getLogger(__name__)

START_PATH = "/oauth/google/start"
GITHUB_CALLBACK_PATH = "/oauth/google/github"
CALLBACK_PATH = "/oauth/google/callback"
STATE_TTL = timedelta(minutes=10)
PENDING_SIGN_INS = 5  # a link opened in several tabs (or fetched by a chat's link preview) keeps working
TOKEN_TIMEOUT = 30.0  # seconds for each call to GitHub or Google
GITHUB_API_VERSION = "2022-11-28"
COOKIE_PATH = "/oauth/google"
SIGN_IN_COOKIE = "rs_calendar_signin"  # the GitHub leg's values, one per opening: "<value>.<value>..."
LINK_COOKIE = "rs_calendar_link"  # the Google leg's value, once GitHub has confirmed the person
_STATE_KEY = "google-oauth-state:"  # + sha256(link state), in the store's key-value table
_LEGACY_UNLINKED = json.dumps({"unlinked": True})  # how unlinking was marked before secrets could be deleted
_RELINK = "Run <code>/ship calendar link</code> again for a fresh link."
_SCOPE_NAMES = {
    "https://www.googleapis.com/auth/calendar.events": "view and edit events on your calendars",
    "https://www.googleapis.com/auth/calendar.freebusy": "see when you are free or busy",
}
# GitHub's errors that mean the bot's own OAuth client is set up wrong, not that the person did anything.
_OPERATOR_ERRORS = frozenset({"incorrect_client_credentials", "redirect_uri_mismatch"})


@dataclass(frozen=True)
class Handoff:
    """Where the bot sends the browser next, and the cookie value it must bring back to go on."""

    url: str
    cookie: str  # the store keeps only the sha256 of the value this leg added
    max_age: int  # seconds: what is left of the state's lifetime


class LinkNotConfigured(RuntimeError):
    """Linking needs GOOGLE_CLIENT_ID/SECRET, GITHUB_CLIENT_ID/SECRET, PUBLIC_URL and SECRETS_KEY."""


class LinkFailed(Exception):
    """The flow stopped; answered as an HTML page saying what happened and what to do."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(title)
        self.status, self.title, self.text = status, title, text  # text is HTML: escape what goes in


@dataclass(frozen=True)
class _Link:
    """A link's record: made for `login`; after GitHub's confirmation, waiting for Google."""

    key: str
    digest: str  # sha256 of the link's state: the first half of GitHub's and Google's states
    login: str
    expires: datetime
    # While GitHub is asked, one per opening of the link (the latest few): the sha256 of the random half
    # of GitHub's state ("id"), GitHub's PKCE verifier, encrypted ("verifier"), and the sha256 of the
    # value the opening browser got in its SIGN_IN_COOKIE ("browser").
    sign_ins: tuple[dict[str, str], ...] = ()
    confirmed: bool = False  # GitHub said the person who opened the link is `login`
    consent: str | None = None  # sha256 of the random half of Google's state, once confirmed
    verifier: str | None = None  # Google's PKCE verifier, encrypted
    browser: str | None = None  # sha256 of the LINK_COOKIE value of the browser GitHub confirmed


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
            "GITHUB_CLIENT_ID": settings.credentials.client_id,
            "GITHUB_CLIENT_SECRET": settings.credentials.client_secret,
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
        """Google's callback: register it on the Google OAuth client."""
        return f"{(self.settings.public_url or '').rstrip('/')}{CALLBACK_PATH}"

    @property
    def github_redirect_uri(self) -> str:
        """GitHub's callback: register it as a callback URL of the GitHub App."""
        return f"{(self.settings.public_url or '').rstrip('/')}{GITHUB_CALLBACK_PATH}"

    async def start(self, login: str) -> str:
        """A one-time URL on the bot that starts linking `login`'s Google calendar (10 minutes)."""
        if missing := self.missing():
            raise LinkNotConfigured(f"linking Google calendars needs {', '.join(missing)}")
        state = secrets.token_urlsafe(32)
        now = self.clock()
        record = {"login": login, "expires": (now + STATE_TTL).isoformat()}
        await self.store.set_value(_STATE_KEY + _digest(state), json.dumps(record), now=now)
        return f"{(self.settings.public_url or '').rstrip('/')}{START_PATH}?{urlencode({'state': state})}"

    @property
    def cookie_path(self) -> str:
        """The flow's pages under PUBLIC_URL, which may carry a path prefix (behind a proxy at /bot)."""
        prefix = urlsplit(self.settings.public_url or "").path.rstrip("/")
        return prefix + COOKIE_PATH

    @property
    def secure_cookies(self) -> bool:
        """Whether the flow's cookies are marked Secure: when the bot is reached over https."""
        return (self.settings.public_url or "").lower().startswith("https://")

    async def sign_in_url(self, state: str, cookie: str | None) -> Handoff:
        """GitHub's authorization page for a valid link: there the person opening it proves who they are.

        Each opening is a sign-in of its own; only the latest PENDING_SIGN_INS are kept. The browser's
        SIGN_IN_COOKIE (`cookie`, as it came) gets a fresh value for this one, next to its latest others."""
        link = await self._link(_STATE_KEY + _digest(state)) if state else _unknown()
        if link.confirmed:
            raise LinkFailed(400, "This link was already used", f"Each link works once. {_RELINK}")
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-]: RFC 7636 asks 43 to 128
        browser = secrets.token_urlsafe(32)
        sign_in = {
            "id": _digest(nonce),
            "verifier": self.vault.box.encrypt(verifier).decode("ascii"),
            "browser": _digest(browser),
        }
        record = {
            "login": link.login,
            "expires": link.expires.isoformat(),
            "sign_ins": [*link.sign_ins[-(PENDING_SIGN_INS - 1) :], sign_in],
        }
        now = self.clock()
        await self.store.set_value(link.key, json.dumps(record), now=now)
        params = {
            "client_id": self.settings.credentials.client_id or "",
            "redirect_uri": self.github_redirect_uri,
            "state": f"{link.digest}.{nonce}",
            "login": link.login,  # GitHub offers that account first; what it answers is still checked
            "allow_signup": "false",  # an account made now cannot be the one the link was made for
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
        url = f"{self.settings.github_url.rstrip('/')}/login/oauth/authorize?{urlencode(params)}"
        # The other links or tabs this browser has open keep their values (as many as a link keeps).
        kept = _cookie_values(cookie)[-(PENDING_SIGN_INS - 1) :]
        return Handoff(url, ".".join([*kept, browser]), _seconds(link.expires - now))

    async def confirm(self, state: str, code: str, cookie: str | None) -> Handoff:
        """GitHub came back: learn who signed in; Google's consent screen if it is the link's login,
        with a fresh value for the browser's LINK_COOKIE.

        GitHub's answer in a browser without this sign-in's SIGN_IN_COOKIE value is refused (403) before
        its code is used; the link stays usable. Someone else spends the link (403): it was posted where
        others could read it."""
        key, nonce = _split(state)
        link = await self._link(key)
        if link.confirmed:
            raise LinkFailed(400, "This link was already used", f"Each link works once. {_RELINK}")
        sign_in = next((s for s in link.sign_ins if _same(s["id"], nonce)), None)
        if sign_in is None:
            raise LinkFailed(
                400,
                "This sign-in is out of date",
                "The link has been opened several times since this sign-in began. Open it again from the "
                f"pull request. {_RELINK}",
            )
        if not _carries(cookie, sign_in.get("browser")):
            log.warning("calendar link's GitHub sign-in came back to another browser", extra={"login": link.login})
            raise LinkFailed(
                403,
                "This sign-in began in another browser",
                "GitHub's answer came back to a browser that did not open the link, so nothing was linked. "
                "Open the link from the pull request again, in this browser (it must accept cookies from this "
                "site). Never finish a sign-in from a link someone sent you.",
            )
        verifier = self.vault.box.decrypt(sign_in["verifier"].encode("ascii"), name="OAuth state")
        login = await self._github_login(code, verifier)
        if login.lower() != link.login.lower():
            await self.store.delete_value(key)
            log.warning("calendar link opened by someone else", extra={"login": link.login, "github_login": login})
            made_for, signed_in = html.escape(link.login), html.escape(login)
            raise LinkFailed(
                403,
                "This link is not yours",
                f"This link was made for @{made_for}, but you are signed in to GitHub as @{signed_in}: ask "
                f"@{made_for} to open it, or comment <code>/ship calendar link</code> yourself. Nothing was "
                "linked, and this link no longer works.",
            )
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        browser = secrets.token_urlsafe(32)
        now = self.clock()
        record = {
            "login": link.login,
            "expires": (now + STATE_TTL).isoformat(),  # the confirmed person gets their own 10 minutes
            "confirmed": True,
            "consent": _digest(nonce),
            "verifier": self.vault.box.encrypt(verifier).decode("ascii"),
            "browser": _digest(browser),
        }
        await self.store.set_value(key, json.dumps(record), now=now)
        log.info("calendar link confirmed by GitHub", extra={"login": link.login})
        params = {
            "response_type": "code",
            "client_id": self.settings.google_client_id or "",
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(SCOPES),
            "state": f"{link.digest}.{nonce}",
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
            # A refresh token (offline), every time (consent): a repeated link must get a new one.
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
        }
        return Handoff(f"{self.settings.google_auth_url}?{urlencode(params)}", browser, _seconds(STATE_TTL))

    async def complete(self, state: str, code: str, cookie: str | None) -> str:
        """Google came back: use up the link, exchange the code, keep the refresh token; the linked login.

        In a browser without the LINK_COOKIE that GitHub's confirmation gave (`cookie`), the link is
        spent and the code never used (403): Google's consent URL was forwarded to someone else, or the
        person finished in a browser other than the one GitHub checked."""
        link = await self._claim(state)
        if not _carries(cookie, link.browser):
            log.warning("calendar link's Google consent came back to another browser", extra={"login": link.login})
            raise LinkFailed(
                403,
                "This calendar link was confirmed in another browser",
                "Google's answer came back to a browser that did not pass GitHub's check, so nothing was "
                "linked and this link no longer works. Run <code>/ship calendar link</code> again and open "
                "the new link from the pull request in the browser where you are signed in to GitHub (it "
                "must accept cookies from this site). If someone sent you a Google sign-in link, it was not "
                "meant for you.",
            )
        assert link.verifier is not None  # a confirmed record has it (_claim checked)
        verifier = self.vault.box.decrypt(link.verifier.encode("ascii"), name="OAuth state")
        answer = await self._google_exchange(code, verifier)
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
        await self.vault.put(_secret_name(link.login), json.dumps(linked), now=now)
        log.info("google calendar linked", extra={"login": link.login})
        return link.login

    async def abandon(self, state: str) -> None:
        """Use up the link of a Google flow that came back without a code (the person declined)."""
        try:
            await self._claim(state)
        except LinkFailed:  # unknown, expired, used or not this flow's: nothing left to spend
            return

    async def credentials_for(self, login: str) -> Credentials | None:
        """The linked person's credentials, or None when `login` has not linked (or has unlinked)."""
        raw = await self.vault.get(_secret_name(login))
        if raw is None or raw == _LEGACY_UNLINKED:
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
        try:
            linked = await self.vault.get(name) not in (None, _LEGACY_UNLINKED)
        except SecretUnreadable:  # written under a key since removed: still theirs to forget
            linked = True
        if not await self.store.delete_secret(name) or not linked:
            return False
        log.info("google calendar unlinked", extra={"login": login})
        return True

    # The link's record.

    async def _link(self, key: str) -> _Link:
        """The record under `key`; an expired or spent one is deleted on sight and refused."""
        raw = await self.store.get_value(key)
        if raw is None:
            _unknown()
        data = json.loads(raw)
        if data.get("used"):  # how a spent link was kept before records could be deleted
            await self.store.delete_value(key)
            raise LinkFailed(400, "This link was already used", f"Each link works once. {_RELINK}")
        expires = datetime.fromisoformat(data["expires"])
        if self.clock() >= expires:
            await self.store.delete_value(key)
            raise LinkFailed(400, "This link has expired", f"Links work for 10 minutes. {_RELINK}")
        return _Link(
            key=key,
            digest=key.removeprefix(_STATE_KEY),
            login=data["login"],
            expires=expires,
            sign_ins=tuple(data.get("sign_ins", ())),
            confirmed=bool(data.get("confirmed")),
            consent=data.get("consent"),
            verifier=data.get("verifier") if data.get("confirmed") else None,
            browser=data.get("browser") if data.get("confirmed") else None,
        )

    async def _claim(self, state: str) -> _Link:
        """The confirmed link Google's `state` belongs to, deleted: whoever deletes it holds it."""
        key, nonce = _split(state)
        link = await self._link(key)
        if not link.confirmed:
            raise LinkFailed(
                403,
                "GitHub has not confirmed this link",
                "Google's answer can only be used after GitHub has confirmed who opened the link, so "
                "nothing was linked. Open the link from the pull request again and sign in to GitHub "
                f"when asked. {_RELINK}",
            )
        if link.consent is None or link.verifier is None or not _same(link.consent, nonce):
            _unknown()
        # Two callbacks racing with one state: the store deletes the record for one of them only.
        if not await self.store.delete_value(key):
            raise LinkFailed(400, "This link was already used", f"Each link works once. {_RELINK}")
        return link

    # GitHub and Google.

    async def _github_login(self, code: str, verifier: str) -> str:
        """Exchange GitHub's code for a user token, ask GitHub whose it is, and drop the token."""
        settings = self.settings
        form = {
            "client_id": settings.credentials.client_id or "",
            "client_secret": settings.credentials.client_secret or "",
            "code": code,
            "redirect_uri": self.github_redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"User-Agent": USER_AGENT}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT), headers=headers) as s:
            url = f"{settings.github_url.rstrip('/')}/login/oauth/access_token"
            status, answer = await _call(s, "POST", url, "GitHub", data=form, headers={"Accept": "application/json"})
            token = answer.get("access_token") if status == 200 and isinstance(answer, dict) else None
            if not isinstance(token, str) or not token:
                error = str(answer.get("error", "")) if isinstance(answer, dict) else ""
                _refused("GitHub", status, error)
            user_headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": GITHUB_API_VERSION,
            }
            url = f"{settings.github_api_url.rstrip('/')}/user"
            status, user = await _call(s, "GET", url, "GitHub", headers=user_headers)
        del token  # used for this one call; never stored, never logged
        login = user.get("login") if status == 200 and isinstance(user, dict) else None
        if not isinstance(login, str) or not login:
            log.warning("github did not say whose new user token it was: HTTP %s", status)
            raise LinkFailed(
                502, "GitHub failed", f"GitHub did not say who signed in (HTTP {status}); nothing was linked. {_RELINK}"
            )
        return login

    async def _google_exchange(self, code: str, verifier: str) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.settings.google_client_id or "",
            "client_secret": self.settings.google_client_secret or "",
            "code_verifier": verifier,
        }
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT)) as session:
            headers = {"Accept": "application/json"}
            status, answer = await _call(
                session, "POST", self.settings.google_token_url, "Google", data=form, headers=headers
            )
        if status == 200 and isinstance(answer, dict):
            return answer
        _refused("Google", status, str(answer.get("error", "")) if isinstance(answer, dict) else "")


GOOGLE_LINKS = web.AppKey("google_links", GoogleLinks)


def add_routes(app: web.Application, links: GoogleLinks | None = None) -> None:
    """Mount the flow's three pages; `links` (or whatever is later put at app[GOOGLE_LINKS]) serves them."""
    if links is not None:
        app[GOOGLE_LINKS] = links
    app.router.add_get(START_PATH, start_page)
    app.router.add_get(GITHUB_CALLBACK_PATH, github_page)
    app.router.add_get(CALLBACK_PATH, callback_page)


async def start_page(request: web.Request) -> web.Response:
    links = request.app.get(GOOGLE_LINKS)
    if links is None or not links.configured:
        return _off()
    try:
        handoff = await links.sign_in_url(request.query.get("state", ""), request.cookies.get(SIGN_IN_COOKIE))
    except LinkFailed as exc:
        return _page(exc.status, exc.title, exc.text)
    return _redirect(links, SIGN_IN_COOKIE, handoff)


async def github_page(request: web.Request) -> web.Response:
    links = request.app.get(GOOGLE_LINKS)
    if links is None or not links.configured:
        return _off()
    query = request.query
    if "error" in query:  # the link stays usable: whoever declined has not proven anything
        error = query["error"]
        if error == "access_denied":
            return _page(
                400,
                "Nothing was linked",
                "You declined on GitHub's page, so GitHub could not confirm who you are. To try again, open "
                f"the link from the pull request again. {_RELINK}",
            )
        return _page(400, "GitHub stopped the sign-in", f"GitHub said: {html.escape(error)}. {_RELINK}")
    if not query.get("code"):
        return _page(400, "Nothing was linked", f"GitHub sent no code back. {_RELINK}")
    try:
        handoff = await links.confirm(query.get("state", ""), query["code"], request.cookies.get(SIGN_IN_COOKIE))
    except LinkFailed as exc:
        return _page(exc.status, exc.title, exc.text)
    return _redirect(links, LINK_COOKIE, handoff)


async def callback_page(request: web.Request) -> web.Response:
    links = request.app.get(GOOGLE_LINKS)
    if links is None or not links.configured:
        return _off()
    response = await _google_answered(links, request)
    # Whatever happened, the link this browser was confirmed for is settled: its value is of no more use.
    response.del_cookie(LINK_COOKIE, path=links.cookie_path, secure=links.secure_cookies, httponly=True, samesite="Lax")
    return response


async def _google_answered(links: GoogleLinks, request: web.Request) -> web.Response:
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
        login = await links.complete(state, query["code"], request.cookies.get(LINK_COOKIE))
    except LinkFailed as exc:
        return _page(exc.status, exc.title, exc.text)
    return _page(
        200,
        f"Calendar linked for @{login}",
        "Release Secretary can now book releases on your Google calendar and see when you are busy. "
        "You can close this page. To undo it, run <code>/ship calendar unlink</code>.",
    )


# The callback URLs carry codes: keep them out of caches and of Referer headers.
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


def _redirect(links: GoogleLinks, cookie: str, handoff: Handoff) -> web.Response:
    """On to GitHub or Google, the browser carrying the value that lets it come back (Lax: the way back
    is a top-level GET from GitHub's or Google's site; HttpOnly: no script on the page needs it)."""
    response = web.Response(status=302, headers={"Location": handoff.url, **_HEADERS})
    response.set_cookie(
        cookie,
        handoff.cookie,
        max_age=handoff.max_age,
        path=links.cookie_path,
        secure=links.secure_cookies,
        httponly=True,
        samesite="Lax",
    )
    return response


def _off() -> web.Response:
    return _page(404, "Calendar linking is off", "This bot is not set up to link Google calendars.")


async def _call(session: aiohttp.ClientSession, method: str, url: str, service: str, **kwargs: Any) -> tuple[int, Any]:
    """One request; its status and JSON body (None when it is not JSON). Unreachable: a 502 page."""
    try:
        async with session.request(method, url, **kwargs) as resp:
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, None
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("%s unreachable: %s", service, type(exc).__name__)
        raise LinkFailed(
            502, f"{service} could not be reached", f"Nothing was linked; try again in a minute. {_RELINK}"
        ) from exc


def _refused(service: str, status: int, error: str) -> Never:
    """A code exchange that did not give a token: 502 when the service failed, 400 when it said no."""
    if service == "GitHub" and error in _OPERATOR_ERRORS:
        log.error(
            "github refused the bot's OAuth client (%s): check GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET "
            "and the App's callback URL",
            error,
        )
    else:
        log.warning("%s refused the authorization code: HTTP %s %s", service, status, error)
    if status >= 500:
        raise LinkFailed(502, f"{service} failed", f"{service} answered HTTP {status}; nothing was linked. {_RELINK}")
    raise LinkFailed(
        400,
        f"{service} refused the sign-in",
        f"{service} did not accept the code it had just given ({html.escape(error or f'HTTP {status}')}), so "
        f"nothing was linked. {_RELINK}",
    )


def _unknown() -> Never:
    raise LinkFailed(
        400,
        "This link is not known",
        f"It may be mistyped, already used, or from another bot. {_RELINK}",
    )


def _split(state: str) -> tuple[str, str]:
    """GitHub's or Google's state: the link's record key and the random half."""
    digest, dot, nonce = state.partition(".")
    if not dot or not nonce or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        _unknown()
    return _STATE_KEY + digest, nonce


def _same(digest: str, nonce: str) -> bool:
    return hmac.compare_digest(digest, _digest(nonce))


def _cookie_values(cookie: str | None) -> list[str]:
    """The values in one of the flow's cookies (the latest few, as the bot wrote them; others dropped)."""
    values = (cookie or "").split(".")[-PENDING_SIGN_INS:]
    return [v for v in values if len(v) == 43 and all(c.isascii() and (c.isalnum() or c in "-_") for c in v)]


def _carries(cookie: str | None, digest: str | None) -> bool:
    """Whether the browser's cookie holds the value whose sha256 the record kept (a record from before
    the cookies existed has none: refused). Every value is compared, in constant time."""
    if not digest:
        return False
    matches = [_same(digest, value) for value in _cookie_values(cookie)]  # a list: every one is compared
    return any(matches)


def _seconds(left: timedelta) -> int:
    return max(1, math.ceil(left.total_seconds()))


def _secret_name(login: str) -> str:
    return USER_ACCOUNT_PREFIX + login


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode("ascii").rstrip("=")
