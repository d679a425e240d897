"""Structured logging: every record carries the delivery, installation and repo it concerns; no secrets."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Iterator
from typing import Any

import orjson

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039

# Tokens GitHub, Slack and Telegram issue, and JWTs: masked wherever they slip into a message.
_SECRET_PATTERNS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9_]{16,}|ghs_[A-Za-z0-9]+|v1\.[0-9a-f]{40}|xox[abprs]-[A-Za-z0-9-]+|\brs_[A-Za-z0-9_-]{20,}"
    r"|\b\d{6,12}:[A-Za-z0-9_-]{30,}\b|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"
    r"|(?i:(?:token|bearer)\s+)[A-Za-z0-9._-]{20,})"
)


def redact(text: str) -> str:
    return _SECRET_PATTERNS.sub("[redacted]", text)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (delivery, installation, repo, pr) to every record logged inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in sorted(_extras(record).items()))
        return redact(f"{base} {extras}" if extras else base)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(doc, default=str).decode())


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_ContextFilter())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log would print every webhook line; ours already says what matters.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
