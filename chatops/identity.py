"""Chat accounts linked to GitHub logins: `/release link` and the GitHub App user authorization behind it.

`/release link` answers privately with a one-time URL on the bot (`/github/oauth/start?state=...`),
bound to the chat user who asked, valid for 10 minutes, usable once. Opening it sends the browser to
GitHub's user authorization (`GITHUB_URL/login/oauth/authorize`, its own `state` and PKCE), which comes
back to `/github/oauth/callback`; the code is exchanged (`POST /login/oauth/access_token`) and
`GET /user` says who signed in. Whoever opens a link signs in as themselves, so a link forwarded to
someone else must not hand over their identity: the callback shows a consent page naming the chat
account that asked, and only that person's yes (a POST from the same browser) links it. The user token
and its refresh token are then kept encrypted and refreshed when expired; a refresh GitHub refuses (the
person revoked the App) ends the link. The store keeps states and nonces only as SHA-256 digests, and
the browser that opened the link must be the one GitHub sends back (a cookie whose hash is kept).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web

from bot.config import Settings
from bot.context import utcnow
from bot.github import USER_AGENT
from bot.secrets import Vault
from bot.store import Store

log = logging.getLogger(__name__)

START_PATH = "/github/oauth/start"
CALLBACK_PATH = "/github/oauth/callback"
CONFIRM_PATH = "/github/oauth/confirm"
STATE_TTL = timedelta(minutes=10)
COOKIE = "rs_chat_link"
TIMEOUT = 30.0
GITHUB_API_VERSION = "2022-11-28"
REFRESH_MARGIN = timedelta(minutes=5)  # refresh a user token this long before GitHub says it expires
_STATE = "chat-link-state:"  # + sha256(state)
_LINK = "chat-link:"  # + chat user key -> {"login", "linked_at"}
_BY_LOGIN = "chat-linked:"  # + lower(login) + ":" + chat user key -> "" (who to DM)
_TOKEN = "github-user-token:"  # noqa: S105 - a name prefix: + lower(login), in the vault
_RELINK = "Send <code>/release link</code> in the chat again for a fresh link."


@dataclass(frozen=True, slots=True)
class ChatUser:
    """Someone in a chat: `platform` "slack" or "telegram", `team` the Slack workspace ("" on Telegram)."""

    platform: str
    team: str
    user_id: str
    name: str = ""

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.team}:{self.user_id}"

    @classmethod
    def from_key(cls, key: str) -> ChatUser:
        platform, team, user_id = key.split(":", 2)
        return cls(platform, team, user_id)


@dataclass(frozen=True, slots=True)
class Consent:
    """GitHub confirmed who signed in; waiting for their yes to let `user` act as `login`."""

    digest: str
    token: str  # goes in the consent form; the record keeps its sha256
    user: ChatUser
    login: str


class LinkFailed(Exception):
    """The flow stopped; answered as a page saying what happened (`text` is HTML, already escaped)."""

    def __init__(self, status: int, title: str, text: str, error: str = "") -> None:
        super().__init__(title)
        self.status, self.title, self.text = status, title, text
        self.error = error  # GitHub's error code, when it gave one


class ChatLinks:
    def __init__(self, settings: Settings, store: Store, vault: Vault, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.store = store
        self.vault = vault
        self.clock = clock

    def missing(self) -> list[str]:
        wanted = {
            "GITHUB_CLIENT_ID": self.settings.credentials.client_id,
            "GITHUB_CLIENT_SECRET": self.settings.credentials.client_secret,
            "PUBLIC_URL": self.settings.public_url,
        }
        return [name for name, value in wanted.items() if not value]

    @property
    def redirect_uri(self) -> str:
        """Register it as a callback URL of the GitHub App."""
        return f"{(self.settings.public_url or '').rstrip('/')}{CALLBACK_PATH}"

    @property
    def confirm_path(self) -> str:
        return urlsplit(self.settings.public_url or "").path.rstrip("/") + CONFIRM_PATH

    @property
    def cookie_path(self) -> str:
        return urlsplit(self.settings.public_url or "").path.rstrip("/") + "/github/oauth"

    async def start(self, user: ChatUser) -> str:
        """A one-time URL that links `user` to whoever signs in to GitHub with it (10 minutes)."""
        state = secrets.token_urlsafe(32)
        now = self.clock()
        record = {"user": user.key, "name": user.name, "expires": (now + STATE_TTL).isoformat()}
        await self.store.set_value(_STATE + _digest(state), json.dumps(record), now=now)
        return f"{(self.settings.public_url or '').rstrip('/')}{START_PATH}?{urlencode({'state': state})}"

    async def authorize_url(self, state: str) -> tuple[str, str]:
        """GitHub's authorization URL for a valid link, and the value the browser must bring back."""
        key = _STATE + _digest(state)
        record = await self._record(key)
        # The latest opening wins (a link opened twice, or fetched by a preview, still works once).
        nonce, verifier, browser = secrets.token_urlsafe(32), secrets.token_urlsafe(64), secrets.token_urlsafe(32)
        record = {
            "user": record["user"],
            "name": record.get("name", ""),
            "expires": record["expires"],
            "nonce": _digest(nonce),
            "verifier": self.vault.box.encrypt(verifier).decode("ascii"),
            "browser": _digest(browser),
        }
        await self.store.set_value(key, json.dumps(record), now=self.clock())
        params = {
            "client_id": self.settings.credentials.client_id or "",
            "redirect_uri": self.redirect_uri,
            "state": f"{_digest(state)}.{nonce}",
            "allow_signup": "false",
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
        return f"{self.settings.github_url.rstrip('/')}/login/oauth/authorize?{urlencode(params)}", browser

    async def complete(self, state: str, code: str, cookie: str | None) -> Consent:
        """GitHub came back: learn who signed in, and hold their tokens until they say yes on the consent page.

        Nothing is linked yet: whoever opens a link signs in as themselves, so a link forwarded to someone
        else would hand their identity to the person who asked for it. The page names the chat account
        that will act as them, and only their explicit yes (a POST from this browser) links it."""
        digest, _, nonce = state.partition(".")
        if len(digest) != 64 or not nonce:
            raise LinkFailed(400, "This link is not known", f"It may be mistyped or already used. {_RELINK}")
        key = _STATE + digest
        record = await self._record(key)
        if not record.get("nonce") or not hmac.compare_digest(record["nonce"], _digest(nonce)):
            raise LinkFailed(400, "This sign-in is out of date", f"Open the newest link. {_RELINK}")
        self._same_browser(record, cookie)
        verifier = self.vault.box.decrypt(record["verifier"].encode("ascii"), name="OAuth state")
        # GitHub's leg is spent before its code is used: the same answer cannot be replayed.
        record |= {"nonce": "", "verifier": ""}
        await self.store.set_value(key, json.dumps(record), now=self.clock())
        answer = await self._token_request(
            {"code": code, "redirect_uri": self.redirect_uri, "code_verifier": verifier}, refused_text=True
        )
        login = await self._login(str(answer["access_token"]))
        consent = secrets.token_urlsafe(32)
        record |= {
            "login": login,
            "tokens": self.vault.box.encrypt(json.dumps(answer)).decode("ascii"),
            "consent": _digest(consent),
        }
        await self.store.set_value(key, json.dumps(record), now=self.clock())
        user = ChatUser.from_key(record["user"])
        return Consent(
            digest, consent, ChatUser(user.platform, user.team, user.user_id, str(record.get("name") or "")), login
        )

    async def decide(
        self, digest: str, consent: str, cookie: str | None, *, allow: bool
    ) -> tuple[ChatUser, str] | None:
        """The person's answer on the consent page: the link is spent either way; linked only on yes."""
        key = _STATE + digest
        record = await self._record(key)
        if not record.get("consent") or not hmac.compare_digest(record["consent"], _digest(consent)):
            raise LinkFailed(400, "This page is out of date", f"Nothing was linked. {_RELINK}")
        self._same_browser(record, cookie)
        if not await self.store.delete_value(key):  # single use, even for two answers at once
            raise LinkFailed(400, "This link was already used", f"Each link works once. {_RELINK}")
        if not allow:
            log.info("chat link declined on the consent page")
            return None
        answer = json.loads(self.vault.box.decrypt(record["tokens"].encode("ascii"), name="OAuth tokens"))
        login = str(record["login"])
        user = ChatUser.from_key(record["user"])
        user = ChatUser(user.platform, user.team, user.user_id, str(record.get("name") or ""))
        await self._keep_tokens(login, answer)
        await self.link(user, login)
        return user, login

    def _same_browser(self, record: dict[str, Any], cookie: str | None) -> None:
        if not cookie or not hmac.compare_digest(record.get("browser", ""), _digest(cookie)):
            log.warning("chat link's sign-in came back to another browser")
            raise LinkFailed(
                403,
                "This sign-in began in another browser",
                "GitHub's answer came back to a browser that did not open the link, so nothing was linked. "
                f"Never finish a sign-in from a link someone sent you. {_RELINK}",
            )

    async def link(self, user: ChatUser, login: str) -> None:
        now = self.clock()
        old = await self.linked_login(user)
        if old is not None and old.lower() != login.lower():
            await self.store.delete_value(f"{_BY_LOGIN}{old.lower()}:{user.key}")
        doc = {"login": login, "name": user.name, "linked_at": now.isoformat()}
        await self.store.set_value(_LINK + user.key, json.dumps(doc), now=now)
        await self.store.set_value(f"{_BY_LOGIN}{login.lower()}:{user.key}", "", now=now)
        log.info("chat user linked", extra={"platform": user.platform, "login": login})

    async def unlink(self, user: ChatUser) -> str | None:
        """Forget the link (and the login's tokens when no other chat account uses them); the login it had."""
        login = await self.linked_login(user)
        await self.store.delete_value(_LINK + user.key)
        if login is None:
            return None
        await self.store.delete_value(f"{_BY_LOGIN}{login.lower()}:{user.key}")
        if not await self.chat_users(login):
            await self.store.delete_secret(_TOKEN + login.lower())
        return login

    async def linked_login(self, user: ChatUser) -> str | None:
        raw = await self.store.get_value(_LINK + user.key)
        return str(json.loads(raw)["login"]) if raw else None

    async def login_for(self, user: ChatUser) -> str | None:
        """The login `user` acts as, None when unlinked. An expired user token is refreshed first; when
        GitHub refuses the refresh (the App's authorization was revoked) the link ends."""
        login = await self.linked_login(user)
        if login is None:
            return None
        tokens = await self._tokens(login)
        if tokens is None or not self._expired(tokens):
            return login  # fresh, or linked before tokens were kept
        owner = secrets.token_hex(8)
        lease = f"github-user-refresh:{login.lower()}"
        for _ in range(50):  # one refresh per login at a time: GitHub's refresh tokens work once
            if await self.store.acquire_lease(lease, owner, now=self.clock(), seconds=30):
                break
            await asyncio.sleep(0.1)
        else:
            return login  # another process is refreshing it right now
        try:
            tokens = await self._tokens(login)  # it may have been refreshed while we waited
            if tokens is None or not self._expired(tokens):
                return login
            sent = str(tokens.get("refresh_token", ""))
            try:
                answer = await self._token_request(
                    {"grant_type": "refresh_token", "refresh_token": sent}, refused_text=False
                )
            except LinkFailed as exc:
                if exc.error == "bad_refresh_token":  # the authorization is gone (revoked, or expired)
                    log.info("chat link ended: github refused the refresh", extra={"login": login})
                    await self._end(login)
                    return None
                log.warning("refreshing %s's user token failed (%s); acting on the link", login, exc.error or exc.title)
                return login
            await self._keep_tokens(login, answer)
            return login
        finally:
            await self.store.release_lease(lease, owner)

    async def _tokens(self, login: str) -> dict[str, Any] | None:
        raw = await self.vault.get(_TOKEN + login.lower())
        return dict(json.loads(raw)) if raw else None

    def _expired(self, tokens: dict[str, Any]) -> bool:
        expires = tokens.get("expires_at")
        return expires is not None and datetime.fromisoformat(expires) - REFRESH_MARGIN <= self.clock()

    async def _end(self, login: str) -> None:
        """GitHub no longer honours the login's authorization: every chat account linked to it is unlinked."""
        for user in await self.chat_users(login):
            await self.unlink(user)
        await self.store.delete_secret(_TOKEN + login.lower())

    async def chat_users(self, login: str) -> list[ChatUser]:
        """Every chat account linked to `login` (for direct messages)."""
        prefix = f"{_BY_LOGIN}{login.lower()}:"
        return [ChatUser.from_key(key[len(prefix) :]) for key, _ in await self.store.list_values(prefix, limit=20)]

    async def _record(self, key: str) -> dict[str, Any]:
        raw = await self.store.get_value(key)
        if raw is None:
            raise LinkFailed(400, "This link is not known", f"It may be mistyped, expired or already used. {_RELINK}")
        record: dict[str, Any] = json.loads(raw)
        if datetime.fromisoformat(record["expires"]) <= self.clock():
            await self.store.delete_value(key)
            raise LinkFailed(400, "This link has expired", f"Links work for 10 minutes. {_RELINK}")
        return record

    async def _keep_tokens(self, login: str, answer: dict[str, Any]) -> None:
        now = self.clock()
        kept: dict[str, Any] = {"access_token": answer["access_token"], "refreshed_at": now.isoformat()}
        if isinstance(answer.get("expires_in"), int):
            kept["expires_at"] = (now + timedelta(seconds=answer["expires_in"])).isoformat()
        if isinstance(answer.get("refresh_token"), str):
            kept["refresh_token"] = answer["refresh_token"]
        if isinstance(answer.get("refresh_token_expires_in"), int):
            kept["refresh_expires_at"] = (now + timedelta(seconds=answer["refresh_token_expires_in"])).isoformat()
        await self.vault.put(_TOKEN + login.lower(), json.dumps(kept), now=now)

    async def _token_request(self, form: dict[str, str], *, refused_text: bool) -> dict[str, Any]:
        form = {
            "client_id": self.settings.credentials.client_id or "",
            "client_secret": self.settings.credentials.client_secret or "",
            **form,
        }
        url = f"{self.settings.github_url.rstrip('/')}/login/oauth/access_token"
        status, answer = await _call("POST", url, data=form, headers={"Accept": "application/json"})
        if status == 200 and isinstance(answer, dict) and isinstance(answer.get("access_token"), str):
            return answer
        error = str(answer.get("error", "")) if isinstance(answer, dict) else ""
        if error in ("incorrect_client_credentials", "redirect_uri_mismatch"):
            log.error("github refused the bot's OAuth client (%s): check GITHUB_CLIENT_ID/SECRET and the App", error)
        if status >= 500:
            raise LinkFailed(
                502, "GitHub failed", f"GitHub answered HTTP {status}; nothing was linked. {_RELINK}", error
            )
        what = html.escape(error or f"HTTP {status}") if refused_text else "refused"
        raise LinkFailed(400, "GitHub refused the sign-in", f"GitHub did not accept it ({what}). {_RELINK}", error)

    async def _login(self, token: str) -> str:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        }
        status, user = await _call("GET", f"{self.settings.github_api_url.rstrip('/')}/user", headers=headers)
        login = user.get("login") if status == 200 and isinstance(user, dict) else None
        if not isinstance(login, str) or not login:
            raise LinkFailed(502, "GitHub failed", f"GitHub did not say who signed in (HTTP {status}). {_RELINK}")
        return login


