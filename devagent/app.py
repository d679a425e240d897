"""The dev agent as a Starlette app: the public Agent Card, and the SDK's JSON-RPC endpoint behind the token check."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from a2a.auth.user import User
from a2a.server.context import ServerCallContext
from a2a.server.routes import DefaultServerCallContextBuilder, create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import BasePushNotificationSender, InMemoryPushNotificationConfigStore, InMemoryTaskStore
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from . import __version__
from .auth import AuthError, Jwks, TokenVerifier, claimed_scope
from .config import AgentConfig
from .executor import PlaybookExecutor
from .handler import SCOPE_KEY, GuardedRequestHandler, log_refusal
from .policy import push_url_allowed

NAME = "Release Secretary dev agent"
SECURITY_SCHEME = "bot_jwt"
# JSON-RPC leaves -32000..-32099 to servers and A2A takes -32001..-32099 for its own errors (-32001 is
# TaskNotFound), so an authentication failure, which A2A leaves to "a custom error", is -32000.
UNAUTHENTICATED = -32000
INTERNAL_ERROR = -32603
INVALID_REQUEST = -32600
MAX_BODY_BYTES = 1 << 20  # read before the token is checked, so it is bounded
HTTP_TIMEOUT_SECONDS = 10.0
SKILL_TEXT = {
    "run_playbook": ("Run playbook", "Runs an allowlisted playbook (a deploy, say) with checked parameters."),
    "tail_logs": ("Tail logs", "Runs an allowlisted playbook that prints a service's recent logs."),
    "rollback_release": ("Roll back a release", "Runs an allowlisted playbook that rolls a release back."),
}
Endpoint = Callable[[Request], Awaitable[Response]]


def build_app(config: AgentConfig) -> Starlette:
    http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS)
    verifier = TokenVerifier(issuer=config.issuer, audience=config.url, jwks=Jwks(config.jwks_url, http))

    async def push_url_ok(url: str) -> bool:
        return push_url_allowed(url, config.push_urls)

    push_configs = InMemoryPushNotificationConfigStore()
    card = agent_card(config)
    handler = GuardedRequestHandler(
        config=config,
        agent_executor=PlaybookExecutor(),
        task_store=InMemoryTaskStore(),
        agent_card=card,
        push_config_store=push_configs,
        push_sender=BasePushNotificationSender(http, push_configs, push_url_validator=push_url_ok),
        push_url_validator=push_url_ok,
    )
    [rpc] = create_jsonrpc_routes(handler, config.rpc_path, context_builder=_ContextBuilder())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await handler.aclose()  # cancels running playbooks, which stops their process groups
            await http.aclose()

    routes = [*create_agent_card_routes(card), Route(rpc.path, _guarded(rpc.endpoint, verifier), methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


def agent_card(config: AgentConfig) -> AgentCard:
    """Public: it names the skills, not the playbooks or the repositories allowed to run them."""
    return AgentCard(
        name=NAME,
        description="Runs allowlisted release playbooks for the Release Secretary bot, streaming their output.",
        version=__version__,
        supported_interfaces=[AgentInterface(url=config.url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True, push_notifications=True),
        security_schemes={
            SECURITY_SCHEME: SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer",
                    bearer_format="JWT",
                    description="A fresh JWT per request, signed by the bot (EdDSA or ES256, its JWKS), "
                    "aud = this agent's URL, at most 60 s, single-use jti, claims skill, repo and release.",
                )
            )
        },
        security_requirements=[SecurityRequirement(schemes={SECURITY_SCHEME: StringList()})],
        default_input_modes=["application/json"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id=skill,
                name=SKILL_TEXT[skill][0],
                description=SKILL_TEXT[skill][1],
                tags=["release"],
                examples=[
                    json.dumps(
                        {
                            "skill": skill,
                            "playbook": "<name>",
                            "parameters": {"<name>": "<value>"},
                            "repo": "<owner>/<repo>",
                            "release": "<owner>/<repo>#<pr>/<n>",
                        }
                    )
                ],
                input_modes=["application/json"],
                output_modes=["text/plain"],
            )
            for skill in config.skills
        ],
    )


def _guarded(endpoint: Endpoint, verifier: TokenVerifier) -> Endpoint:
    """The token check in front of the SDK's dispatcher. The body is read here, once and bounded, for the
    method and id that a refusal names; the dispatcher gets it replayed."""

    async def guarded(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                reason = f"request body larger than {MAX_BODY_BYTES} bytes"
                log_refusal("?", reason, repo="-", skill="-")
                return _error(None, INVALID_REQUEST, reason, status=413)
        method, request_id = _peek(body)
        authorization = request.headers.get("authorization")
        try:
            scope = await verifier.verify(authorization)
        except AuthError as exc:
            repo, skill = claimed_scope(authorization)
            log_refusal(method, exc.reason, repo=repo, skill=skill)
            if exc.status == 401:
                return _error(request_id, UNAUTHENTICATED, exc.reason, status=401, challenge=authorization is not None)
            return _error(request_id, INTERNAL_ERROR, exc.reason, status=exc.status)
        request.state.devagent_scope = scope
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # past the body: what the server says next (a disconnect)
                return await request.receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await endpoint(Request(request.scope, replay))

    return guarded


class _ContextBuilder(DefaultServerCallContextBuilder):
    """Hands the verified scope to the handler, and keeps the token out of the call context (whose state the
    SDK logs at debug level)."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[SCOPE_KEY] = request.state.devagent_scope
        context.state["headers"].pop("authorization", None)
        context.user = _Bot()
        return context


class _Bot(User):
    """Every verified caller is the bot; the stores key tasks by this one owner."""

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return "bot"


def _peek(body: bytes) -> tuple[str, str | int | None]:
    try:
        data = json.loads(body)
    except ValueError:
        return "?", None
    if not isinstance(data, dict):
        return "?", None
    method = data.get("method")
    request_id = data.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        request_id = None
    return (method if isinstance(method, str) else "?"), request_id


def _error(request_id: str | int | None, code: int, message: str, *, status: int, challenge: bool = False) -> Response:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    headers = {}
    if status == 401:
        # RFC 6750: the scheme always, the error only when a token was sent.
        printable = "".join(c if " " <= c < "\x7f" else "?" for c in message)
        quoted = printable.replace("\\", "\\\\").replace('"', '\\"')
        headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{quoted}"' if challenge else "Bearer"
        )
    return JSONResponse(body, status_code=status, headers=headers)
