"""MCP over streamable HTTP on a port of its own, under uvicorn in the bot's process.

Every request must carry a live API token (`Authorization: Bearer rs_...`), checked against the store each
time, so a revoked token stops working at once. Without one the answer is 401 with a `WWW-Authenticate`
challenge naming the OAuth protected-resource metadata (RFC 9728), which is served unauthenticated and says
how to send the token. There is no authorization server to list: tokens are made by an operator with
`python -m bot tokens create`, not through an OAuth flow. A tool call acts as the token of the request that
carries it, and an MCP session stays bound to the token that opened it.

The MCP app is a Starlette (ASGI) app from the official SDK, so it runs under uvicorn on its own port
rather than inside aiohttp: a bridge between the two would stall streamed responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import uvicorn
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.authentication import AuthCredentials
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .api.operations import Operations
from .api.tokens import SCOPES, ApiTokens, Caller
from .config import Settings
from .mcp import build_server

log = logging.getLogger(__name__)

MCP_PATH: Final = "/mcp"
METADATA_PATH: Final = "/.well-known/oauth-protected-resource"
SHUTDOWN_GRACE_SECONDS: Final = 3  # for responses still open when uvicorn stops
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_METADATA_PATHS: Final = frozenset({METADATA_PATH, METADATA_PATH + MCP_PATH})
_METADATA_HEADERS: Final = {
    "Cache-Control": "public, max-age=3600",
    "Access-Control-Allow-Origin": "*",  # browser-based clients discover it too
    "Access-Control-Allow-Methods": "GET, OPTIONS",
}

# The caller of the HTTP request being served. The SDK hands each message's context on to the handler that
# serves it (it is how its own `get_access_token()` works), so a tool sees the token of its own request.
_CALLER: ContextVar[Caller | None] = ContextVar("mcp_http_caller", default=None)


async def request_caller() -> Caller:
    """Who the tool call in progress acts as: the token of the HTTP request that carried it."""
    caller = _CALLER.get()
    if caller is None:  # only reachable if a request got past the gate without a token
        raise ToolError("unauthorized: this request carried no API token")
    return caller


def metadata_document(resource: str) -> dict[str, object]:
    """The protected-resource metadata (RFC 9728 section 2) of the MCP endpoint `resource`."""
    return {
        "resource": resource,
        "bearer_methods_supported": ["header"],
        "scopes_supported": list(SCOPES),
        "resource_name": "Release Secretary",
    }


class TokenGate:
    """ASGI middleware: the metadata document for anyone; everything else only with a live API token."""

    def __init__(self, app: ASGIApp, tokens: ApiTokens, *, public_url: str | None = None) -> None:
        self.app = app
        self.tokens = tokens
        self.public_url = public_url.rstrip("/") if public_url else None
        self.closing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # uvicorn runs with websockets off: nothing else is served
        if self.closing:
            # Sessions are being ended: nothing new may reach them.
            await Response("shutting down", status_code=503, headers={"Retry-After": "5"})(scope, receive, send)
            return
        base = self.public_url or str(Request(scope).base_url).rstrip("/")
        if scope["path"] in _METADATA_PATHS:
            await _metadata(scope["method"], base)(scope, receive, send)
            return
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        token = token.strip()
        presented = scheme.lower() == "bearer" and bool(token)
        caller = await self.tokens.caller(token) if presented else None
        if caller is None:
            await _unauthorized(base, presented)(scope, receive, send)
            return
        # The SDK's user type: its session manager binds each MCP session to the token that opened it.
        user = AuthenticatedUser(
            AccessToken(
                token=caller.token_id, client_id=caller.token_id, scopes=list(caller.scopes), subject=caller.login
            )
        )
        reset = _CALLER.set(caller)
        try:
            await self.app({**scope, "user": user, "auth": AuthCredentials(list(caller.scopes))}, receive, send)
        finally:
            _CALLER.reset(reset)


def _metadata(method: str, base: str) -> Response:
    if method == "OPTIONS":
        return Response(status_code=204, headers=_METADATA_HEADERS)
    if method not in {"GET", "HEAD"}:
        return Response(status_code=405, headers={"Allow": "GET, HEAD, OPTIONS"})
    body = json.dumps(metadata_document(base + MCP_PATH))
    return Response(body, media_type="application/json", headers=_METADATA_HEADERS)


def _unauthorized(base: str, presented: bool) -> Response:
    # RFC 9728 section 5.1: the challenge names the metadata; its URL for a resource with a path has the
    # well-known segment before that path (section 3.1). The root form is served as well, for clients that
    # look there.
    challenge = f'Bearer resource_metadata="{_quoted(base + METADATA_PATH + MCP_PATH)}"'
    if presented:
        detail = "the token is not valid (unknown, mistyped or revoked)"
        challenge += f', error="invalid_token", error_description="{detail}"'
        body = {"error": "invalid_token", "error_description": detail}
    else:
        # RFC 6750 section 3.1: no error code when no credentials were sent at all.
        body = {"error": "unauthorized", "error_description": "send an API token: Authorization: Bearer rs_..."}
    return Response(
        json.dumps(body), status_code=401, media_type="application/json", headers={"WWW-Authenticate": challenge}
    )


def _rebinding_guard(host: str, public_url: str | None) -> TransportSecuritySettings | None:
    """The SDK's DNS-rebinding check (Host and Origin) for a loopback host, which also admits the public
    address a local proxy forwards; on any other host, none (the SDK's default there too)."""
    if host not in _LOOPBACK:
        return None
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if public_url:
        public = urlsplit(public_url)
        hosts.append(public.netloc)
        origins.append(f"{public.scheme}://{public.netloc}")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def _quoted(text: str) -> str:
    # The base may come from the request's Host header: keep it inside its quoted string (RFC 9110 5.6.4).
    return text.replace("\\", "\\\\").replace('"', '\\"')


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers. It would replace the host process's (aiohttp's) and, after a
    graceful stop, raise the signal again, which ends the whole process; the host stops it instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class McpHttpServer:
    """A running MCP endpoint; `close()` stops it."""

    host: str
    port: int
    _stop: asyncio.Event
    _task: asyncio.Task[None]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{MCP_PATH}"

    async def close(self) -> None:
        self._stop.set()
        await self._task

    async def __aenter__(self) -> McpHttpServer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


