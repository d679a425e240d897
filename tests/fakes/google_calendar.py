"""A fake Google: Calendar API v3 (events, free/busy) and its OAuth 2.0 server, on 127.0.0.1.

Strict where Google is, so the real client (google-api-python-client + google-auth) is what gets
tested: requests are checked against the request schemas and parameters of the discovery document
bundled with the client library (unknown properties or parameters are answered 400 and listed in
`violations`), answers are checked against its response schemas, every calendar call needs a bearer
token the fake issued, and calendars have ACLs: an account sees only what it was shared.

    fake = FakeGoogle(); await fake.start()
    sa = fake.add_service_account("bot@proj.iam.gserviceaccount.com")   # sa.key_json for settings
    fake.add_calendar("deploys@example.com", acl={sa.email: "writer"})
    ...  # the bot runs with google_calendar_api_url=fake.url
    assert [c.json for c in fake.calendar_calls("POST")] == [...]
    assert fake.violations == []
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode
from zoneinfo import ZoneInfo

import googleapiclient
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.server import LocalServer

DISCOVERY: dict[str, Any] = json.loads(
    (Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "calendar.v3.json").read_text()
)
KNOWN_SCOPES = frozenset(DISCOVERY["auth"]["oauth2"]["scopes"])
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token")
TOKEN_TTL = 3599
CODE_TTL = 600
ROLES = ("none", "freeBusyReader", "reader", "writer", "owner")

# Which token scopes allow what (Google's scope documentation), by the kind of call.
_SCOPES_FOR = {
    "freebusy": {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/calendar.freebusy",
        "https://www.googleapis.com/auth/calendar.events.freebusy",
    },
    "read": {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.events.readonly",
    },
    "write": {"https://www.googleapis.com/auth/calendar", "https://www.googleapis.com/auth/calendar.events"},
}
_METHODS = {  # discovery method id -> (kind of call, least role on the calendar)
    "calendar.freebusy.query": ("freebusy", "freeBusyReader"),
    "calendar.events.list": ("read", "reader"),
    "calendar.events.get": ("read", "reader"),
    "calendar.events.insert": ("write", "writer"),
    "calendar.events.patch": ("write", "writer"),
    "calendar.events.delete": ("write", "writer"),
}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")  # base32hex, as Google requires of client-chosen ids
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class GoogleError(Exception):
    """Answered as Google's JSON error body."""

    def __init__(self, status: int, reason: str, message: str, *, domain: str = "global") -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.domain = status, reason, message, domain

    def response(self) -> web.Response:
        error: dict[str, Any] = {
            "code": self.status,
            "message": self.message,
            "errors": [{"domain": self.domain, "reason": self.reason, "message": self.message}],
        }
        if self.status in _STATUS_NAMES:  # Google's calendar 410s carry no canonical status
            error["status"] = _STATUS_NAMES[self.status]
        return web.json_response({"error": error}, status=self.status)


