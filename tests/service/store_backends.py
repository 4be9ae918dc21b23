"""The store test suite's backends: every store test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from remediator.store import open_store

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
