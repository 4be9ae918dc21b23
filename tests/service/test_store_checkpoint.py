"""store/checkpoint.py: a SQLite store's commits leave copying the WAL back to a thread of its own."""

from __future__ import annotations

import os
import time

import sqlalchemy as sa

from remediator.store import checkpoint, open_store


def db_size(path) -> int:
    return os.stat(path).st_size


def test_a_commit_past_a_thousand_pages_of_wal_does_not_checkpoint_and_the_thread_does(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY_S", 3600.0)  # this store's thread: not within the test
    path = tmp_path / "s.db"
    store = open_store(f"sqlite:///{path}")
    try:
        with store.db.tx() as conn:
            conn.execute(sa.text("CREATE TABLE ballast (b BLOB)"))
        before = db_size(path)
        with store.db.tx() as conn:  # ~1,300 pages: past SQLite's default automatic checkpoint (1,000)
            conn.execute(sa.text("INSERT INTO ballast VALUES (randomblob(5 * 1024 * 1024))"))
        assert db_size(path) == before, "the commit copied the WAL into the database itself"
        other = checkpoint.WalCheckpointer(str(path), every_s=0.1)  # as another process's thread would
        try:
            deadline = time.monotonic() + 10
            while db_size(path) < before + 5 * 1024 * 1024 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert db_size(path) >= before + 5 * 1024 * 1024, "the checkpoint thread did not copy the WAL back"
        finally:
            other.close()
    finally:
        store.close()
    assert not store.db._checkpoints._thread.is_alive()