async def _call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT}) as session,
            session.request(method, url, **kwargs) as resp,
        ):
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, None
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("github unreachable: %s", type(exc).__name__)
        raise LinkFailed(
            502, "GitHub could not be reached", f"Nothing was linked; try again in a minute. {_RELINK}"
        ) from exc


CHAT_LINKS = web.AppKey("chat_links", ChatLinks)
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def add_routes(app: web.Application) -> None:
    app.router.add_get(START_PATH, start_page)
    app.router.add_get(CALLBACK_PATH, callback_page)
    app.router.add_post(CONFIRM_PATH, confirm_page)


async def start_page(request: web.Request) -> web.Response:
    links = request.app.get(CHAT_LINKS)
    if links is None or links.missing():
        return _page(404, "Linking is off", "This bot is not set up to link chat accounts.")
    try:
        url, browser = await links.authorize_url(request.query.get("state", ""))
    except LinkFailed as exc:
        return _page(exc.status, exc.title, exc.text)
    response = web.Response(status=302, headers={"Location": url, **_HEADERS})
    secure = (links.settings.public_url or "").lower().startswith("https://")
    max_age = int(STATE_TTL.total_seconds())
    response.set_cookie(
        COOKIE, browser, max_age=max_age, path=links.cookie_path, secure=secure, httponly=True, samesite="Lax"
    )
    return response