async def serve_http(
    settings: Settings,
    operations: Operations,
    tokens: ApiTokens,
    *,
    host: str = "127.0.0.1",
    port: int,
    public_url: str | None = None,
) -> McpHttpServer:
    """Start serving MCP at `http://host:port/mcp` (port 0: a free one) and return once it accepts.

    `public_url` is the endpoint's base as clients reach it (say behind a proxy), for the metadata and the
    401 challenge; without it each request's own address is used. A port already taken raises OSError here.
    On a loopback host the SDK also refuses other Host and Origin headers (DNS rebinding).
    """
    server = build_server(operations, request_caller)
    mcp_app = server.streamable_http_app(
        streamable_http_path=MCP_PATH, host=host, transport_security=_rebinding_guard(host, public_url)
    )
    app = TokenGate(mcp_app, tokens, public_url=public_url)
    config = uvicorn.Config(
        app,
        log_config=None,  # the process's logging, as configured
        access_log=False,
        lifespan="off",  # the sessions are run by _run, so they can be ended before uvicorn stops
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    uv = _Server(config)
    stop = asyncio.Event()
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    task = asyncio.create_task(_run(uv, sock, app, server.session_manager, stop), name="mcp-http")
    try:
        while not uv.started:
            if task.done():
                await task  # raises what stopped it
                raise RuntimeError("the MCP server stopped while starting")
            await asyncio.sleep(0.01)
    except BaseException:
        stop.set()
        task.cancel()
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    log.info("MCP over streamable HTTP at http://%s:%d%s (%s)", host, bound_port, MCP_PATH, settings.store_kind)
    return McpHttpServer(bound_host, bound_port, stop, task)


async def _run(
    server: _Server, sock: socket.socket, gate: TokenGate, sessions: StreamableHTTPSessionManager, stop: asyncio.Event
) -> None:
    """Serve until `stop`; then refuse new requests, end the sessions (their event streams close, so uvicorn
    has no open response to wait out) and stop uvicorn."""
    async with sessions.run():
        serving = asyncio.create_task(_serve(server, sock))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        gate.closing = True
    server.should_exit = True
    await serving


async def _serve(server: _Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        # uvicorn exits the process when it cannot start: here that must not end the bot.
        raise RuntimeError(f"the MCP server could not start (uvicorn exit status {exc.code})") from None
