"""What is SQLite's alone: WAL (readers in other processes never block the service), full sync, URLs."""

from __future__ import annotations

import pytest

from remediator.store import StoreError, open_store


def test_wal_mode_full_sync_and_foreign_keys(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/state.db") as s, s.db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1


def test_open_store_by_url(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/x/state.db") as s:  # the directory is made
        assert s.url == f"sqlite:///{tmp_path}/x/state.db" and s.dialect == "sqlite"
    with open_store("sqlite:///:memory:") as s:
        s.set_setting("k", 1)
        assert s.get_setting("k") == 1
    with pytest.raises(StoreError, match="unsupported store URL scheme: 'mysql'"):
        open_store("mysql://x")