async def callback_page(request: web.Request) -> web.Response:
    links = request.app.get(CHAT_LINKS)
    if links is None or links.missing():
        return _page(404, "Linking is off", "This bot is not set up to link chat accounts.")
    query = request.query
    if "error" in query:
        return _page(400, "Nothing was linked", f"GitHub said: {html.escape(query.get('error', ''))}. {_RELINK}")
    try:
        consent = await links.complete(query.get("state", ""), query.get("code", ""), request.cookies.get(COOKIE))
    except LinkFailed as exc:
        return _page(exc.status, exc.title, exc.text)
    user = consent.user
    where = "Slack" if user.platform == "slack" else "Telegram"
    who = html.escape(user.name or user.user_id)
    team = f" in the workspace {html.escape(user.team)}" if user.team else ""
    login = html.escape(consent.login)
    form = (
        f'<form method="post" action="{html.escape(links.confirm_path)}">'
        f'<input type="hidden" name="link" value="{consent.digest}">'
        f'<input type="hidden" name="consent" value="{html.escape(consent.token)}">'
        '<button name="answer" value="allow">Link my GitHub account</button> '
        '<button name="answer" value="deny">Cancel</button></form>'
    )
    return _page(
        200,
        "Link your GitHub account?",
        f"You are signed in to GitHub as <b>@{login}</b>. The {where} account <b>{who}</b>{team} asked to act as "
        f"you: to ship, cancel and roll back releases with your permissions.</p><p>Only go on if that is "
        "<b>your own</b> chat account and you asked for this link yourself. If someone sent you this link, "
        f"press Cancel.</p>{form}<p>",
    )


