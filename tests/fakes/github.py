"""A stateful fake GitHub REST API that holds every request and response to the OpenAPI description.

One aiohttp server on 127.0.0.1. Each request is matched against the vendored description
(tests/fixtures/github/openapi.json): an unknown method + path, a body or query that breaks the
schema, and (the fake's own bugs) a response that breaks the schema are answered as GitHub would or
with a 500, and recorded in `violations`, so a test ends with `assert fake.violations == []`.
Authentication, rate limits, ETags and pagination behave like GitHub's. The layers below:
`_spec` (the description), `_state` (what the fake knows, and how tests arrange it), `_render`
(documented shapes), `_operations` (one handler per operation). GitHub's user authorization web flow
(`/login/oauth/...` on the web host, outside the REST description) is `github_oauth`, served first.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import jwt
from aiohttp import web

from tests.fakes._operations import Call, GitHubError, Operations, Page, Reply
from tests.fakes._spec import Operation, Spec, describe_error, load_spec
from tests.fakes._state import JSON, FakeApp, Principal, RateBucket, iso
from tests.fakes.github_oauth import OAUTH_PATHS, OAuthWebFlow, WebReply, WebRequest, parse_form, to_response
from tests.fakes.server import LocalServer

JWT_MAX_LIFETIME = timedelta(minutes=10)
JWT_CLOCK_SKEW = timedelta(seconds=60)


@dataclass
class RecordedRequest:
    """One request as the fake saw it, and what it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    form: dict[str, str] = field(default_factory=dict)  # a form-encoded body (the OAuth web flow)
    status: int = 0
    operation_id: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    response: Any = None  # the JSON answered (None for 204 and 304)


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    headers: dict[str, str]
    body: Any
    times: int
    after: bool = False  # served first, then the answer lost (a proxy's 502 after the write went through)


