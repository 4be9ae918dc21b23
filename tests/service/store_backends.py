"""The store test suite's backends (every store test runs on SQLite and on PostgreSQL), and what its
modules share: the time they start from and the decision they hand the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from remediator.model import Action
from remediator.store import open_store

T0 = datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Decision:
    """Shaped like fsm.Decision (the store takes it structurally), with defaults and free-form states."""

    next_state: str
    actions: tuple[Action, ...] = ()
    reason: str = ""
    closes: bool = False

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """The URL of an empty store on each backend (a temp SQLite file; a fresh database on the session's server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return request.getfixturevalue("postgres_db")()


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()