async def confirm_page(request: web.Request) -> web.Response:
    links = request.app.get(CHAT_LINKS)
    if links is None or links.missing():
        return _page(404, "Linking is off", "This bot is not set up to link chat accounts.")
    form = await request.post()
    try:
        done = await links.decide(
            str(form.get("link", "")),
            str(form.get("consent", "")),
            request.cookies.get(COOKIE),
            allow=form.get("answer") == "allow",
        )
    except LinkFailed as exc:
        return _page(exc.status, exc.title, exc.text)
    if done is None:
        response = _page(200, "Nothing was linked", "The link is spent; nobody can use it now.")
    else:
        user, login = done
        where = "Slack" if user.platform == "slack" else "Telegram"
        response = _page(
            200,
            "Linked",
            f"Your {where} account now acts as the GitHub login <b>@{html.escape(login)}</b>, with its permissions "
            "on each repository. You can close this tab.",
        )
    response.del_cookie(COOKIE, path=links.cookie_path)
    return response


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Release Secretary</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem;
color: #1f2328; }} code {{ background: #f6f8fa; padding: .1em .3em; border-radius: 4px; }}</style>
</head><body><h1>{title}</h1><p>{text}</p></body></html>
"""


def _page(status: int, title: str, text: str) -> web.Response:
    body = _PAGE.format(title=html.escape(title, quote=False), text=text)
    return web.Response(status=status, text=body, content_type="text/html", headers=_HEADERS)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode("ascii").rstrip("=")
