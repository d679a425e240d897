"""Sign-in with GitHub for the web pages: the App's user authorization, sessions, CSRF and the CSP.

The flow is the one chat linking uses (chatops/identity.py): `POST /login` (a form, so it carries a CSRF
token) sends the browser to `GITHUB_URL/login/oauth/authorize` with a one-time `state`, a PKCE challenge
and a cookie binding the flow to this browser; `/login/callback` exchanges the code, asks `GET /user` who
signed in and `GET /user/installations` (and each installation's repositories) what they may see.

A session lives in the store under the SHA-256 of a random id; the browser holds that id in a cookie that
is encrypted and authenticated (Fernet, SECRETS_KEY), HttpOnly, SameSite=Lax, Secure on https, and
expires. The record keeps the person's login, their CSRF token, the repositories GitHub says they can
access (re-read every REPOS_TTL) and their user token, encrypted, to re-read them. Signing out deletes
the record, so a copied cookie dies with it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import aiohttp

from ..config import Settings
from ..github import USER_AGENT
from ..secrets import SecretBox, SecretUnreadable
from ..store import Store

log = logging.getLogger(__name__)

LOGIN_PATH: Final = "/login"
CALLBACK_PATH: Final = "/login/callback"
LOGOUT_PATH: Final = "/logout"
HOME_PATH: Final = "/dashboard"
NEXT_ROOTS: Final = (HOME_PATH, "/setup")  # where a sign-in may lead back to
SESSION_TTL: Final = timedelta(hours=12)
REPOS_TTL: Final = timedelta(minutes=10)  # how long GitHub's answer on who sees what is trusted
REPOS_GRACE: Final = timedelta(hours=1)  # while GitHub is down, the last answer is used this long at most
FLOW_TTL: Final = timedelta(minutes=10)
FORM_TTL: Final = timedelta(hours=1)  # the sign-in form's CSRF cookie
RETRY_AFTER: Final = timedelta(minutes=1)  # between tries while GitHub cannot be reached
REFRESH_MARGIN: Final = timedelta(minutes=5)
TIMEOUT: Final = 10.0  # a person is waiting for the page
MAX_PAGES: Final = 20  # of 100 installations or repositories each
GITHUB_API_VERSION: Final = "2022-11-28"
_SESSION: Final = "web-session:"  # + sha256(session id)
_FLOW: Final = "web-login:"  # + sha256(state)
_LEASE: Final = "web-session-refresh:"  # + sha256(session id): one re-read at a time (refresh tokens work once)


class SignInFailed(Exception):
    """The flow, or a session's re-check with GitHub, stopped; answered as a page (`text` is plain text)."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(title)
        self.status, self.title, self.text = status, title, text


def _unavailable() -> SignInFailed:
    return SignInFailed(
        503, "GitHub cannot be reached", "It is needed to confirm which repositories you can see. Try again soon."
    )


class _AccessEnded(Exception):
    """GitHub refused the person's token (revoked, expired beyond refresh): the session ends."""


