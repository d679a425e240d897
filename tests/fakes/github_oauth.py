"""GitHub's user authorization web flow, as the fake serves it on its web host (not the REST API).

`GET /login/oauth/authorize` and `POST /login/oauth/access_token` live on `GITHUB_URL`, outside the
REST OpenAPI description, so the fake answers them before any OpenAPI matching, as GitHub's docs say:
"Generating a user access token for a GitHub App" (parameters, the token answer), "Troubleshooting
authorization request errors" (errors redirected back with `error`, `error_description`, `error_uri`
and `state`) and "Troubleshooting OAuth app access token request errors" (HTTP 200 with `error`).
PKCE (`code_challenge`, S256 only, and `code_verifier`) is GitHub's as of the 2025-07-14 changelog; the
error for a verifier that does not match is not documented, and the fake answers the one documented for
a code that "doesn't match what you received in the first request", `bad_verification_code`.

The person at the browser is a knob: `signed_in_as` (None: not signed in, the sign-in page is shown)
and `oauth_deny` (they press Cancel). A test registers the App's OAuth client with `add_oauth_app`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from tests.fakes._spec import Spec
from tests.fakes._state import State

AUTHORIZE_PATH = "/login/oauth/authorize"
ACCESS_TOKEN_PATH = "/login/oauth/access_token"
OAUTH_PATHS = frozenset({AUTHORIZE_PATH, ACCESS_TOKEN_PATH})
CODE_TTL = timedelta(minutes=10)  # "The code will expire after 10 minutes" (GitHub's OAuth docs)
USER_TOKEN_TTL = timedelta(hours=8)  # expires_in is "always 28800"
REFRESH_TOKEN_TTL = timedelta(seconds=15811200)  # refresh_token_expires_in is "always 15811200"

_AUTHORIZE_PARAMS = frozenset(
    {"client_id", "redirect_uri", "state", "login", "allow_signup", "prompt", "code_challenge", "code_challenge_method"}
)
_TOKEN_PARAMS = frozenset(
    {
        *("client_id", "client_secret", "code", "redirect_uri", "repository_id", "code_verifier", "grant_type"),
        "refresh_token",
    }
)
_AUTHORIZE_ERRORS = (
    "/apps/building-integrations/setting-up-and-registering-oauth-apps/troubleshooting-authorization-request-errors/"
)
_TOKEN_ERRORS = "/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
# (error, error_description, error_uri) exactly as GitHub's troubleshooting pages show them.
ACCESS_DENIED = ("access_denied", "The user has denied your application access.", _AUTHORIZE_ERRORS + "#access-denied")
AUTHORIZE_REDIRECT_MISMATCH = (
    "redirect_uri_mismatch",
    "The redirect_uri MUST match the registered callback URL for this application.",
    _AUTHORIZE_ERRORS + "#redirect-uri-mismatch",
)
INCORRECT_CLIENT_CREDENTIALS = (
    "incorrect_client_credentials",
    "The client_id and/or client_secret passed are incorrect.",
    _TOKEN_ERRORS + "#incorrect-client-credentials",
)
REDIRECT_URI_MISMATCH = (
    "redirect_uri_mismatch",
    "The redirect_uri MUST match the registered callback URL for this application.",
    "/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch2",
)
# "Refreshing user access tokens": an unknown, used or expired refresh token.
BAD_REFRESH_TOKEN = (
    "bad_refresh_token",
    "The refresh token passed is incorrect or expired.",
    "/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-refresh-token",
)
BAD_VERIFICATION_CODE = (
    "bad_verification_code",
    "The code passed is incorrect or expired.",
    _TOKEN_ERRORS + "#bad-verification-code",
)


@dataclass
class OAuthClient:
    """A GitHub App's OAuth client: its client id and secret, and its registered callback URLs."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    app_id: int | None = None


@dataclass
class OAuthGrant:
    """An authorization code GitHub handed out at /login/oauth/authorize."""

    code: str
    client_id: str
    login: str
    redirect_uri: str
    expires_at: datetime
    code_challenge: str | None


@dataclass
class UserToken:
    """A user access token (`ghu_`): acts as `login`, through the App of `client_id`."""

    token: str
    client_id: str
    login: str
    expires_at: datetime
    app_id: int | None = None


