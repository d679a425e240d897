"""The REST API under /api/v1: bearer tokens, RFC 9457 problem details, idempotent writes, cursor pages,
server-sent events, and an OpenAPI 3.1 document generated from the same models the handlers use."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import gidgethub
import orjson
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field, ValidationError
from pydantic.json_schema import models_json_schema

from ..release import State
from . import models
from .operations import ApiError, Operations
from .tokens import ApiTokens, Caller

log = logging.getLogger(__name__)

BASE: Final = "/api/v1"
IDEMPOTENCY_TTL_SECONDS: Final = 24 * 3600
SSE_POLL: Final = 0.25  # seconds between looks at the change feed
SSE_KEEPALIVE: Final = 15.0
SSE_GAP_GRACE: Final = 5.0  # seconds a missing event id is waited for (a writer that took it, not done yet)
MAX_EVENT_ID: Final = 2**62
STOPPING = web.AppKey("api_stopping", asyncio.Event)
OPERATIONS = web.AppKey("api_operations", Operations)
TOKENS = web.AppKey("api_tokens", ApiTokens)
_PROBLEM: Final = "application/problem+json"


class ListPrsQuery(models.Model):
    repo: str | None = Field(default=None, description="owner/name; default: every repository of the token")
    state: Literal["open", "closed", "merged"] | None = None
    label: str | None = Field(default=None, max_length=100)
    cursor: str | None = Field(default=None, max_length=500)
    limit: int = Field(default=50, ge=1, le=100)


class ChangesQuery(models.Model):
    since_sha: str | None = Field(default=None, min_length=7, max_length=40, pattern="^[0-9a-fA-F]+$")
    reviewer: str | None = Field(default=None, max_length=39, description="since this login's last review")


class ListReleasesQuery(models.Model):
    repo: str | None = None
    state: Literal[tuple(s.value for s in State)] | None = None  # type: ignore[valid-type]
    window_start: AwareDatetime | None = Field(default=None, description="releases whose slot ends after this")
    window_end: AwareDatetime | None = Field(default=None, description="releases whose slot starts before this")
    cursor: str | None = Field(default=None, max_length=500)
    limit: int = Field(default=50, ge=1, le=100)


class NoQuery(models.Model):
    pass


class EventsQuery(models.Model):
    after: int | None = Field(
        default=None, ge=0, le=MAX_EVENT_ID, description="resume after this event id (or Last-Event-ID)"
    )


PathParam = tuple[str, dict[str, Any], str]  # name, schema, description
_OWNER: Final[PathParam] = ("owner", {"type": "string", "pattern": "^[A-Za-z0-9-]{1,39}$"}, "repository owner")
_NAME: Final[PathParam] = ("name", {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"}, "repository name")
_NUMBER: Final[PathParam] = ("number", {"type": "integer", "minimum": 1, "maximum": 999999999}, "pull request number")
_SHA: Final[PathParam] = ("sha", {"type": "string", "pattern": "^[0-9a-f]{40}$"}, "commit SHA")
_RELEASE: Final[PathParam] = (
    "release",
    {"type": "integer", "minimum": 1, "maximum": 999999999},
    "the nth release of the PR",
)
_PR_PATH: Final = "/repos/{owner}/{name}/prs/{number}"


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    summary: str
    scope: str
    response: type[BaseModel]
    run: Callable[[Operations, Caller, dict[str, Any], Any, Any], Awaitable[BaseModel]]
    path_params: tuple[PathParam, ...] = ()
    query: type[BaseModel] = NoQuery
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = field(default=(400, 401, 403, 404, 422))


def _repo(p: dict[str, Any]) -> str:
    return f"{p['owner']}/{p['name']}"


OPERATIONS_TABLE: Final[tuple[Operation, ...]] = (
    Operation(
        "list_prs",
        "GET",
        "/prs",
        "Pull requests the bot tracks, newest first per repository",
        "read",
        models.PullPage,
        lambda ops, c, p, q, b: ops.list_prs(
            c, repo=q.repo, state=q.state, label=q.label, cursor=q.cursor, limit=q.limit
        ),
        query=ListPrsQuery,
    ),
    Operation(
        "get_pr",
        "GET",
        _PR_PATH,
        "A pull request: commits, reviews, required checks and its release",
        "read",
        models.Pull,
        lambda ops, c, p, q, b: ops.get_pr(c, _repo(p), p["number"]),
        (_OWNER, _NAME, _NUMBER),
    ),
    Operation(
        "changes",
        "GET",
        _PR_PATH + "/changes",
        "What changed since a SHA, or since a reviewer's last review: commits, labels, the head's checks",
        "read",
        models.Changes,
        lambda ops, c, p, q, b: ops.changes(c, _repo(p), p["number"], since_sha=q.since_sha, reviewer=q.reviewer),
        (_OWNER, _NAME, _NUMBER),
        query=ChangesQuery,
    ),
    Operation(
        "list_commit_statuses",
        "GET",
        "/repos/{owner}/{name}/commits/{sha}/statuses",
        "The latest commit status per context for a SHA, as webhooks reported them",
        "read",
        models.CommitStatuses,
        lambda ops, c, p, q, b: ops.list_commit_statuses(c, _repo(p), p["sha"]),
        (_OWNER, _NAME, _SHA),
    ),
    Operation(
        "list_check_runs",
        "GET",
        "/repos/{owner}/{name}/commits/{sha}/check-runs",
        "The latest check run per name for a SHA, as webhooks reported them",
        "read",
        models.CheckRuns,
        lambda ops, c, p, q, b: ops.list_check_runs(c, _repo(p), p["sha"]),
        (_OWNER, _NAME, _SHA),
    ),
    Operation(
        "list_releases",
        "GET",
        "/releases",
        "Releases, filtered by repository, state and window",
        "read",
        models.ReleasePage,
        lambda ops, c, p, q, b: ops.list_releases(
            c,
            repo=q.repo,
            state=q.state,
            window_start=q.window_start,
            window_end=q.window_end,
            cursor=q.cursor,
            limit=q.limit,
        ),
        query=ListReleasesQuery,
    ),
    Operation(
        "get_release",
        "GET",
        _PR_PATH + "/releases/{release}",
        "A release with its audit trail and dev agent sessions",
        "read",
        models.Release,
        lambda ops, c, p, q, b: ops.get_release(c, _repo(p), p["number"], p["release"]),
        (_OWNER, _NAME, _NUMBER, _RELEASE),
    ),
    Operation(
        "tag_pr_for_release",
        "POST",
        _PR_PATH + "/tag",
        "Ask for a release as the label does (optionally at a built-in calendar event's time)",
        "write",
        models.ActionResult,
        lambda ops, c, p, q, b: ops.tag_pr_for_release(c, _repo(p), p["number"], b),
        (_OWNER, _NAME, _NUMBER),
        body=models.TagRequest,
        errors=(400, 401, 403, 404, 409, 422),
    ),
    Operation(
        "schedule_release",
        "POST",
        _PR_PATH + "/schedule",
        "Book a release window, as `/ship WHEN` does on the PR",
        "write",
        models.ActionResult,
        lambda ops, c, p, q, b: ops.schedule_release(c, _repo(p), p["number"], b),
        (_OWNER, _NAME, _NUMBER),
        body=models.ScheduleRequest,
        errors=(400, 401, 403, 404, 409, 422),
    ),
    Operation(
        "cancel_release",
        "POST",
        _PR_PATH + "/cancel",
        "Cancel the PR's release, as `/ship cancel` does",
        "write",
        models.ActionResult,
        lambda ops, c, p, q, b: ops.cancel_release(c, _repo(p), p["number"], b),
        (_OWNER, _NAME, _NUMBER),
        body=models.CancelRequest,
        errors=(400, 401, 403, 404, 409, 422),
    ),
    Operation(
        "comment_on_pr",
        "POST",
        _PR_PATH + "/comments",
        "Comment on the PR (posted by the App, naming the caller)",
        "write",
        models.PostedComment,
        lambda ops, c, p, q, b: ops.comment_on_pr(c, _repo(p), p["number"], b),
        (_OWNER, _NAME, _NUMBER),
        body=models.CommentRequest,
        errors=(400, 401, 403, 404, 409, 422),
    ),
    Operation(
        "call_dev_agent",
        "POST",
        _PR_PATH + "/agent-calls",
        "Run a skill on the repository's dev agent for the PR's release (the agent checks its allowlist)",
        "write",
        models.AgentCall,
        lambda ops, c, p, q, b: ops.call_dev_agent(c, _repo(p), p["number"], b),
        (_OWNER, _NAME, _NUMBER),
        body=models.AgentCallRequest,
        errors=(400, 401, 403, 404, 409, 422),
    ),
)


def problem(status: int, title: str, detail: str, instance: str | None = None) -> web.Response:
    body = models.Problem(title=title, status=status, detail=detail, instance=instance)
    headers = {"WWW-Authenticate": 'Bearer realm="release-secretary"'} if status == 401 else {}
    return web.Response(status=status, body=body.model_dump_json(), content_type=_PROBLEM, headers=headers)


async def authenticate(request: web.Request) -> Caller | web.Response:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return problem(401, "Unauthorized", "send a token: Authorization: Bearer rs_...", request.path)
    caller = await request.app[TOKENS].caller(token.strip())
    if caller is None:
        return problem(401, "Unauthorized", "the token is not valid (unknown, mistyped or revoked)", request.path)
    return caller


def _validation_detail(exc: ValidationError, where: str) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(x) for x in error["loc"]) or where
        parts.append(f"{where} {loc}: {error['msg']}")
    return "; ".join(parts)


def _handler(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        who = await authenticate(request)
        if isinstance(who, web.Response):
            return who
        params: dict[str, Any] = {}
        for name, schema, _ in op.path_params:
            raw = request.match_info[name]
            if schema["type"] == "integer":
                if not raw.isdigit() or int(raw) < 1 or len(raw) > 9:
                    return problem(400, "Bad Request", f"path {name}: {raw!r} is not a positive number", request.path)
                params[name] = int(raw)
            else:
                params[name] = raw
        try:
            query = op.query.model_validate(dict(request.query))
        except ValidationError as exc:
            return problem(400, "Bad Request", _validation_detail(exc, "query"), request.path)
        body: BaseModel | None = None
        raw_body = b""
        if op.body is not None:
            raw_body = await request.read()
            try:
                decoded = orjson.loads(raw_body) if raw_body.strip() else {}
            except orjson.JSONDecodeError as exc:
                return problem(400, "Bad Request", f"the body is not JSON: {exc}", request.path)
            try:
                body = op.body.model_validate(decoded)
            except ValidationError as exc:
                return problem(422, "Unprocessable Content", _validation_detail(exc, "body"), request.path)
        ops = request.app[OPERATIONS]
        key = request.headers.get("Idempotency-Key")
        if op.method == "POST" and key is not None:
            return await _idempotent(request, op, who, key, raw_body, lambda: _run(op, ops, who, params, query, body))
        return await _run(op, ops, who, params, query, body, instance=request.path)

    return handle


async def _run(
    op: Operation,
    ops: Operations,
    caller: Caller,
    params: dict[str, Any],
    query: Any,
    body: Any,
    *,
    instance: str | None = None,
) -> web.Response:
    try:
        result = await op.run(ops, caller, params, query, body)
    except ApiError as exc:
        return problem(exc.status, exc.title, exc.detail, instance)
    except gidgethub.BadRequest as exc:
        if exc.status_code.value == 404:
            what = f"#{params['number']} of {params['owner']}/{params['name']}" if "number" in params else "it"
            return problem(404, "Not Found", f"GitHub does not know {what}", instance)
        return problem(502, "Bad Gateway", f"GitHub answered {exc.status_code.value}: {exc}", instance)
    except gidgethub.GitHubException as exc:
        return problem(502, "Bad Gateway", f"GitHub could not be reached or failed: {exc}", instance)
    status = 202 if op.name == "call_dev_agent" else 200
    return web.Response(status=status, body=result.model_dump_json(), content_type="application/json")


async def _idempotent(
    request: web.Request,
    op: Operation,
    caller: Caller,
    key: str,
    raw_body: bytes,
    run: Callable[[], Awaitable[web.Response]],
) -> web.Response:
    """A repeated key gets the first answer and acts no second time; the same key for another request is
    refused; a request still running under the key answers 409."""
    if not 1 <= len(key) <= 200:
        return problem(400, "Bad Request", "Idempotency-Key must be 1-200 characters", request.path)
    store = request.app[OPERATIONS].store
    clock = request.app[OPERATIONS].clock
    digest = hashlib.sha256(f"{caller.token_id}\x00{key}".encode()).hexdigest()
    try:  # the same JSON however it is spaced or ordered is the same request
        canonical = orjson.dumps(orjson.loads(raw_body), option=orjson.OPT_SORT_KEYS) if raw_body.strip() else b""
    except orjson.JSONDecodeError:
        canonical = raw_body
    fingerprint = hashlib.sha256(op.method.encode() + request.path.encode() + b"\x00" + canonical).hexdigest()
    name = f"idempotency:{digest}"
    seen = await store.get_value(name)
    if seen is not None and _expired(json.loads(seen), clock()):
        seen = None
    if seen is None:
        owner = secrets.token_hex(8)
        # Long enough for the slowest write (a booking can wait for its lane); given back at the end.
        if not await store.acquire_lease(name, owner, now=clock(), seconds=600):
            return problem(409, "Conflict", "a request with this Idempotency-Key is still running", request.path)
        try:
            seen = await store.get_value(name)  # finished between our look and the lease
            if seen is None or _expired(json.loads(seen), clock()):
                response = await run()
                record = {
                    "fingerprint": fingerprint,
                    "status": response.status,
                    "body": response.text,
                    "at": clock().isoformat(),
                }
                if response.status < 500:
                    await store.set_value(name, json.dumps(record), now=clock())
                return response
        finally:
            await store.release_lease(name, owner)
    record = json.loads(seen)
    if record["fingerprint"] != fingerprint:
        return problem(
            422, "Unprocessable Content", "this Idempotency-Key was used for a different request", request.path
        )
    content_type = "application/json" if record["status"] < 400 else _PROBLEM
    return web.Response(
        status=record["status"], text=record["body"], content_type=content_type, headers={"Idempotent-Replayed": "true"}
    )


def _expired(record: dict[str, Any], now: datetime) -> bool:
    at = record.get("at")
    return at is not None and (now - datetime.fromisoformat(at)).total_seconds() > IDEMPOTENCY_TTL_SECONDS


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events of release and PR changes the token may see, resumable with Last-Event-ID."""
    who = await authenticate(request)
    if isinstance(who, web.Response):
        return who
    if not who.may("read"):
        return problem(403, "Forbidden", f"the token {who.name!r} lacks the read scope", request.path)
    try:
        query = EventsQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return problem(400, "Bad Request", _validation_detail(exc, "query"), request.path)
    last = request.headers.get("Last-Event-ID", "").strip()
    if last and (not last.isascii() or not last.isdigit() or int(last) > MAX_EVENT_ID):
        return problem(400, "Bad Request", f"Last-Event-ID {last[:40]!r} is not an event id", request.path)
    store = request.app[OPERATIONS].store
    tokens = request.app[TOKENS]
    token = request.headers["Authorization"].partition(" ")[2].strip()
    stopping = request.app.get(STOPPING) or asyncio.Event()
    after = int(last) if last else query.after if query.after is not None else await store.last_event_id()
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    idle = 0.0
    while not stopping.is_set():
        batch = await store.read_events(after=after, limit=200)
        now = datetime.now(UTC)
        for event in batch:
            if event.id != after + 1 and (now - event.at).total_seconds() < SSE_GAP_GRACE:
                # An id below this one is taken but not written yet (another writer): wait for it a little,
                # so a resumed reader never jumps past an event it has not seen.
                break
            after = event.id
            if not who.sees(event.subject):
                continue
            data = orjson.dumps({**event.data, "at": event.at.isoformat()})
            await response.write(f"id: {event.id}\nevent: {event.topic}\ndata: ".encode() + data + b"\n\n")
        else:
            if batch:
                idle = 0.0
                continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SSE_POLL)
        idle += SSE_POLL
        if idle >= SSE_KEEPALIVE:
            if await tokens.caller(token) is None:
                break  # revoked while streaming: the stream ends with it
            await response.write(b": keep-alive\n\n")
            idle = 0.0
    return response


