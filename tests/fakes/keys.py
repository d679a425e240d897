"""A GitHub App's RSA key pair, and App JWTs signed with it the way gidgethub signs them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class AppKey:
    """The private PEM the bot signs JWTs with and the public PEM the fake verifies them with."""

    rsa_private_key_pem: bytes
    public_key_pem: bytes

    def jwt(self, app_id: int | str, *, now: float | None = None, lifetime: int = 540) -> str:
        """An App JWT as gidgethub makes one: `iat` backdated 60 s, `iss` the App id as a string."""
        issued = int(now if now is not None else time.time()) - 60
        payload = {"iat": issued, "exp": issued + 60 + lifetime, "iss": str(app_id)}
        return jwt.encode(payload, self.rsa_private_key_pem, algorithm="RS256")


def make_app_key() -> AppKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return AppKey(rsa_private_key_pem=private, public_key_pem=public)
