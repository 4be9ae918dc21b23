"""store/writer_lock.py: writers of one SQLite file in several processes take turns on a flock().

Two WriterLock objects are two open files, so they exclude each other as two processes would."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from remediator.store.base import StoreError
from remediator.store.writer_lock import WriterLock, WriterLockTimeout


def hold_for(lock: WriterLock, seconds: float) -> threading.Thread:
    taken = threading.Event()

    def run() -> None:
        with lock.held():
            taken.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    assert taken.wait(5)
    return thread


def test_a_writer_waits_while_another_holds_the_lock_then_gets_it(tmp_path):
    first, second = WriterLock(str(tmp_path / "s.db")), WriterLock(str(tmp_path / "s.db"))
    holder = hold_for(first, 0.3)
    started = time.monotonic()
    with second.held():
        waited = time.monotonic() - started
    holder.join()
    assert waited >= 0.25, f"took the lock while it was held (after {waited:.3f} s)"


def test_a_lock_held_past_the_timeout_fails_the_write_as_a_store_error(tmp_path):
    first, second = WriterLock(str(tmp_path / "s.db")), WriterLock(str(tmp_path / "s.db"), timeout_s=0.2)
    holder = hold_for(first, 1.0)
    with pytest.raises(WriterLockTimeout, match="held .*s.db.writer-lock") as refused:
        with second.held():
            pass
    holder.join()
    assert isinstance(refused.value, StoreError)
    with second.held():  # free again: taken at once
        pass


def test_a_writer_killed_while_holding_the_lock_leaves_it_free(tmp_path):
    path = str(tmp_path / "s.db")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom remediator.store.writer_lock import WriterLock\n"
        f"lock = WriterLock({path!r})\nwith lock.held():\n    print('held', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        waiting = WriterLock(path, timeout_s=0.2)
        with pytest.raises(WriterLockTimeout):
            with waiting.held():
                pass
    finally:
        holder.kill()  # the process this test started, by its handle
        holder.wait()
    with WriterLock(path, timeout_s=1.0).held():  # the kernel dropped the dead writer's lock
        pass


def test_the_webhooks_batch_holds_the_lock_for_its_insert_alone(tmp_path):
    """The inventory read and the Python around the INSERT run without it: held across the batch, it was held
    while the thread waited for its process's GIL, and the other webhook processes waited on it."""
    from datetime import datetime, timezone

    from remediator.alerts import parse_body
    from remediator.store import open_store

    from .payloads import body

    store = open_store(f"sqlite:///{tmp_path}/s.db")
    other_process = WriterLock(str(tmp_path / "s.db"), timeout_s=0.2)
    alerts = parse_body(body()).alerts
    try:
        with store.autocommit():
            store.known_vms([a.uuid for a in alerts], [])
            with other_process.held():  # free between the batch's statements
                pass
            holder = hold_for(other_process, 0.3)  # and the INSERT waits for it
            started = time.monotonic()
            (stored,) = store.record_alerts(alerts, datetime.now(timezone.utc))
            assert time.monotonic() - started >= 0.25 and stored.new
            holder.join()
    finally:
        store.close()