@dataclass
class WebRequest:
    """What the flow's handlers need from a request (the server records and parses it)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    form: dict[str, str] = field(default_factory=dict)


@dataclass
class WebReply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    json: Any = None  # the JSON answered, for the test's record


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode("ascii").rstrip("=")


class OAuthWebFlow(State):
    """GitHub's web host: the user authorization web flow and the user access tokens it issues."""

    violations: list[str]

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.signed_in_as: str | None = None  # who is signed in to GitHub in the test's browser
        self.oauth_deny = False  # the person presses Cancel on the authorization page
        self.user_token_ttl = USER_TOKEN_TTL
        self.oauth_apps: dict[str, OAuthClient] = {}
        self.oauth_grants: dict[str, OAuthGrant] = {}
        self.user_tokens: dict[str, UserToken] = {}
        self.refresh_tokens: dict[str, tuple[str, str]] = {}  # refresh token -> (client_id, login)
        self.refreshes = 0

    def add_oauth_app(
        self, client_id: str, client_secret: str, *redirect_uris: str, app_id: int | None = None
    ) -> OAuthClient:
        """Register an App's OAuth client with its callback URLs (GitHub allows up to 10; the first is
        the default when `redirect_uri` is left out)."""
        if not redirect_uris or len(redirect_uris) > 10:
            raise ValueError("a GitHub App has 1 to 10 callback URLs")
        if app_id is not None:
            self.apps[app_id].client_id = client_id
        client = OAuthClient(client_id, client_secret, tuple(redirect_uris), app_id)
        self.oauth_apps[client_id] = client
        return client

    def issue_user_token(self, client_id: str, login: str, *, ttl: timedelta | None = None) -> str:
        """A user access token, as if `login` had gone through the web flow (for tests that need no browser)."""
        client = self.oauth_apps[client_id]
        token = UserToken(
            token="ghu_" + secrets.token_urlsafe(27)[:36],
            client_id=client_id,
            login=login,
            expires_at=self.now() + (ttl if ttl is not None else self.user_token_ttl),
            app_id=client.app_id,
        )
        self.user_tokens[token.token] = token
        return token.token

    def oauth_web(self, request: WebRequest) -> WebReply:
        """Answer a request to one of OAUTH_PATHS."""
        if request.path == AUTHORIZE_PATH and request.method == "GET":
            return self._authorize(request.query)
        if request.path == ACCESS_TOKEN_PATH and request.method == "POST":
            return self._access_token(request)
        self.violations.append(f"{request.method} {request.path}: GitHub's web flow has no such request")
        return _page(404, "Not Found")

    def _authorize(self, query: dict[str, str]) -> WebReply:
        if unknown := sorted(set(query) - _AUTHORIZE_PARAMS):
            self.violations.append(f"GET {AUTHORIZE_PATH}: unknown parameters {unknown}")
        client = self.oauth_apps.get(query.get("client_id", ""))
        if client is None:
            self.violations.append(f"GET {AUTHORIZE_PATH}: no App has client_id {query.get('client_id')!r}")
            return _page(404, "Not Found")
        state = query.get("state")
        redirect_uri = query.get("redirect_uri") or client.redirect_uris[0]
        if redirect_uri not in client.redirect_uris:
            self.violations.append(f"GET {AUTHORIZE_PATH}: redirect_uri {redirect_uri!r} is not a callback URL")
            return _back(client.redirect_uris[0], state, error=AUTHORIZE_REDIRECT_MISMATCH)
        if query.get("allow_signup", "true") not in ("true", "false"):
            self.violations.append(f"GET {AUTHORIZE_PATH}: allow_signup must be true or false")
        challenge = query.get("code_challenge")
        if challenge is not None and query.get("code_challenge_method") != "S256":
            self.violations.append(f"GET {AUTHORIZE_PATH}: only the S256 code challenge method is accepted")
            return _page(400, "Only the S256 code challenge method is accepted")
        if self.signed_in_as is None:
            return _page(200, "Sign in to GitHub")  # the person would sign in first; the test's browser stops here
        if self.oauth_deny:
            return _back(redirect_uri, state, error=ACCESS_DENIED)
        grant = OAuthGrant(
            code=secrets.token_hex(10),
            client_id=client.client_id,
            login=self.signed_in_as,
            redirect_uri=redirect_uri,
            expires_at=self.now() + CODE_TTL,
            code_challenge=challenge,
        )
        self.oauth_grants[grant.code] = grant
        return _back(redirect_uri, state, code=grant.code)

    def _access_token(self, request: WebRequest) -> WebReply:
        params = {**request.query, **request.form}
        if unknown := sorted(set(params) - _TOKEN_PARAMS):
            self.violations.append(f"POST {ACCESS_TOKEN_PATH}: unknown parameters {unknown}")
        as_json = "application/json" in request.headers.get("accept", "")
        client = self.oauth_apps.get(params.get("client_id", ""))
        if client is None or not secrets.compare_digest(
            client.client_secret.encode(), params.get("client_secret", "").encode()
        ):
            return _token_answer(_error(INCORRECT_CLIENT_CREDENTIALS), as_json)
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is not None and redirect_uri not in client.redirect_uris:
            return _token_answer(_error(REDIRECT_URI_MISMATCH), as_json)
        if params.get("grant_type") == "refresh_token":
            return self._refresh(client, params.get("refresh_token", ""), as_json)
        grant = self.oauth_grants.pop(params.get("code", ""), None)  # a code works once, right or wrong
        if grant is None or grant.client_id != client.client_id or grant.expires_at <= self.now():
            return _token_answer(_error(BAD_VERIFICATION_CODE), as_json)
        if redirect_uri is not None and redirect_uri != grant.redirect_uri:
            return _token_answer(_error(REDIRECT_URI_MISMATCH), as_json)
        if grant.code_challenge is not None:
            verifier = params.get("code_verifier", "")
            if not verifier or pkce_challenge(verifier) != grant.code_challenge:
                return _token_answer(_error(BAD_VERIFICATION_CODE), as_json)
        return _token_answer(self._tokens(client.client_id, grant.login), as_json)

    def _tokens(self, client_id: str, login: str) -> dict[str, Any]:
        token = self.issue_user_token(client_id, login)
        refresh = "ghr_" + secrets.token_urlsafe(57)[:76]
        self.refresh_tokens[refresh] = (client_id, login)
        return {
            "access_token": token,
            "expires_in": int(self.user_token_ttl.total_seconds()),
            "refresh_token": refresh,
            "refresh_token_expires_in": int(REFRESH_TOKEN_TTL.total_seconds()),
            "scope": "",
            "token_type": "bearer",
        }

    def _refresh(self, client: OAuthClient, refresh_token: str, as_json: bool) -> WebReply:
        """A refresh token works once: the answer carries a new one (GitHub rotates them)."""
        owner = self.refresh_tokens.pop(refresh_token, None)
        if owner is None or owner[0] != client.client_id:
            return _token_answer(_error(BAD_REFRESH_TOKEN), as_json)
        self.refreshes += 1
        return _token_answer(self._tokens(client.client_id, owner[1]), as_json)

    def revoke_authorization(self, login: str) -> None:
        """The person revoked the App's authorization in their GitHub settings: their tokens stop working."""
        self.refresh_tokens = {k: v for k, v in self.refresh_tokens.items() if v[1] != login}
        self.user_tokens = {k: v for k, v in self.user_tokens.items() if v.login != login}