def openapi_document(public_url: str | None = None) -> dict[str, Any]:
    """OpenAPI 3.1, made from the operations table and the pydantic models (JSON Schema 2020-12)."""
    used: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [(models.Problem, "serialization")]
    for op in OPERATIONS_TABLE:
        used.append((op.response, "serialization"))
        if op.body is not None:
            used.append((op.body, "validation"))
    _, schemas = models_json_schema(used, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS_TABLE:
        parameters: list[dict[str, Any]] = [
            {"name": n, "in": "path", "required": True, "schema": s, "description": d} for n, s, d in op.path_params
        ]
        query_schema = op.query.model_json_schema()
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required, "schema": _inline(prop)}
            if "description" in prop:
                param["description"] = prop["description"]
            parameters.append(param)
        if op.method == "POST":
            parameters.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": "A repeated key returns the first result and acts once",
                }
            )
        ok = "202" if op.name == "call_dev_agent" else "200"
        responses: dict[str, Any] = {
            ok: {
                "description": op.summary,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.response.__name__}"}}},
            }
        }
        for status in op.errors:
            responses[str(status)] = {"$ref": f"#/components/responses/Problem{status}"}
        entry: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "parameters": parameters,
            "responses": responses,
            "security": [{"bearer": []}],
        }
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}}},
            }
        paths.setdefault(BASE + op.path, {})[op.method.lower()] = entry
    paths[BASE + "/events"] = {
        "get": {
            "operationId": "events",
            "summary": "Server-sent events of release and PR changes; resumable with Last-Event-ID",
            "parameters": [
                {"name": "after", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "an event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": {"$ref": "#/components/responses/Problem400"},
                "401": {"$ref": "#/components/responses/Problem401"},
                "403": {"$ref": "#/components/responses/Problem403"},
            },
            "security": [{"bearer": []}],
        }
    }
    statuses = sorted({s for op in OPERATIONS_TABLE for s in op.errors})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Release Secretary API",
            "version": "1.0.0",
            "description": "Micromanager's view of the bot: pull requests, checks and releases from the store, "
            "and the writes a `/ship` comment can do, under the same permission rule.",
        },
        "servers": [{"url": (public_url or "").rstrip("/") or "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                f"Problem{s}": {
                    "description": "problem details (RFC 9457)",
                    "content": {_PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }
                for s in statuses
            },
        },
    }


def _inline(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prop.items() if k not in ("title", "description", "default")} | (
        {"default": prop["default"]} if prop.get("default") is not None else {}
    )


async def openapi(request: web.Request) -> web.Response:
    settings_url = request.app.get(PUBLIC_URL)
    return web.json_response(openapi_document(settings_url))


PUBLIC_URL = web.AppKey("api_public_url", str)


@web.middleware
async def problems_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Under /api/v1 every answer is JSON: an unexpected failure is a 500 problem, never a traceback page."""
    if not request.path.startswith(BASE + "/"):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return problem(exc.status, exc.reason, f"{request.method} {request.path}: {exc.reason}", request.path)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("API request failed: %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", "the bot failed to answer; it is logged", request.path)


def add_routes(app: web.Application) -> None:
    app.middlewares.append(problems_only)

    async def stop_streams(app: web.Application) -> None:
        app[STOPPING].set()  # open event streams end, so shutdown does not wait for them

    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(stop_streams)
    app.router.add_get(BASE + "/openapi.json", openapi)
    app.router.add_get(BASE + "/events", events)
    for op in OPERATIONS_TABLE:
        app.router.add_route(op.method, BASE + op.path, _handler(op))
