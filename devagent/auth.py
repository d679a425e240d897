"""Who is calling: the bot's short-lived, single-use JWT on every JSON-RPC request, checked against its JWKS."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from .policy import Scope

ALGORITHMS = ("EdDSA", "ES256")
MAX_LIFETIME_SECONDS = 60
MAX_CLOCK_SKEW_SECONDS = 30  # how far in the future `iat` may be
JWKS_REFETCH_SECONDS = 30.0  # an unknown kid refetches the JWKS at most this often
SCOPE_CLAIMS = ("jti", "skill", "repo", "release")

logger = logging.getLogger("devagent")


class AuthError(Exception):
    """The request does not carry a token the agent accepts. `reason` is answered and logged; `status` is 401,
    or 503 when the bot's JWKS cannot be fetched (the token may be fine, the agent cannot tell)."""

    def __init__(self, reason: str, *, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Jwks:
    """The bot's public keys by kid, fetched with httpx on first use and again when a token names a kid the
    cache lacks, at most once per `JWKS_REFETCH_SECONDS`, so made-up kids cannot make the agent hammer the bot."""

    def __init__(self, url: str, http: httpx.AsyncClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._http = http
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        async with self._lock:
            if kid not in self._keys and self._may_fetch():
                await self._fetch()
        try:
            return self._keys[kid]
        except KeyError:
            raise AuthError(f"unknown kid {kid!r}: no such key in the bot's JWKS") from None

    def _may_fetch(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= JWKS_REFETCH_SECONDS

    async def _fetch(self) -> None:
        self._fetched_at = self._clock()
        try:
            response = await self._http.get(self.url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AuthError(f"cannot check the token: the bot's JWKS at {self.url} failed: {exc}", status=503) from exc
        keys = {}
        for jwk in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[jwk["kid"]] = jwt.PyJWK(jwk)
            except jwt.PyJWKError as exc:
                logger.warning("ignoring key %r of the bot's JWKS: %s", jwk["kid"], exc)
        self._keys = keys


class TokenVerifier:
    """Checks one `Authorization` header: signature, issuer, audience, lifetime, skew and replay, each failure
    with its own reason. A jti is remembered until its token expires; after that the token is refused anyway."""

    def __init__(self, *, issuer: str, audience: str, jwks: Jwks, clock: Callable[[], float] = time.time) -> None:
        self.issuer = issuer
        self.audience = audience.rstrip("/")
        self.jwks = jwks
        self._clock = clock
        self._seen: dict[str, float] = {}  # jti -> exp

    async def verify(self, authorization: str | None) -> Scope:
        token = bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"the bearer token is not a JWT: {exc}") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise AuthError(f"token alg {alg!r} is not accepted (use {' or '.join(ALGORITHMS)})")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token header has no kid")
        key = await self.jwks.key(kid)
        if key.algorithm_name != alg:
            raise AuthError(f"token alg {alg} does not fit key {kid!r} ({key.algorithm_name})")
        claims = self._decode(token, key, str(alg))
        return self._check(claims)

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                options={
                    "require": ["iss", "aud", "iat", "exp", *SCOPE_CLAIMS],
                    # Checked below, to say exactly what is wrong.
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError(f"token signature does not verify with the bot's key {key.key_id!r}") from None
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None

    def _check(self, claims: dict[str, Any]) -> Scope:
        if claims["iss"] != self.issuer:
            raise AuthError(f"issuer is {claims['iss']!r}, expected {self.issuer!r}")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if not any(isinstance(aud, str) and aud.rstrip("/") == self.audience for aud in audiences):
            raise AuthError(f"audience is {claims['aud']!r}, expected {self.audience!r}")
        iat, exp = claims["iat"], claims["exp"]
        for name, value in (("iat", iat), ("exp", exp)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise AuthError(f"claim {name!r} must be a number")
        if exp - iat > MAX_LIFETIME_SECONDS:
            raise AuthError(f"token lifetime is {exp - iat:g} s, at most {MAX_LIFETIME_SECONDS} s is accepted")
        now = self._clock()
        if iat > now + MAX_CLOCK_SKEW_SECONDS:
            raise AuthError(f"token issued in the future, beyond the {MAX_CLOCK_SKEW_SECONDS} s of clock skew accepted")
        for name in SCOPE_CLAIMS:
            if not isinstance(claims[name], str) or not claims[name]:
                raise AuthError(f"claim {name!r} must be a non-empty string")
        self._seen = {jti: until for jti, until in self._seen.items() if until >= now}
        if claims["jti"] in self._seen:
            raise AuthError("jti replayed")
        self._seen[claims["jti"]] = float(exp)
        return Scope(skill=claims["skill"], repo=claims["repo"], release=claims["release"])


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("missing bearer token (send Authorization: Bearer <JWT>)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header is not 'Bearer <JWT>'")
    return token.strip()


def claimed_scope(authorization: str | None) -> tuple[str, str]:
    """The repo and skill a token claims, unverified, for the log line of a refusal; "-" when unreadable."""
    try:
        claims = jwt.decode(bearer_token(authorization), options={"verify_signature": False})
    except (AuthError, jwt.InvalidTokenError):
        return "-", "-"
    return str(claims.get("repo", "-"))[:200], str(claims.get("skill", "-"))[:200]
