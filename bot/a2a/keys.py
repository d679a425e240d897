"""The bot's own signing keys for dev agent calls: Ed25519, stored encrypted, rotatable, published as a
JWKS at `/.well-known/jwks.json`; and the short-lived, single-use tokens signed with them.

The key is separate from the GitHub App key: an agent that trusts the bot's JWKS trusts nothing more.
A rotation makes a new key current and keeps the previous one published, so tokens signed just before
the rotation still verify until they expire (60 s)."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..secrets import Vault

SECRET_NAME = "a2a:signing-keys"  # noqa: S105 - the name of a stored secret, not one
TOKEN_SECONDS = 60  # the agent refuses anything longer-lived
KEPT_KEYS = 2  # the current key and the one before it
CACHE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey
    created: str  # ISO time

    def public_jwk(self) -> dict[str, str]:
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}


def _pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class AgentKeys:
    """The keys live in one encrypted secret: a JSON list, current key first."""

    def __init__(self, vault: Vault, clock: Callable[[], datetime]) -> None:
        self.vault = vault
        self.clock = clock
        self._cached: list[SigningKey] | None = None
        self._cached_at = 0.0

    async def keys(self, *, fresh: bool = False) -> list[SigningKey]:
        """Read again every minute: another process (`agent rotate-key`, the web or the worker) may have
        rotated them. The JWKS reads them fresh, so it never lags behind a signer."""
        if self._cached is not None and (fresh or time.monotonic() - self._cached_at > CACHE_SECONDS):
            self._cached = None
        if self._cached is None:
            stored = await self.vault.get(SECRET_NAME)
            if stored is None:
                return await self.rotate()
            self._cached = [
                SigningKey(
                    kid=k["kid"],
                    private=_load(k["pem"]),
                    created=k["created"],
                )
                for k in json.loads(stored)
            ]
            self._cached_at = time.monotonic()
        return self._cached

    async def rotate(self) -> list[SigningKey]:
        """A new current key; the previous one stays published (tokens signed with it are still in flight)."""
        stored = await self.vault.get(SECRET_NAME)
        old = json.loads(stored) if stored else []
        now = self.clock()
        new = {"kid": f"rs-{now:%Y%m%d}-{secrets.token_hex(4)}", "pem": _pem(Ed25519PrivateKey.generate())}
        new["created"] = now.isoformat()
        kept = [new, *old][:KEPT_KEYS]
        await self.vault.put(SECRET_NAME, json.dumps(kept), now=now)
        self._cached = None
        return await self.keys()

    async def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in await self.keys(fresh=True)]}

    async def mint(self, *, issuer: str, audience: str, skill: str, repo: str, release: str) -> str:
        """One token for one request: `aud` the agent's URL, 60 s, a fresh `jti`, scoped to the skill,
        the repository and the release."""
        key = (await self.keys())[0]
        # Wall-clock time, not the bot's (injectable) clock: the agent checks it against its own.
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "exp": now + TOKEN_SECONDS,
            "jti": uuid.uuid4().hex,
            "skill": skill,
            "repo": repo,
            "release": release,
        }
        return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid})


def _load(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the stored dev agent signing key is not an Ed25519 key")
    return key
