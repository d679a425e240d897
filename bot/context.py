"""What every handler receives besides the event and the GitHub client: one frozen context object."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .config import Settings
from .store import Store

if TYPE_CHECKING:
    from .service import ReleaseService


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HandlerContext:
    store: Store
    settings: Settings
    clock: Callable[[], datetime] = utcnow
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("handlers"))
    service: ReleaseService | None = None

    @property
    def releases(self) -> ReleaseService:
        if self.service is None:
            raise RuntimeError("this context has no release service")
        return self.service