def parse_form(content_type: str, raw: bytes) -> dict[str, str]:
    if not raw or not content_type.startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))


def to_response(reply: WebReply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body or None, headers=reply.headers)


def _error(error: tuple[str, str, str]) -> dict[str, str]:
    return {"error": error[0], "error_description": error[1], "error_uri": error[2]}


def _token_answer(answer: dict[str, Any], as_json: bool) -> WebReply:
    # "The format of these responses is determined by the accept header you pass": form-encoded by default.
    if as_json:
        body = json.dumps(answer).encode()
        content_type = "application/json; charset=utf-8"
    else:
        body = urlencode(answer).encode()
        content_type = "application/x-www-form-urlencoded; charset=utf-8"
    return WebReply(200, {"Content-Type": content_type, "Cache-Control": "no-store"}, body, answer)


def _back(
    redirect_uri: str, state: str | None, *, code: str | None = None, error: tuple[str, str, str] | None = None
) -> WebReply:
    params: dict[str, str] = {"code": code} if code is not None else {}
    if error is not None:
        params.update(_error(error))
    if state is not None:
        params["state"] = state
    return WebReply(302, {"Location": f"{redirect_uri}?{urlencode(params)}"})


def _page(status: int, title: str) -> WebReply:
    body = f"<!doctype html><title>{html.escape(title)} - GitHub</title><h1>{html.escape(title)}</h1>\n"
    return WebReply(status, {"Content-Type": "text/html; charset=utf-8"}, body.encode())
