"""The store: one protocol (base), an embedded SQLite implementation and a MongoDB one."""

from __future__ import annotations

from ..config import Settings
from .base import (
    Delivery,
    DeliveryStatus,
    Installation,
    JobSpec,
    NewDelivery,
    Store,
    StoredEvent,
    VersionConflict,
)

__all__ = [
    "Delivery",
    "DeliveryStatus",
    "Installation",
    "JobSpec",
    "NewDelivery",
    "Store",
    "StoredEvent",
    "VersionConflict",
    "make_store",
]


def make_store(settings: Settings) -> Store:
    """The store the settings name: MongoDB when MONGODB_URI is set, else SQLite under DATA_DIR."""
    if settings.mongodb_uri:
        try:
            from .mongo import MongoStore
        except ImportError as exc:
            raise RuntimeError(
                "MONGODB_URI is set but pymongo is not installed: pip install 'release-secretary[mongo]'"
            ) from exc
        return MongoStore(settings.mongodb_uri)
    from .sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path)