@dataclass(frozen=True, slots=True)
class WebSession:
    """Someone signed in: who, their CSRF token, and the repositories GitHub says they can access."""

    digest: str  # sha256 of the session id: the store key, never the id itself
    login: str
    csrf: str
    repos: tuple[str, ...]  # full names as GitHub spells them
    expires: datetime
    by_key: dict[str, str] = field(default_factory=dict, repr=False)  # lower-cased name -> GitHub's spelling

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {r.lower(): r for r in self.repos})

    def sees(self, repo: str) -> bool:
        """Whether GitHub lets this person access `repo` (names compare without regard to case)."""
        return repo.lower() in self.by_key

    def canonical(self, repo: str) -> str | None:
        """`repo` as GitHub spells it, when this person can access it."""
        return self.by_key.get(repo.lower())

    def csrf_ok(self, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(self.csrf.encode(), token.encode("utf-8", "replace"))


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode("ascii").rstrip("=")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of the dashboard or the setup page, never another site (`//evil`,
    `/\\evil`)."""
    root = next((r for r in NEXT_ROOTS if value and value.startswith(r)), None)
    if not value or len(value) > 500 or root is None:
        return HOME_PATH
    rest = value[len(root) :]
    if rest and rest[0] not in "/?#":
        return HOME_PATH
    if "//" in value or "\\" in value or any(ord(c) < 33 or ord(c) == 127 for c in value):
        return HOME_PATH
    return value


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def security_headers(settings: Settings) -> dict[str, str]:
    """Every page of ours: a strict CSP (no inline script or style), no framing, no sniffing, no caching."""
    github = origin(settings.github_url)
    csp = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; "
        f"form-action 'self' {github}; frame-ancestors 'none'; base-uri 'none'"
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if (settings.public_url or "").lower().startswith("https://"):
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


class Auth:
    """Sign-in and sessions over the store; one per request (it holds no state of its own)."""

    def __init__(self, settings: Settings, store: Store, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.box = SecretBox(settings.secrets_keys)

    async def ready(self) -> list[str]:
        """What is still missing for signing in (nothing: ready), after looking for an App the setup page
        registered meanwhile (its OAuth client counts like GITHUB_CLIENT_ID and its secret)."""
        await self.settings.credentials.refresh()
        return self.missing()

    def missing(self) -> list[str]:
        """What an operator must set before anyone can sign in."""
        wanted = {
            "GITHUB_CLIENT_ID": self.settings.credentials.client_id,
            "GITHUB_CLIENT_SECRET": self.settings.credentials.client_secret,
            "PUBLIC_URL": self.settings.public_url,
            "SECRETS_KEY": self.settings.secrets_keys,
        }
        return [name for name, value in wanted.items() if not value]

    # Where things are, as the browser sees them.

    @property
    def base_path(self) -> str:
        """PUBLIC_URL's path ("" at the root): every link and cookie path starts with it."""
        return urlsplit(self.settings.public_url or "").path.rstrip("/")

    @property
    def redirect_uri(self) -> str:
        """Register it as a callback URL of the GitHub App (next to the chat and calendar ones)."""
        return f"{(self.settings.public_url or '').rstrip('/')}{CALLBACK_PATH}"

    @property
    def secure(self) -> bool:
        return (self.settings.public_url or "").lower().startswith("https://")

    @property
    def session_cookie(self) -> str:
        # On https at the root the __Host- prefix makes browsers refuse the cookie from anywhere else
        # (no Domain, Path=/, Secure): a sibling subdomain cannot plant a session.
        return "__Host-rs_session" if self.secure and not self.base_path else "rs_session"

    @property
    def session_cookie_path(self) -> str:
        return self.base_path or "/"

    @property
    def flow_cookie(self) -> str:
        return "rs_login"

    @property
    def form_cookie(self) -> str:
        return "rs_login_form"

    @property
    def flow_cookie_path(self) -> str:
        return self.base_path + LOGIN_PATH

    # The sign-in flow.

    def form_token(self) -> str:
        """The sign-in form's CSRF token (before any session: the same value goes in a cookie)."""
        return secrets.token_urlsafe(32)

    async def begin(self, next_path: str) -> tuple[str, str]:
        """GitHub's authorization URL, and the value the browser must bring back (its flow cookie)."""
        state, verifier, browser = secrets.token_urlsafe(32), secrets.token_urlsafe(64), secrets.token_urlsafe(32)
        now = self.clock()
        record = {
            "verifier": self.box.encrypt(verifier).decode("ascii"),
            "browser": digest(browser),
            "next": safe_next(next_path),
            "expires": (now + FLOW_TTL).isoformat(),
        }
        await self.store.set_value(_FLOW + digest(state), json.dumps(record), now=now)
        await self._sweep(_FLOW, now)
        params = {
            "client_id": self.settings.credentials.client_id or "",
            "redirect_uri": self.redirect_uri,
            "state": state,
            "allow_signup": "false",
            "code_challenge": challenge(verifier),
            "code_challenge_method": "S256",
        }
        return f"{self.settings.github_url.rstrip('/')}/login/oauth/authorize?{urlencode(params)}", browser

    async def finish(self, state: str, code: str, browser: str | None) -> tuple[str, str]:
        """GitHub came back: a new session; its cookie value, and the path to go to."""
        key = _FLOW + digest(state)
        raw = await self.store.get_value(key) if state else None
        # Spent before anything else: the same answer from GitHub cannot be used twice.
        if raw is None or not await self.store.delete_value(key):
            raise SignInFailed(400, "This sign-in is not known", "It is out of date or already used. Sign in again.")
        record: dict[str, Any] = json.loads(raw)
        if datetime.fromisoformat(record["expires"]) <= self.clock():
            raise SignInFailed(400, "This sign-in has expired", "Finish a sign-in within 10 minutes. Sign in again.")
        if not browser or not hmac.compare_digest(record["browser"], digest(browser)):
            log.warning("dashboard sign-in came back to another browser")
            raise SignInFailed(
                403,
                "This sign-in began in another browser",
                "GitHub's answer came back to a browser that did not start the sign-in, so nobody was signed in. "
                "Never finish a sign-in from a link someone sent you.",
            )
        if not code:
            raise SignInFailed(400, "GitHub sent no code", "Nobody was signed in. Sign in again.")
        verifier = self.box.decrypt(record["verifier"].encode("ascii"), name="sign-in state")
        answer = await self._token_request({"code": code, "redirect_uri": self.redirect_uri, "code_verifier": verifier})
        token = str(answer["access_token"])
        try:
            login = await self._login(token)
            repos = await self._accessible(token)
        except _AccessEnded:
            raise SignInFailed(502, "GitHub refused the new sign-in", "Try again in a minute.") from None
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        expires = now + SESSION_TTL
        doc = {
            "login": login,
            "csrf": secrets.token_urlsafe(32),
            "created": now.isoformat(),
            "expires": expires.isoformat(),
            "tokens": self._seal_tokens(answer, now),
            "repos": list(repos),
            "repos_at": now.isoformat(),
        }
        await self.store.set_value(_SESSION + digest(session_id), json.dumps(doc), now=now)
        await self._sweep(_SESSION, now)
        log.info("signed in to the dashboard", extra={"login": login, "repos": len(repos)})
        cookie = self.box.encrypt(json.dumps({"sid": session_id, "exp": expires.isoformat()})).decode("ascii")
        return cookie, str(record["next"])

    # Sessions.

    async def session(self, cookie: str | None) -> WebSession | None:
        """The signed-in person of a cookie (None: nobody, expired, signed out or revoked); their repositories
        are re-read from GitHub when older than REPOS_TTL. Raises SignInFailed when GitHub cannot say and the
        last answer is too old to trust."""
        session_id = self._open_cookie(cookie)
        if session_id is None:
            return None
        key_digest = digest(session_id)
        doc = await self._record(key_digest)
        if doc is None:
            return None
        if self._stale(doc):
            doc = await self._recheck(key_digest)
            if doc is None:
                return None
        return self._session(key_digest, doc)

    async def end(self, session: WebSession) -> None:
        await self.store.delete_value(_SESSION + session.digest)
        log.info("signed out of the dashboard", extra={"login": session.login})

    def session_max_age(self) -> int:
        return int(SESSION_TTL.total_seconds())

    def _open_cookie(self, cookie: str | None) -> str | None:
        if not cookie or not self.box.configured or len(cookie) > 1000:
            return None
        try:
            doc = json.loads(self.box.decrypt(cookie.encode("ascii", "replace"), name="session cookie"))
            session_id, expires = str(doc["sid"]), datetime.fromisoformat(str(doc["exp"]))
        except (SecretUnreadable, ValueError, KeyError, TypeError):
            return None  # not ours (or made with a key no longer configured)
        return session_id if expires > self.clock() else None

    async def _record(self, key_digest: str) -> dict[str, Any] | None:
        raw = await self.store.get_value(_SESSION + key_digest)
        if raw is None:
            return None
        doc: dict[str, Any] = json.loads(raw)
        if datetime.fromisoformat(doc["expires"]) <= self.clock():
            await self.store.delete_value(_SESSION + key_digest)
            return None
        return doc

    def _session(self, key_digest: str, doc: dict[str, Any]) -> WebSession:
        return WebSession(
            digest=key_digest,
            login=str(doc["login"]),
            csrf=str(doc["csrf"]),
            repos=tuple(doc["repos"]),
            expires=datetime.fromisoformat(doc["expires"]),
        )

    async def _recheck(self, key_digest: str) -> dict[str, Any] | None:
        """Ask GitHub again what the person may see (refreshing their token first when it expired)."""
        owner = secrets.token_hex(8)
        lease = _LEASE + key_digest
        for _ in range(50):
            if await self.store.acquire_lease(lease, owner, now=self.clock(), seconds=30):
                break
            await asyncio.sleep(0.1)
        else:  # another request has been re-reading it for 5 s: GitHub is slow; use the last answer if still fair
            doc = await self._record(key_digest)
            if doc is not None and not self._trusted(doc):
                raise _unavailable()
            return doc
        try:
            doc = await self._record(key_digest)
            if doc is None or not self._stale(doc):
                return doc  # gone, or re-read while we waited
            try:
                token = await self._fresh_token(key_digest, doc)
                repos = await self._accessible(token)
            except _AccessEnded:
                log.info("dashboard session ended: github refused the token", extra={"login": doc["login"]})
                await self.store.delete_value(_SESSION + key_digest)
                return None
            except SignInFailed:
                if not self._trusted(doc):
                    raise _unavailable() from None
                log.warning("github unreachable; using the repositories read at %s", doc["repos_at"])
                # Not on every page while GitHub is down: each try may take the whole timeout.
                doc["recheck_after"] = (self.clock() + RETRY_AFTER).isoformat()
                await self.store.set_value(_SESSION + key_digest, json.dumps(doc), now=self.clock())
                return doc
            now = self.clock()
            doc |= {"repos": list(repos), "repos_at": now.isoformat()}
            doc.pop("recheck_after", None)
            await self.store.set_value(_SESSION + key_digest, json.dumps(doc), now=now)
            return doc
        finally:
            await self.store.release_lease(lease, owner)

    def _stale(self, doc: dict[str, Any]) -> bool:
        now = self.clock()
        if now - datetime.fromisoformat(doc["repos_at"]) < REPOS_TTL:
            return False
        retry = doc.get("recheck_after")
        return retry is None or datetime.fromisoformat(retry) <= now or not self._trusted(doc)

    def _trusted(self, doc: dict[str, Any]) -> bool:
        return self.clock() - datetime.fromisoformat(doc["repos_at"]) < REPOS_GRACE

    async def _fresh_token(self, key_digest: str, doc: dict[str, Any]) -> str:
        tokens = json.loads(self.box.decrypt(doc["tokens"].encode("ascii"), name="dashboard user token"))
        expires = tokens.get("expires_at")
        if expires is None or datetime.fromisoformat(expires) - REFRESH_MARGIN > self.clock():
            return str(tokens["access_token"])
        refresh = tokens.get("refresh_token")
        if not isinstance(refresh, str):
            raise _AccessEnded
        answer = await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh})
        doc["tokens"] = self._seal_tokens(answer, self.clock())
        await self.store.set_value(_SESSION + key_digest, json.dumps(doc), now=self.clock())
        return str(answer["access_token"])

    def _seal_tokens(self, answer: dict[str, Any], now: datetime) -> str:
        kept: dict[str, Any] = {"access_token": answer["access_token"]}
        if isinstance(answer.get("expires_in"), int):
            kept["expires_at"] = (now + timedelta(seconds=answer["expires_in"])).isoformat()
        if isinstance(answer.get("refresh_token"), str):
            kept["refresh_token"] = answer["refresh_token"]
        return self.box.encrypt(json.dumps(kept)).decode("ascii")

    async def _sweep(self, prefix: str, now: datetime) -> None:
        """Forget some expired records (abandoned sign-ins, sessions nobody signed out of)."""
        for key, value in await self.store.list_values(prefix, limit=100):
            try:
                expired = datetime.fromisoformat(json.loads(value)["expires"]) <= now
            except (ValueError, KeyError, TypeError):
                expired = True
            if expired:
                await self.store.delete_value(key)

    # GitHub.

    async def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        form = {
            "client_id": self.settings.credentials.client_id or "",
            "client_secret": self.settings.credentials.client_secret or "",
            **form,
        }
        url = f"{self.settings.github_url.rstrip('/')}/login/oauth/access_token"
        status, answer, _ = await _call("POST", url, data=form, headers={"Accept": "application/json"})
        if status == 200 and isinstance(answer, dict) and isinstance(answer.get("access_token"), str):
            return answer
        error = str(answer.get("error", "")) if isinstance(answer, dict) else ""
        if error in ("incorrect_client_credentials", "redirect_uri_mismatch"):
            log.error("github refused the bot's OAuth client (%s): check GITHUB_CLIENT_ID/SECRET and the App", error)
        if error == "bad_refresh_token":
            raise _AccessEnded
        if status >= 500:
            raise SignInFailed(502, "GitHub failed", f"GitHub answered HTTP {status}; nobody was signed in.")
        raise SignInFailed(400, "GitHub refused the sign-in", f"GitHub did not accept it ({error or status}).")

    def _api_headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        }

    async def _login(self, token: str) -> str:
        status, user, _ = await _call(
            "GET", f"{self.settings.github_api_url.rstrip('/')}/user", headers=self._api_headers(token)
        )
        if status == 401:
            raise _AccessEnded
        login = user.get("login") if status == 200 and isinstance(user, dict) else None
        if not isinstance(login, str) or not login:
            raise SignInFailed(502, "GitHub failed", f"GitHub did not say who signed in (HTTP {status}).")
        return login

    async def _accessible(self, token: str) -> tuple[str, ...]:
        """The repositories of this App's installations that GitHub says the person can access."""
        api = self.settings.github_api_url.rstrip("/")
        names: dict[str, str] = {}
        for installation in await self._pages(f"{api}/user/installations", "installations", token):
            app_id = installation.get("app_id")
            own = self.settings.credentials.app_id
            if own is not None and app_id not in (None, own):
                continue
            url = f"{api}/user/installations/{int(installation['id'])}/repositories"
            for repo in await self._pages(url, "repositories", token):
                name = repo.get("full_name")
                if isinstance(name, str):
                    names.setdefault(name.lower(), name)
        return tuple(sorted(names.values(), key=str.lower))

    async def _pages(self, url: str, key: str, token: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_url: str | None = f"{url}?per_page=100"
        for _ in range(MAX_PAGES):
            if next_url is None:
                break
            status, body, links = await _call("GET", next_url, headers=self._api_headers(token))
            if status in (401, 403):
                raise _AccessEnded
            if status == 404 and key == "repositories":
                return items  # the installation went away, or the person lost access to it, meanwhile
            if status != 200 or not isinstance(body, dict) or not isinstance(body.get(key), list):
                raise SignInFailed(502, "GitHub failed", f"GitHub did not list your {key} (HTTP {status}).")
            items += [item for item in body[key] if isinstance(item, dict)]
            next_url = links.get("next")
        return items


async def _call(method: str, url: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    """One request to GitHub: status, JSON body (None when not JSON), and the Link header's URLs by rel."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT}) as session,
            session.request(method, url, **kwargs) as resp,
        ):
            links = {str(rel): str(link["url"]) for rel, link in resp.links.items()}
            try:
                return resp.status, await resp.json(content_type=None), links
            except ValueError:
                return resp.status, None, links
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("github unreachable: %s", type(exc).__name__)
        raise SignInFailed(502, "GitHub could not be reached", "Try again in a minute.") from exc