class OAuthError(Exception):
    """Answered as an OAuth 2.0 token endpoint error (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@dataclass
class ServiceAccount:
    email: str
    key_json: str  # the key file Google Cloud hands out, token_uri pointing at the fake
    public_key_pem: bytes
    key_id: str
    disabled: bool = False  # a deleted or disabled key: token requests fail with invalid_grant


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclass
class Grant:
    """What a refresh token stands for."""

    account: str
    client_id: str
    scopes: tuple[str, ...]
    revoked: bool = False


@dataclass
class AccessToken:
    account: str
    scopes: tuple[str, ...]
    expires: float
    refresh_token: str | None = None


@dataclass
class AuthCode:
    client_id: str
    account: str
    redirect_uri: str
    challenge: str
    scopes: tuple[str, ...]
    offline: bool
    expires: float
    used: bool = False


@dataclass
class Consent:
    """What the person at the consent screen does: sign in as `account` and allow `scopes` (None:
    everything asked for; a subset models unticked boxes), or `deny`."""

    account: str | None = None
    scopes: tuple[str, ...] | None = None
    deny: bool = False


@dataclass
class Calendar:
    id: str
    acl: dict[str, str]  # account (service account email or person's email) -> role
    time_zone: str = "UTC"
    events: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    account: str | None = None  # whose token the call carried
    status: int = 0


@functools.cache
def _rsa_key(email: str) -> rsa.RSAPrivateKey:
    # RSA generation takes a moment; tests reuse one key per service account address.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeGoogle(LocalServer):
    """The fake Google. Knobs: `consent`, `page_size` (events per list page), `fail_next(...)`."""

    def __init__(self) -> None:
        self.url = ""
        self.service_accounts: dict[str, ServiceAccount] = {}
        self.clients: dict[str, OAuthClient] = {}
        self.calendars: dict[str, Calendar] = {}
        self.grants: dict[str, Grant] = {}  # refresh token -> grant
        self.tokens: dict[str, AccessToken] = {}
        self.codes: dict[str, AuthCode] = {}
        self.consent = Consent()
        self.page_size = 250
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self._failures: dict[str, list[tuple[int, str]]] = {"calendar": [], "token": []}
        self._method_failures: dict[str, list[tuple[int, str]]] = {}

    # Life cycle.

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/calendar/v3/{tail:.*}", self._calendar)
        app.router.add_post("/token", self._token)
        app.router.add_get("/o/oauth2/v2/auth", self._authorize)

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def auth_url(self) -> str:
        return f"{self.url}/o/oauth2/v2/auth"

    # Arrange.

    def add_service_account(self, email: str = "release-bot@deploys.iam.gserviceaccount.com") -> ServiceAccount:
        key = _rsa_key(email)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_id = hashlib.sha1(public).hexdigest()  # an identifier, as Google's are
        info = {
            "type": "service_account",
            "project_id": email.split("@")[1].split(".")[0],
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": str(int(key_id[:15], 16)),
            "auth_uri": self.auth_url,
            "token_uri": self.token_url,
            "universe_domain": "googleapis.com",
        }
        account = ServiceAccount(email=email, key_json=json.dumps(info), public_key_pem=public, key_id=key_id)
        self.service_accounts[email] = account
        return account

    def add_oauth_client(self, client_id: str, client_secret: str, *redirect_uris: str) -> OAuthClient:
        client = OAuthClient(client_id, client_secret, redirect_uris)
        self.clients[client_id] = client
        return client

    def add_calendar(self, calendar_id: str, *, acl: dict[str, str], time_zone: str = "UTC") -> Calendar:
        for role in acl.values():
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}: one of {ROLES}")
        calendar = Calendar(calendar_id, dict(acl), time_zone)
        self.calendars[calendar_id] = calendar
        return calendar

    def add_event(self, calendar_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """An event a person made in the Google Calendar UI; `id` is made up when absent."""
        calendar = self.calendars[calendar_id]
        body = {"id": secrets.token_hex(13), **event}
        stored = self._new_event(calendar, body, creator=calendar_id)
        calendar.events[stored["id"]] = stored
        return stored

    def delete_event(self, calendar_id: str, event_id: str) -> None:
        """A person deletes the event: Google keeps it, cancelled, under the same id."""
        self._touch(self.calendars[calendar_id].events[event_id])["status"] = "cancelled"

    def grant_refresh_token(self, account: str, client_id: str, scopes: Iterable[str]) -> str:
        """A refresh token as if `account` had consented earlier (no browser in the way)."""
        token = "1//" + secrets.token_urlsafe(48)
        self.grants[token] = Grant(account, client_id, tuple(scopes))
        return token

    def revoke(self, refresh_token: str) -> None:
        """The person removes the app's access: the refresh token and its access tokens stop working."""
        self.grants[refresh_token].revoked = True
        for token in [t for t, a in self.tokens.items() if a.refresh_token == refresh_token]:
            del self.tokens[token]

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 403,
        reason: str = "rateLimitExceeded",
        target: str = "calendar",
        method_id: str | None = None,
    ) -> None:
        """The next `count` authenticated calendar calls (or token requests) fail with status/reason;
        with `method_id` ("calendar.events.patch") only calls of that API method."""
        if method_id is not None:
            self._method_failures.setdefault(method_id, []).extend([(status, reason)] * count)
            return
        self._failures[target].extend([(status, reason)] * count)

    # Assert.

    def calendar_calls(self, method: str | None = None) -> list[Recorded]:
        return [
            r for r in self.requests if r.path.startswith("/calendar/v3/") and (method is None or r.method == method)
        ]

    def writes(self) -> list[Recorded]:
        return [
            r
            for r in self.calendar_calls()
            if r.method in ("POST", "PATCH", "PUT", "DELETE") and "freeBusy" not in r.path
        ]

    # Calendar API.

    async def _calendar(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        record = Recorded(request.method, request.path, dict(request.query), json=body)
        self.requests.append(record)
        try:
            record.account = self._bearer(request)
            response = self._dispatch(request, record, body)
        except GoogleError as exc:
            response = exc.response()
        record.status = response.status
        return response

    def _bearer(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise GoogleError(401, "required", "Login Required.")
        token = self.tokens.get(header.removeprefix("Bearer "))
        if token is None or token.expires < time.time():
            raise GoogleError(401, "authError", "Invalid Credentials")
        return token.account

    def _dispatch(self, request: web.Request, record: Recorded, body: Any) -> web.Response:
        segments = [unquote(s) for s in request.rel_url.raw_path.removeprefix("/calendar/v3/").split("/")]
        method_id, params = _route(request.method, segments)
        if method_id is None:
            self.violations.append(f"{request.method} {request.path}: no such Calendar API method")
            raise GoogleError(404, "notFound", "Not Found")
        if method_id not in _METHODS:
            self.violations.append(f"{method_id}: not implemented by the fake")
            raise GoogleError(501, "notImplemented", f"{method_id} is not implemented by the fake")
        queue = self._method_failures.get(method_id) or self._failures["calendar"]
        if queue:
            status, reason = queue.pop(0)
            domain = "usageLimits" if "Limit" in reason else "global"
            raise GoogleError(status, reason, _FAILURE_MESSAGES.get(reason, "Backend Error"), domain=domain)
        method = _discovery_method(method_id)
        problems = _check_query(method, request.query)
        if "request" in method:
            if not isinstance(body, dict):
                problems.append("the body must be a JSON object")
            else:
                problems += _check(body, method["request"], "body", method_id=method_id)
        elif body not in (None, ""):
            problems.append(f"{method_id} takes no body")
        if problems:
            self.violations += [f"{method_id}: {p}" for p in problems]
            raise GoogleError(400, "invalid", "; ".join(problems))
        kind, _ = _METHODS[method_id]
        token = self.tokens[request.headers["Authorization"].removeprefix("Bearer ")]
        if not _SCOPES_FOR[kind] & set(token.scopes):
            raise GoogleError(403, "insufficientPermissions", "Request had insufficient authentication scopes.")
        assert record.account is not None
        handler = getattr(self, "_" + method_id.removeprefix("calendar.").replace(".", "_"))
        answer: web.Response = handler(record.account, params, request.query, body)
        if "response" in method and answer.body is not None:
            assert isinstance(answer.body, bytes)
            shown = json.loads(answer.body)
            self.violations += [f"{method_id} answer: {p}" for p in _check(shown, method["response"], "answer")]
        return answer

    def _calendar_for(self, account: str, calendar_id: str, method_id: str) -> Calendar:
        if calendar_id == "primary":
            calendar_id = account
        calendar = self.calendars.get(calendar_id)
        role = calendar.acl.get(account, "none") if calendar is not None else "none"
        if calendar is None or role == "none":
            raise GoogleError(404, "notFound", "Not Found")
        need = _METHODS[method_id][1]
        if ROLES.index(role) < ROLES.index(need):
            raise GoogleError(403, "requiredAccessLevel", f"You need to have {need} access to this calendar.")
        return calendar

    def _events_insert(self, account: str, params: dict[str, str], query: Any, body: dict[str, Any]) -> web.Response:
        calendar = self._calendar_for(account, params["calendarId"], "calendar.events.insert")
        if "id" in body:
            if not _EVENT_ID.match(body["id"]):
                raise GoogleError(400, "invalid", "Invalid resource id value.")
            if body["id"] in calendar.events:  # cancelled ones keep their id too
                raise GoogleError(409, "duplicate", "The requested identifier already exists.")
        stored = self._new_event(calendar, {"id": secrets.token_hex(13), **body}, creator=account)
        calendar.events[stored["id"]] = stored
        return web.json_response(stored)

    def _events_get(self, account: str, params: dict[str, str], query: Any, body: None) -> web.Response:
        calendar = self._calendar_for(account, params["calendarId"], "calendar.events.get")
        event = calendar.events.get(params["eventId"])
        if event is None:
            raise GoogleError(404, "notFound", "Not Found")
        return web.json_response(event)

    def _events_patch(self, account: str, params: dict[str, str], query: Any, body: dict[str, Any]) -> web.Response:
        calendar = self._calendar_for(account, params["calendarId"], "calendar.events.patch")
        event = calendar.events.get(params["eventId"])
        if event is None:
            raise GoogleError(404, "notFound", "Not Found")
        if body.get("id", event["id"]) != event["id"]:
            raise GoogleError(400, "invalid", "The event id cannot be changed.")
        patched = _merge(event, body)
        patched["start"], patched["end"] = (_in_zone(patched[k], calendar.time_zone) for k in ("start", "end"))
        _check_times(patched)
        if patched["start"] != event["start"] or patched["end"] != event["end"]:
            patched["sequence"] = event["sequence"] + 1
        calendar.events[event["id"]] = self._touch(patched)
        return web.json_response(patched)

    def _events_delete(self, account: str, params: dict[str, str], query: Any, body: None) -> web.Response:
        calendar = self._calendar_for(account, params["calendarId"], "calendar.events.delete")
        event = calendar.events.get(params["eventId"])
        if event is None:
            raise GoogleError(404, "notFound", "Not Found")
        if event["status"] == "cancelled":
            raise GoogleError(410, "deleted", "Resource has been deleted")
        self._touch(event)["status"] = "cancelled"
        return web.Response(status=204)

    def _events_list(self, account: str, params: dict[str, str], query: Any, body: None) -> web.Response:
        calendar = self._calendar_for(account, params["calendarId"], "calendar.events.list")
        single = query.get("singleEvents") == "true"
        if query.get("orderBy") == "startTime" and not single:
            raise GoogleError(400, "invalid", "The requested ordering is not available for the particular query.")
        low = _parse(query["timeMin"]) if "timeMin" in query else None
        high = _parse(query["timeMax"]) if "timeMax" in query else None
        if low is not None and high is not None and high <= low:
            raise GoogleError(400, "timeRangeEmpty", "The specified time range is empty.")
        show_deleted = query.get("showDeleted") == "true"
        zone = ZoneInfo(calendar.time_zone)
        chosen = []
        for event in calendar.events.values():
            if event["status"] == "cancelled" and not show_deleted:
                continue
            start, end = _span(event, zone)
            # Google: timeMin bounds the end (exclusive), timeMax the start (exclusive).
            if (low is None or end > low) and (high is None or start < high):
                chosen.append((start, event))
        chosen.sort(key=lambda pair: pair[0])
        size = min(self.page_size, int(query.get("maxResults", 250)), 2500)
        offset = int(base64.urlsafe_b64decode(query["pageToken"]).decode()) if "pageToken" in query else 0
        page: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{secrets.token_hex(8)}"',
            "summary": calendar.id,
            "updated": _stamp(datetime.now(UTC)),
            "timeZone": calendar.time_zone,
            "accessRole": calendar.acl[account],
            "defaultReminders": [],
            "items": [event for _, event in chosen[offset : offset + size]],
        }
        if offset + size < len(chosen):
            page["nextPageToken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        return web.json_response(page)

    def _freebusy_query(self, account: str, params: dict[str, str], query: Any, body: dict[str, Any]) -> web.Response:
        for name in ("timeMin", "timeMax"):
            if name not in body:
                raise GoogleError(400, "required", f"Missing {name} parameter.")
        low, high = _parse(body["timeMin"]), _parse(body["timeMax"])
        if high <= low:
            raise GoogleError(400, "timeRangeEmpty", "The specified time range is empty.")
        answer: dict[str, Any] = {}
        for item in body.get("items", []):
            wanted = item["id"]
            try:
                calendar = self._calendar_for(account, wanted, "calendar.freebusy.query")
            except GoogleError:
                answer[wanted] = {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}
                continue
            zone = ZoneInfo(calendar.time_zone)
            spans = sorted(
                _span(e, zone)
                for e in calendar.events.values()
                if e["status"] != "cancelled" and e.get("transparency", "opaque") == "opaque"
            )
            busy: list[list[datetime]] = []
            for start, end in spans:
                start, end = max(start, low), min(end, high)
                if start >= end:
                    continue
                if busy and start <= busy[-1][1]:
                    busy[-1][1] = max(busy[-1][1], end)
                else:
                    busy.append([start, end])
            answer[wanted] = {"busy": [{"start": _stamp(s), "end": _stamp(e)} for s, e in busy]}
        return web.json_response(
            {"kind": "calendar#freeBusy", "timeMin": body["timeMin"], "timeMax": body["timeMax"], "calendars": answer}
        )

    def _new_event(self, calendar: Calendar, body: dict[str, Any], *, creator: str) -> dict[str, Any]:
        now = _stamp(datetime.now(UTC))
        eid = base64.urlsafe_b64encode(f"{body['id']} {calendar.id}".encode()).decode().rstrip("=")
        event: dict[str, Any] = {
            "kind": "calendar#event",
            "status": "confirmed",
            "htmlLink": f"https://www.google.com/calendar/event?eid={eid}",
            "created": now,
            "creator": {"email": creator},
            "organizer": {"email": calendar.id, "self": True},
            "iCalUID": f"{body['id']}@google.com",
            "sequence": 0,
            "reminders": {"useDefault": True},
            "eventType": "default",
            **body,
        }
        for key in ("start", "end"):
            if key not in event:
                raise GoogleError(400, "required", f"Missing {key} time.")
            event[key] = _in_zone(event[key], calendar.time_zone)
        _check_times(event)
        return self._touch(event)

    @staticmethod
    def _touch(event: dict[str, Any]) -> dict[str, Any]:
        event["updated"] = _stamp(datetime.now(UTC))
        event["etag"] = f'"{time.time_ns()}"'
        return event

    # OAuth 2.0.

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        record = Recorded(request.method, request.path, dict(request.query), form=form)
        self.requests.append(record)
        try:
            if request.content_type != "application/x-www-form-urlencoded":
                raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
            if self._failures["token"]:
                status, reason = self._failures["token"].pop(0)
                raise OAuthError(reason, "injected failure", status=status)
            grant_type = form.get("grant_type")
            if grant_type == JWT_BEARER:
                answer = self._jwt_grant(form)
            elif grant_type == "refresh_token":
                answer = self._refresh_grant(request, form)
            elif grant_type == "authorization_code":
                answer = self._code_grant(request, form)
            else:
                raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        except OAuthError as exc:
            record.status = exc.status
            return web.json_response({"error": exc.error, "error_description": exc.description}, status=exc.status)
        record.status = 200
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    def _issue(self, account: str, scopes: tuple[str, ...], refresh_token: str | None = None) -> str:
        token = "ya29." + secrets.token_urlsafe(32)
        self.tokens[token] = AccessToken(account, scopes, time.time() + TOKEN_TTL, refresh_token)
        return token

    def _jwt_grant(self, form: dict[str, str]) -> dict[str, Any]:
        assertion = form.get("assertion", "")
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise OAuthError("invalid_grant", "Invalid JWT.") from None
        account = self.service_accounts.get(str(claims.get("iss", "")))
        if account is None or account.disabled:
            raise OAuthError("invalid_grant", "Invalid grant: account not found")
        if header.get("kid") != account.key_id:
            raise OAuthError("invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(
                assertion,
                account.public_key_pem,
                algorithms=["RS256"],
                # google-auth always names Google's token endpoint, whatever the key file's token_uri.
                audience=[*GOOGLE_TOKEN_AUDIENCES, self.token_url],
                issuer=account.email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_grant", f"Invalid JWT: {exc}") from None
        if claims["exp"] - claims["iat"] > 3600:
            raise OAuthError("invalid_grant", "Invalid JWT: expiration is too far in the future.")
        scopes = tuple(str(claims["scope"]).split())
        if not scopes or not set(scopes) <= KNOWN_SCOPES:
            raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        return {"access_token": self._issue(account.email, scopes), "expires_in": TOKEN_TTL, "token_type": "Bearer"}

    def _client(self, request: web.Request, form: dict[str, str]) -> OAuthClient:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        basic = request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic.removeprefix("Basic ")).decode().partition(":")
        client = self.clients.get(client_id)
        if client is None or not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
            raise OAuthError("invalid_client", "Unauthorized", status=401)
        return client

    def _refresh_grant(self, request: web.Request, form: dict[str, str]) -> dict[str, Any]:
        client = self._client(request, form)
        refresh_token = form.get("refresh_token", "")
        grant = self.grants.get(refresh_token)
        if grant is None or grant.revoked or grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Token has been expired or revoked.")
        asked = tuple(form["scope"].split()) if "scope" in form else grant.scopes
        if not set(asked) <= set(grant.scopes):
            raise OAuthError("invalid_scope", "Some requested scopes were invalid.")
        token = self._issue(grant.account, asked, refresh_token)
        return {"access_token": token, "expires_in": TOKEN_TTL, "scope": " ".join(asked), "token_type": "Bearer"}

    def _code_grant(self, request: web.Request, form: dict[str, str]) -> dict[str, Any]:
        client = self._client(request, form)
        code = self.codes.get(form.get("code", ""))
        if code is None or code.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Malformed auth code.")
        if code.used or code.expires < time.time():
            raise OAuthError("invalid_grant", "Bad Request")
        code.used = True  # single use, even when the rest of this request is refused
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier", "")
        if not hmac.compare_digest(pkce_challenge(verifier).encode(), code.challenge.encode()):
            raise OAuthError("invalid_grant", "Invalid code verifier.")
        answer: dict[str, Any] = {"expires_in": TOKEN_TTL, "scope": " ".join(code.scopes), "token_type": "Bearer"}
        refresh_token = None
        if code.offline:
            refresh_token = self.grant_refresh_token(code.account, client.client_id, code.scopes)
            answer["refresh_token"] = refresh_token
        answer["access_token"] = self._issue(code.account, code.scopes, refresh_token)
        return answer

    async def _authorize(self, request: web.Request) -> web.Response:
        """The consent screen, decided by `self.consent`; answers as Google does, by redirecting."""
        query = dict(request.query)
        record = Recorded(request.method, request.path, query)
        self.requests.append(record)
        response = self._consent(query)
        record.status = response.status
        return response

    def _consent(self, query: dict[str, str]) -> web.Response:
        client = self.clients.get(query.get("client_id", ""))
        if client is None:
            return web.Response(status=401, text="Error 401: invalid_client")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return web.Response(status=400, text="Error 400: redirect_uri_mismatch")
        back: dict[str, str] = {"state": query["state"]} if "state" in query else {}
        asked = tuple(query.get("scope", "").split())
        problem = None
        if query.get("response_type") != "code":
            problem = "unsupported_response_type"
        elif not asked or not set(asked) <= KNOWN_SCOPES:
            problem = "invalid_scope"
        elif query.get("code_challenge_method") != "S256" or not re.fullmatch(
            r"[A-Za-z0-9._~-]{43,128}", query.get("code_challenge", "")
        ):
            problem = "invalid_request"
        elif self.consent.deny:
            problem = "access_denied"
        if problem is not None:
            return _redirect(redirect_uri, {"error": problem, **back})
        if self.consent.account is None:
            return web.Response(status=500, text="the fake has no consenting account: set fake.consent")
        granted = tuple(s for s in asked if self.consent.scopes is None or s in self.consent.scopes)
        code = "4/" + secrets.token_urlsafe(32)
        self.codes[code] = AuthCode(
            client_id=client.client_id,
            account=self.consent.account,
            redirect_uri=redirect_uri,
            challenge=query["code_challenge"],
            scopes=granted,
            offline=query.get("access_type") == "offline",
            expires=time.time() + CODE_TTL,
        )
        return _redirect(redirect_uri, {**back, "code": code, "scope": " ".join(granted)})


def _redirect(uri: str, params: dict[str, str]) -> web.Response:
    return web.Response(status=302, headers={"Location": f"{uri}?{urlencode(params)}"})


@pytest.fixture
async def fake_google() -> AsyncIterator[FakeGoogle]:
    """A started FakeGoogle with no state: arrange it with `add_service_account`, `add_calendar`, ..."""
    async with FakeGoogle() as fake:
        yield fake


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge for a PKCE code verifier (RFC 7636)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")


_FAILURE_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "backendError": "Backend Error",
}


def _discovery_method(method_id: str) -> dict[str, Any]:
    resource, name = method_id.split(".")[1:]
    method: dict[str, Any] = DISCOVERY["resources"][resource]["methods"][name]
    return method


def _route(http_method: str, segments: list[str]) -> tuple[str | None, dict[str, str]]:
    """Match a path (below calendar/v3/) to a discovery method id and its path parameters."""
    for resource in DISCOVERY["resources"].values():
        for method in resource.get("methods", {}).values():
            if method["httpMethod"] != http_method:
                continue
            template = method["path"].split("/")
            if len(template) != len(segments):
                continue
            params: dict[str, str] = {}
            for part, value in zip(template, segments, strict=True):
                if part.startswith("{") and part.endswith("}"):
                    params[part[1:-1]] = value
                elif part != value:
                    break
            else:
                return str(method["id"]), params
    return None, {}


def _check_query(method: dict[str, Any], query: Any) -> list[str]:
    problems = []
    known = {**DISCOVERY["parameters"], **method.get("parameters", {})}
    for name in set(query.keys()):
        spec = known.get(name)
        values = query.getall(name)
        if spec is None or spec.get("location") == "path":
            problems.append(f"unknown query parameter {name!r}")
            continue
        if len(values) > 1 and not spec.get("repeated"):
            problems.append(f"query parameter {name!r} given {len(values)} times")
        for value in values:
            if spec.get("type") == "boolean" and value not in ("true", "false"):
                problems.append(f"query parameter {name}={value!r} is not a boolean")
            elif spec.get("type") == "integer" and not value.isdigit():
                problems.append(f"query parameter {name}={value!r} is not an integer")
            elif "enum" in spec and value not in spec["enum"]:
                problems.append(f"query parameter {name}={value!r} is not one of {spec['enum']}")
            elif spec.get("format") == "date-time" and not _RFC3339.match(value):
                problems.append(f"query parameter {name}={value!r} is not an RFC 3339 time with an offset")
    for name, spec in method.get("parameters", {}).items():
        if spec.get("location") == "query" and spec.get("required") and name not in query:
            problems.append(f"missing required query parameter {name!r}")
    for name in ("timeMin", "timeMax", "updatedMin"):  # typed string in the document, RFC 3339 in fact
        if name in query and name in known and not _RFC3339.match(query[name]):
            problems.append(f"query parameter {name}={query[name]!r} is not an RFC 3339 time with an offset")
    return problems


def _check(value: Any, schema: dict[str, Any], where: str, *, method_id: str | None = None) -> list[str]:
    """Problems with `value` against a discovery schema: unknown properties, wrong types, bad formats,
    and properties the document marks as required for `method_id`."""
    if "$ref" in schema:
        schema = DISCOVERY["schemas"][schema["$ref"]]
    kind = schema.get("type")
    if value is None:
        return []  # JSON null clears a field in a patch
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where} must be an object"]
        problems = []
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                problems += _check(item, properties[key], f"{where}.{key}")
            elif extra is not None:
                problems += _check(item, extra, f"{where}.{key}")
            else:
                problems.append(f"unknown property {where}.{key}")
        if method_id is not None:
            for key, spec in properties.items():
                if method_id in spec.get("annotations", {}).get("required", []) and key not in value:
                    problems.append(f"{where}.{key} is required by {method_id}")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where} must be an array"]
        return [p for i, item in enumerate(value) for p in _check(item, schema.get("items", {}), f"{where}[{i}]")]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where} must be a string"]
        fmt = schema.get("format")
        if fmt == "date-time" and not _RFC3339.match(value):
            return [f"{where}={value!r} is not an RFC 3339 time with an offset"]
        if fmt == "date":
            try:
                date.fromisoformat(value)
            except ValueError:
                return [f"{where}={value!r} is not a yyyy-mm-dd date"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{where}={value!r} is not one of {schema['enum']}"]
        return []
    if kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        return [f"{where} must be an integer"]
    if kind == "boolean" and not isinstance(value, bool):
        return [f"{where} must be a boolean"]
    if kind == "number" and (not isinstance(value, int | float) or isinstance(value, bool)):
        return [f"{where} must be a number"]
    return []


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Google's patch semantics: objects merge, arrays and values replace, null clears."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse(text: str) -> datetime:
    if not _RFC3339.match(text):
        raise GoogleError(400, "invalid", f"Bad time: {text}")
    return datetime.fromisoformat(text).astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _in_zone(when: dict[str, Any], zone: str) -> dict[str, Any]:
    """Google answers a dateTime in the calendar's time zone, whatever offset it was given in."""
    if "dateTime" not in when:
        return dict(when)
    local = _parse(when["dateTime"]).astimezone(ZoneInfo(when.get("timeZone", zone)))
    return {**when, "dateTime": local.isoformat()}


def _span(event: dict[str, Any], zone: ZoneInfo) -> tuple[datetime, datetime]:
    def at(when: dict[str, Any]) -> datetime:
        if "dateTime" in when:
            return _parse(when["dateTime"])
        return datetime.combine(date.fromisoformat(when["date"]), datetime.min.time(), zone).astimezone(UTC)

    return at(event["start"]), at(event["end"])


def _check_times(event: dict[str, Any]) -> None:
    start, end = event["start"], event["end"]
    if ("date" in start) != ("date" in end) or not ({"date", "dateTime"} & start.keys()):
        raise GoogleError(400, "invalid", "Invalid start or end time.")
    first, last = _span(event, ZoneInfo("UTC"))
    if last <= first:
        raise GoogleError(400, "timeRangeEmpty", "The specified time range is empty.")
