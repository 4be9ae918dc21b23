"""The store: interface in base.py; SQLAlchemy Core (sql.py) on SQLite or PostgreSQL, by URL."""

from __future__ import annotations

from remediator.store.base import (
    HostState,
    IncidentExists,
    Intent,
    NotFound,
    QueuedEvent,
    Store,
    StoreError,
    StoredAlert,
    TransitionConflict,
    TransitionRecord,
)

__all__ = [
    "HostState",
    "IncidentExists",
    "Intent",
    "NotFound",
    "QueuedEvent",
    "Store",
    "StoreError",
    "StoredAlert",
    "TransitionConflict",
    "TransitionRecord",
    "open_store",
]


def open_store(url: str) -> Store:
    """A store for a config `store.url`: sqlite:///PATH (PATH absolute, or :memory:) or postgresql://...
    The schema is migrated to the newest revision on open (Alembic)."""
    from remediator.store.sql import SQLStore

    return SQLStore(url)
