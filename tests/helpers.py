"""Test helpers: the vendored webhook fixtures, and signing them the way GitHub does."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterator
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "github"
WEBHOOKS = FIXTURES / "webhooks"
SECRET = "It's a Secret to Everybody"  # GitHub docs' own example secret


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_fixtures() -> Iterator[tuple[str, Path]]:
    """(event name, payload path) for every vendored webhook example."""
    for path in sorted(WEBHOOKS.glob("*/*.json")):
        yield path.parent.name, path


def webhook_body(event: str, name: str) -> bytes:
    return (WEBHOOKS / event / f"{name}.json").read_bytes()


def webhook_headers(event: str, body: bytes, *, delivery: str | None = None, secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": sign(body, secret),
    }
