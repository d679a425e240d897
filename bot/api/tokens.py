"""API tokens: made by an operator (`python -m bot tokens create`), kept only as their SHA-256, each acting
as one GitHub login on a list of repositories with read and/or write scope."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from ..release import Source
from ..store import Store

PREFIX: Final = "rs_"
SCOPES: Final = ("read", "write")
_BY_HASH: Final = "api-token:"  # + sha256(token) -> the token's record
_BY_ID: Final = "api-token-id:"  # + id -> sha256(token)
_LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/(?:\*|[A-Za-z0-9._-]{1,100})$")


class TokenError(ValueError):
    """A token cannot be made as asked: the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who an API request or an MCP session acts as."""

    token_id: str
    name: str
    login: str
    repos: tuple[str, ...]  # "owner/name" or "owner/*"
    scopes: tuple[str, ...]
    via: Source = Source.API  # the surface it came through, for the audit trail (API or MCP)

    def sees(self, repo: str) -> bool:
        repo = repo.lower()
        return any(fnmatch.fnmatchcase(repo, pattern.lower()) for pattern in self.repos)

    def may(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    login: str
    repos: tuple[str, ...]
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "name": self.name,
                "login": self.login,
                "repos": list(self.repos),
                "scopes": list(self.scopes),
                "created_at": self.created_at,
                "revoked_at": self.revoked_at,
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> TokenRecord:
        doc = json.loads(raw)
        return cls(
            id=doc["id"],
            name=doc["name"],
            login=doc["login"],
            repos=tuple(doc["repos"]),
            scopes=tuple(doc["scopes"]),
            created_at=doc["created_at"],
            revoked_at=doc.get("revoked_at"),
        )


class ApiTokens:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    async def create(self, *, name: str, login: str, repos: list[str], scopes: list[str]) -> tuple[str, TokenRecord]:
        """A new token (shown once, never stored) and its record."""
        problems = []
        if not name.strip() or len(name) > 100:
            problems.append("--name must be 1-100 characters")
        if not _LOGIN.match(login):
            problems.append(f"--as {login!r} is not a GitHub login")
        bad = [r for r in repos if not _REPO.match(r)]
        if not repos or bad:
            problems.append(f"--repos takes owner/repo or owner/* entries, got {', '.join(bad) or 'none'}")
        unknown = [s for s in scopes if s not in SCOPES]
        if not scopes or unknown:
            problems.append(f"--scopes takes read and/or write, got {', '.join(unknown) or 'none'}")
        if problems:
            raise TokenError("; ".join(problems))
        token = PREFIX + secrets.token_urlsafe(32)
        digest = _digest(token)
        now = self.clock()
        record = TokenRecord(
            id=digest[:12],
            name=name.strip(),
            login=login,
            repos=tuple(dict.fromkeys(repos)),
            scopes=tuple(s for s in SCOPES if s in scopes),
            created_at=now.isoformat(),
        )
        await self.store.set_value(_BY_HASH + digest, record.to_json(), now=now)
        await self.store.set_value(_BY_ID + record.id, digest, now=now)
        return token, record

    async def list(self) -> list[TokenRecord]:
        rows = await self.store.list_values(_BY_HASH, limit=1000)
        return sorted((TokenRecord.from_json(raw) for _, raw in rows), key=lambda r: r.created_at)

    async def revoke(self, token_id: str) -> TokenRecord | None:
        digest = await self.store.get_value(_BY_ID + token_id)
        raw = await self.store.get_value(_BY_HASH + digest) if digest else None
        if digest is None or raw is None:
            return None
        record = TokenRecord.from_json(raw)
        if record.revoked_at is None:
            now = self.clock()
            record = replace(record, revoked_at=now.isoformat())
            await self.store.set_value(_BY_HASH + digest, record.to_json(), now=now)
        return record

    async def caller(self, token: str) -> Caller | None:
        """Who a presented token acts as; None for anything that is not a live token."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        digest = _digest(token)
        raw = await self.store.get_value(_BY_HASH + digest)
        if raw is None:
            return None
        record = TokenRecord.from_json(raw)
        # The lookup was by hash; compare once more in constant time all the same.
        if record.revoked_at is not None or not hmac.compare_digest(record.id, digest[:12]):
            return None
        return Caller(record.id, record.name, record.login, record.repos, record.scopes)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
