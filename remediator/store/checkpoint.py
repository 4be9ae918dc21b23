"""SQLite's WAL copied back into the database by a thread of its own, not by whichever commit crosses 1,000 pages.

By default the commit that grows the WAL past 1,000 pages copies the WAL into the database file and fsyncs it
before it returns (an automatic checkpoint). With the webhook's commits that is every few seconds under load,
and one such commit took from 50 ms to 920 ms; it ran under the writers' lock (writer_lock.py), so every other
webhook process waited as long (`make bench-ingest`: p99 120-770 ms in some runs). Here a thread runs a
PASSIVE checkpoint every CHECKPOINT_EVERY_S on a connection of its own: it copies what no reader still needs
without waiting for, or blocking, readers and writers, and commits no longer checkpoint. SQLite's own automatic
checkpoint stays as a backstop at AUTOCHECKPOINT_PAGES (~40 MB), far above what a second of writes adds, so a
process whose thread is gone cannot let the WAL grow without bound. Several processes on one file each run one:
a checkpoint that finds another running returns at once.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0
AUTOCHECKPOINT_PAGES = 10000


class WalCheckpointer:
    def __init__(self, path: str, every_s: float | None = None):
        self.path = path
        self.every_s = every_s if every_s is not None else CHECKPOINT_EVERY_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            log.warning("no WAL checkpoints of %s from this process (commits do them): %s", self.path, err)
            return
        try:
            while not self._stop.wait(self.every_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as err:  # busy or gone for now: the next round, or the commits' backstop
                    log.debug("WAL checkpoint of %s: %s", self.path, err)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
