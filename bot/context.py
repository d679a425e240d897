"""What every handler receives besides the event and the GitHub client: one frozen context object."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .config import Settings
from .store import Store


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HandlerContext:
    store: Store
    settings: Settings
    clock: Callable[[], datetime] = utcnow
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("handlers"))