class FakeGitHub(LocalServer, OAuthWebFlow, Operations):
    """The fake GitHub. `await start()`, arrange state with the `add_*`/`set_*` methods (`_state`),
    point the bot at `url`, then assert on `requests`, `calls(...)`, the state and `violations == []`.

        fake.add_app(APP_ID, app_key.public_key_pem)
        fake.add_repo("octo-org/widgets")
        fake.add_installation(77, "octo-org", repos=["octo-org/widgets"])
        fake.add_pull("octo-org/widgets", 5, head_sha="a" * 40, labels=["release"])
        ...  # the bot runs against fake.url
        assert [c.json for c in fake.calls("issues/create-comment")] == [{"body": ...}]
        assert fake.violations == []

    Knobs: `token_ttl`, `rate_limit`, `clock` (a callable returning an aware datetime),
    `redelivery_status_code`, and `fail_next(...)` for faults. The web flow (`github_oauth`):
    `add_oauth_app(...)`, `signed_in_as`, `oauth_deny`, `user_token_ttl`, `issue_user_token(...)`.
    """

    def __init__(self, spec: Spec | None = None) -> None:
        super().__init__(spec or load_spec())
        self.violations: list[str] = []
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._request_numbers = itertools.count(1)
        self._handlers: dict[str, Callable[[Call], Reply | Page]] = {}
        for op in self.spec.operations:
            name = "_op_" + re.sub(r"[^a-z0-9]+", "_", op.operation_id)
            handler = getattr(self, name, None)
            if handler is None:
                raise NotImplementedError(f"fake GitHub has no handler for {op.operation_id}")
            self._handlers[op.operation_id] = handler

    def make_app(self) -> web.Application:
        return web.Application(client_max_size=32 * 1024 * 1024)

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        times: int = 1,
        after_serving: bool = False,
    ) -> None:
        """Answer the next `times` requests whose method matches (`"*"`: any) and whose path
        `re.search`es `path_regex` with `status`, `headers` and `body` instead of serving them; with
        `after_serving`, the request is carried out and only its answer is replaced (it got lost)."""
        fault = _Fault(method.upper(), re.compile(path_regex), status, headers or {}, body, times, after_serving)
        self._faults.append(fault)

    def calls(self, operation_id: str) -> list[RecordedRequest]:
        """The requests matched to an operation (either id of a compare, see `Spec.SAME_URLS`)."""
        same = self.spec.SAME_URLS
        canonical = same.get(operation_id, operation_id)
        wanted = {op_id for op_id in self.spec.by_id if same.get(op_id, op_id) == canonical}
        return [r for r in self.requests if r.operation_id in wanted]

    # Reading state back, rendered as the API would answer.

    def comment(self, comment_id: int) -> JSON:
        return self._comment_json(self.comments[comment_id])

    def comments_on(self, full_name: str, issue_number: int) -> list[JSON]:
        issue = self._issue_state(full_name, issue_number)
        return [self._comment_json(c) for c in self._comments_of(issue)]

    def labels_on(self, full_name: str, issue_number: int) -> list[str]:
        return list(self._issue_state(full_name, issue_number).labels)

    def check_run(self, check_run_id: int) -> JSON:
        return self._check_run_json(self.check_runs[check_run_id])

    def check_runs_for(self, full_name: str, head_sha: str) -> list[JSON]:
        return [
            self._check_run_json(run)
            for run in self.check_runs.values()
            if run.repo.lower() == full_name.lower() and run.head_sha == head_sha
        ]

    def pull(self, full_name: str, number: int) -> JSON:
        return self._pull_json(self._pull_state(full_name, number), full=True)

    def status(self, status_id: int) -> JSON:
        """A commit status as GET .../commits/{ref}/statuses lists it (a `status` webhook says the same)."""
        return self._status_json(self.statuses[status_id])

    def review(self, review_id: int) -> JSON:
        """A review as GET .../pulls/{n}/reviews lists it."""
        review = self.reviews[review_id]
        pull = self._pull_state(review.repo, review.number)
        [node] = [r for r in self._reviews_json(self._repo_state(review.repo), pull) if r["id"] == review_id]
        return node

    def reactions_on(self, comment_id: int) -> list[JSON]:
        return [self._reaction_json(r) for r in self.reactions.values() if r.comment_id == comment_id]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=None,
        )
        self.requests.append(record)
        if request.path in OAUTH_PATHS:  # GitHub's web host: not in the REST description
            return self._handle_web(request, record, raw)
        body: Any = None
        body_error: str | None = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body_error = f"body is not JSON: {exc}"
            record.json = body

        matched = self.spec.match(request.method, request.rel_url.raw_path)
        principal, auth_error = self._authenticate(request, matched[0] if matched else None)
        if matched is None:
            why = f"no operation {request.method} {request.path} in the OpenAPI description"
            self.violations.append(why)
            return self._send(record, principal, 404, {"message": "Not Found", "fake_github_error": why})
        op, params = matched
        record.operation_id = op.operation_id
        record.params = params

        fault = self._take_fault(request)
        if fault is not None and not fault.after:
            fault_body = fault.body if fault.body is not None else {"message": f"fault {fault.status}"}
            return self._send(record, principal, fault.status, fault_body, fault.headers)

        try:
            if auth_error is not None:
                raise GitHubError(401, "Bad credentials", why=auth_error)
            self._check_rate_limit(principal)
            if body_error is not None:
                self.violations.append(f"{op.operation_id}: {body_error}")
                raise GitHubError(400, "Problems parsing JSON", why=body_error)
            self._check_query(op, dict(request.query))
            self._check_body(op, body, raw)
            call = Call(op, params, dict(request.query), body, principal, request)
            result = self._handlers[op.operation_id](call)
            reply = self._paginate(call, result) if isinstance(result, Page) else result
        except GitHubError as error:
            reply = Reply(error.status, error.body(), error.headers)

        problems = self._response_problems(op, reply)
        if problems:
            why = f"{op.operation_id} answered {reply.status} that breaks its schema: {problems}"
            self.violations.append(why)
            reply = Reply(500, {"message": "fake GitHub bug", "fake_github_error": why})
        counted = reply.status != 401 and op.operation_id != "rate-limit/get"
        if fault is not None:  # served, and the answer lost on its way back
            reply = Reply(fault.status, fault.body if fault.body is not None else {"message": "lost"}, fault.headers)
        return self._send(record, principal, reply.status, reply.body, reply.headers, counted)

    def _handle_web(self, request: web.Request, record: RecordedRequest, raw: bytes) -> web.Response:
        record.form = parse_form(request.headers.get("Content-Type", ""), raw)
        fault = self._take_fault(request)
        if fault is not None:
            body = fault.body if fault.body is not None else {"message": f"fault {fault.status}"}
            headers = {"Content-Type": "application/json; charset=utf-8", **fault.headers}
            reply = WebReply(fault.status, headers, json.dumps(body).encode(), body)
        else:
            reply = self.oauth_web(
                WebRequest(request.method, request.path, dict(request.query), record.headers, record.form)
            )
        record.status = reply.status
        record.response = reply.json
        return to_response(reply)

    def _send(
        self,
        record: RecordedRequest,
        principal: Principal,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        counted: bool = False,
    ) -> web.Response:
        out = {
            "X-GitHub-Request-Id": self._request_id(),
            "X-GitHub-Media-Type": "github.v3; format=json",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
        }
        payload = b""
        if status != 204 and body is not None:
            payload = json.dumps(body, ensure_ascii=False).encode()
            out["Content-Type"] = "application/json; charset=utf-8"
        if record.method == "GET" and status == 200:
            etag = '"' + hashlib.sha256(payload).hexdigest() + '"'
            out["ETag"] = etag
            out["Cache-Control"] = "private, max-age=60, s-maxage=60"
            out["Vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
            wanted = record.headers.get("if-none-match", "")
            if etag in {tag.strip().removeprefix("W/") for tag in wanted.split(",")}:
                status, payload, counted = 304, b"", False
                out.pop("Content-Type", None)
        bucket = self._bucket(principal)
        if counted:
            bucket.remaining = max(bucket.remaining - 1, 0)
            bucket.used += 1
        out.update(self._rate_headers(bucket))
        out.update(headers or {})
        record.status = status
        record.response = body if payload else None
        return web.Response(status=status, body=payload or None, headers=out)

    def _request_id(self) -> str:
        n = next(self._request_numbers)
        return f"FAKE:{n:04X}:{secrets.token_hex(3).upper()}:{secrets.token_hex(3).upper()}:{n:08X}"

    def _take_fault(self, request: web.Request) -> _Fault | None:
        for fault in self._faults:
            if fault.method in ("*", request.method) and fault.pattern.search(request.path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _rate_headers(self, bucket: RateBucket) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": str(bucket.reset),
            "X-RateLimit-Used": str(bucket.used),
            "X-RateLimit-Resource": "core",
        }

    def _check_rate_limit(self, principal: Principal) -> None:
        if self._bucket(principal).remaining <= 0:
            who = (
                f"installation ID {principal.installation.installation_id}" if principal.installation else "this client"
            )
            raise GitHubError(403, f"API rate limit exceeded for {who}.")

    def _authenticate(self, request: web.Request, op: Operation | None) -> tuple[Principal, str | None]:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        scheme = scheme.lower()
        credential = credential.strip()
        needs = self._auth_kind(op)
        if needs == "none":
            return Principal("anonymous"), None
        if not header:
            if needs == "any":
                return Principal("anonymous"), None
            return Principal("anonymous"), "no Authorization header"
        if scheme not in ("bearer", "token"):
            return Principal("anonymous"), f"unknown Authorization scheme {scheme!r}"
        if credential.count(".") == 2 and scheme == "bearer":
            app, error = self._verify_jwt(credential)
            if app is None:
                return Principal("anonymous"), error
            if needs in ("installation", "user"):
                wanted = "an installation token" if needs == "installation" else "a user access token"
                return Principal("app", app=app), f"an App JWT cannot call this endpoint: use {wanted}"
            return Principal("app", app=app), None
        if credential in self.user_tokens:
            return self._authenticate_user(credential, op, needs)
        token = self.tokens.get(credential)
        if token is None:
            return Principal("anonymous"), "unknown token"
        installation = self.installations[token.installation_id]
        principal = Principal(
            "installation",
            app=self.apps.get(installation.app_id),
            installation=installation,
            token=token,
        )
        if token.expires_at <= self.now():
            return principal, f"installation token expired at {iso(token.expires_at)}"
        if needs == "app":
            return principal, "this endpoint needs an App JWT, not an installation token"
        return principal, None

    def _authenticate_user(
        self, credential: str, op: Operation | None, needs: Literal["app", "installation", "user", "any"]
    ) -> tuple[Principal, str | None]:
        user = self.user_tokens[credential]
        principal = Principal("user", app=self.apps.get(user.app_id) if user.app_id else None, user=user.login)
        if user.expires_at <= self.now():
            return principal, f"user access token expired at {iso(user.expires_at)}"
        if needs in ("user", "any"):
            return principal, None
        if needs == "app":
            return principal, "this endpoint needs an App JWT, not a user access token"
        # GitHub serves many of these to a user token (what both the App and the person may reach);
        # the fake does not model that, and says so rather than answer as if it did.
        name = op.operation_id if op is not None else "this endpoint"
        self.violations.append(f"{name}: the fake serves user access tokens on GET /user only")
        return principal, "the fake serves user access tokens on GET /user only"

    @staticmethod
    def _auth_kind(op: Operation | None) -> Literal["app", "installation", "user", "none", "any"]:
        if op is None or op.operation_id == "rate-limit/get":
            return "any"
        if op.operation_id == "users/get-authenticated" or op.template.startswith("/user/installations"):
            return "user"
        if op.operation_id == "apps/create-from-manifest":
            return "none"
        if op.template.startswith("/app/") or op.template == "/app":
            return "app"
        if op.operation_id == "apps/get-repo-installation":
            return "app"
        return "installation"

    def _verify_jwt(self, token: str) -> tuple[FakeApp | None, str]:
        # PyJWS checks only the signature: PyJWT's claim checks would refuse an integer `iss`,
        # which GitHub accepts, and the time rules below are GitHub's, not PyJWT's.
        jws = jwt.PyJWS()
        try:
            unverified = jws.decode_complete(token, options={"verify_signature": False})
            claims = json.loads(unverified["payload"])
        except (jwt.PyJWTError, ValueError) as exc:
            return None, f"A JSON web token could not be decoded ({exc})"
        if not isinstance(claims, dict):
            return None, "A JSON web token could not be decoded (payload is not an object)"
        if unverified["header"].get("alg") != "RS256":
            return None, f"JWT alg must be RS256, got {unverified['header'].get('alg')!r}"
        issuer = claims.get("iss")
        try:
            app = self.apps.get(int(issuer)) if isinstance(issuer, str | int) else None
        except ValueError:
            app = None
        if app is None:
            return None, f"'Issuer' claim ('iss') names no registered App: {issuer!r}"
        try:
            jws.decode_complete(token, app.public_key, algorithms=["RS256"])
        except jwt.PyJWTError as exc:
            return None, f"JWT signature does not verify with App {app.app_id}'s key ({exc})"
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            return None, "JWT needs numeric 'iat' and 'exp' claims"
        now = self.now().timestamp()
        if exp <= now:
            return None, "'Expiration time' claim ('exp') is in the past"
        if iat > now + JWT_CLOCK_SKEW.total_seconds():
            return None, "'Issued at' claim ('iat') is in the future"
        if exp - iat > JWT_MAX_LIFETIME.total_seconds():
            return None, "'Expiration time' claim ('exp') is too far in the future (max 10 min)"
        return app, ""

    def _check_query(self, op: Operation, query: dict[str, str]) -> None:
        errors: list[JSON] = []
        declared = op.query_params
        for name, value in query.items():
            param = declared.get(name)
            if param is None:
                # GitHub ignores it, so answer normally; but a typo is a bot bug worth seeing.
                self.violations.append(f"{op.operation_id}: unknown query parameter {name!r}")
                continue
            kind = param.schema.get("type")
            enum = param.schema.get("enum")
            if kind == "integer" and not re.fullmatch(r"-?[0-9]+", value):
                errors.append(self._field_error(op, name, f"{name} must be an integer"))
            elif kind == "boolean" and value not in ("true", "false"):
                errors.append(self._field_error(op, name, f"{name} must be true or false"))
            elif enum is not None and value not in enum:
                errors.append(self._field_error(op, name, f"{name} must be one of {enum}"))
            elif name == "per_page" and not 1 <= int(value) <= 100:
                errors.append(self._field_error(op, name, "per_page must be 1..100"))
        if errors:
            self.violations.append(f"{op.operation_id}: bad query {query}: {errors}")
            raise GitHubError(422, "Validation Failed", errors=errors)

    def _check_body(self, op: Operation, body: Any, raw: bytes) -> None:
        if not raw:
            if op.request_required:
                why = f"{op.operation_id}: request body is required"
                self.violations.append(why)
                raise GitHubError(
                    422,
                    "Validation Failed",
                    errors=[self._field_error(op, None, "request body is required", "missing")],
                )
            return
        if op.request_schema is None:
            self.violations.append(f"{op.operation_id}: sent a body, but the operation takes none")
            return
        found = op.request_errors(body)
        if not found:
            return
        errors = []
        for error in found:
            path = [str(p) for p in error.absolute_path]
            code = "invalid"
            if error.validator == "required":
                missing = re.match(r"'([^']+)'", error.message)
                path.append(missing.group(1) if missing else "?")
                code = "missing_field"
            errors.append(self._field_error(op, ".".join(path) or None, describe_error(error), code))
        self.violations.append(f"{op.operation_id}: request body breaks the schema: {errors}")
        raise GitHubError(422, "Validation Failed", errors=errors)

    def _response_problems(self, op: Operation, reply: Reply) -> str:
        if 200 <= reply.status < 300 and not op.declares(reply.status):
            return f"status {reply.status} is not documented for {op.operation_id}"
        if reply.status == 204:
            return "a 204 has no body" if reply.body is not None else ""
        errors = op.response_errors(reply.status, reply.body)
        return "; ".join(describe_error(e) for e in errors[:5])

    def _paginate(self, call: Call, page: Page) -> Reply:
        per_page = int(call.query.get("per_page", "30"))
        number = max(int(call.query.get("page", "1")), 1)
        total = len(page.items)
        last = max((total + per_page - 1) // per_page, 1)
        chunk = page.items[(number - 1) * per_page : number * per_page]
        links = []
        url = call.request.url

        def link(n: int, rel: str) -> str:
            return f'<{url.update_query(page=str(n))}>; rel="{rel}"'

        # GitHub's order: prev, next, last, first (recorded/paginate-issues.json).
        if number > 1:
            links.append(link(number - 1, "prev"))
        if number < last:
            links += [link(number + 1, "next"), link(last, "last")]
        if number > 1:
            links.append(link(1, "first"))
        headers = {"Link": ", ".join(links)} if links else {}
        body: Any = chunk if page.key is None else {"total_count": total, page.key: chunk}
        return Reply(200, body, headers)
