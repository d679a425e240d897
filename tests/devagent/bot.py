"""The bot's side of the dev agent tests: its Ed25519 key and tokens, its JWKS served by aiohttp on 127.0.0.1,
and a receiver for the agent's push notifications."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from tests.fakes.server import LocalServer

ISSUER = "https://bot.example.test"
KID = "bot-key-1"


@dataclass
class BotKey:
    """The bot's signing key (Ed25519, or P-256 for ES256): `token(...)` mints what the bot would send, with
    any claim bent (or dropped, given None) for a test."""

    audience: str = ""
    kid: str = KID
    private: Ed25519PrivateKey | ec.EllipticCurvePrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def alg(self) -> str:
        return "EdDSA" if isinstance(self.private, Ed25519PrivateKey) else "ES256"

    def jwks(self) -> dict[str, Any]:
        if isinstance(self.private, Ed25519PrivateKey):
            jwk = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}]}

    def token(
        self,
        *,
        skill: str = "run_playbook",
        repo: str = "octo-org/webshop",
        release: str = "octo-org/webshop#7/1",
        issued: float | None = None,
        lifetime: int = 60,
        **overrides: Any,
    ) -> str:
        iat = int(time.time() if issued is None else issued)
        claims = {
            "iss": ISSUER,
            "aud": self.audience,
            "iat": iat,
            "exp": iat + lifetime,
            "jti": uuid.uuid4().hex,
            "skill": skill,
            "repo": repo,
            "release": release,
        }
        claims.update(overrides)  # a claim set to None is left out
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


class JwksServer(LocalServer):
    """`/.well-known/jwks.json`, as the bot publishes it."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/jwks.json", self.serve)

    async def serve(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks)


@dataclass(frozen=True)
class Push:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class PushReceiver(LocalServer):
    """Takes every POST, on any path, and keeps it."""

    def __init__(self) -> None:
        self.received: list[Push] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self.receive)

    async def receive(self, request: web.Request) -> web.Response:
        self.received.append(Push(request.path, dict(request.headers), await request.json()))
        return web.json_response({})

    def for_task(self, task_id: str) -> list[Push]:
        return [push for push in self.received if _task_id(push.body) == task_id]


def _task_id(body: dict[str, Any]) -> str | None:
    if "task" in body:
        return str(body["task"]["id"])
    for kind in ("statusUpdate", "artifactUpdate"):
        if kind in body:
            return str(body[kind]["taskId"])
    return None
