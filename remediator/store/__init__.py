"""The store: interface in base.py, backends by URL scheme."""

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
    "TransitionRecord",
    "open_store",
]


def open_store(url: str) -> Store:
    """A store for a config `store.url`: sqlite:///PATH (PATH absolute, or :memory:)."""
    if url.startswith("sqlite:///"):
        from remediator.store.sqlite import SQLiteStore

        rest = url[len("sqlite:///") :]
        return SQLiteStore(rest if rest == ":memory:" else "/" + rest.lstrip("/"))
    if url.startswith(("postgresql://", "postgres://")):
        raise StoreError(f"the PostgreSQL store is not implemented yet (store.url {url.split('@')[-1]!r})")
    raise StoreError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")
