"""Group commit for the webhook: the alerts of concurrent posts go into the store in one transaction.

Why: each post's alerts must be committed (on SQLite, fsync'd: synchronous=FULL) before its 200, and
the store takes one writer at a time. With one transaction per post, every worker thread queued on
the store's lock behind someone else's fsync, its inventory check included (a read waits for the
same lock): `make bench-scale` measured ~700 alerts/s at p99 37 ms, most of the time spent waiting
(py-spy). Batching keeps the promise and pays one commit for many posts.

How (leader and followers, no thread of its own): a post puts its alerts on the queue and waits. If
no batch is being committed, the waiting post at the front becomes the leader: it takes everything
queued, checks each alert against the inventory, stores them all with `record_alerts` (one
transaction), and hands each post its own results. Posts that arrive meanwhile queue for the next
batch, which forms while this one's fsync runs. Durability is unchanged: a post is answered only
after the transaction holding its alerts has committed, and when that commit fails every post in
the batch gets the store's error (503: Alertmanager sends them again). A batch that fails in any
other way is retried one post at a time, so one post's problem stays its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from remediator.model import Alert
from remediator.store.base import StoredAlert, StoreError

# (alerts of every post in the batch, flattened) -> their stored records, in the same order
Commit = Callable[[Sequence[Alert]], list[StoredAlert]]


@dataclass(eq=False)
class _Post:
    alerts: Sequence[Alert]
    wake: threading.Event = field(default_factory=threading.Event)  # done, or made the leader
    done: bool = False
    stored: list[StoredAlert] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, commit: Commit, max_batch_alerts: int = 1000):
        self._commit = commit
        self._max = max_batch_alerts
        self._lock = threading.Lock()
        self._queue: list[_Post] = []
        self._leading = False  # a leader is committing a batch (or has been named)

    def submit(self, alerts: Sequence[Alert]) -> list[StoredAlert]:
        """Store `alerts` (one post's) and return their records once committed; raises the store's error."""
        post = _Post(alerts)
        with self._lock:
            self._queue.append(post)
            lead = not self._leading
            self._leading = True
        if not lead:
            post.wake.wait()  # each post waits on its own event: waking one wakes no other
            if post.done:
                return _result(post)
        with self._lock:
            batch = self._take()
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._queue:  # the oldest waiting post leads the next batch
                    self._queue[0].wake.set()
                else:
                    self._leading = False
            for other in batch:
                if not other.done:  # the leader was stopped mid-commit (not an Exception): no one is left hanging
                    other.error, other.done = RuntimeError("the batch's commit was interrupted"), True
                other.wake.set()
        return _result(post)

    def _take(self) -> list[_Post]:
        """The front of the queue, up to max_batch_alerts alerts (at least one post)."""
        count, n = 0, 0
        while n < len(self._queue) and (n == 0 or count + len(self._queue[n].alerts) <= self._max):
            count += len(self._queue[n].alerts)
            n += 1
        batch, self._queue = self._queue[:n], self._queue[n:]
        return batch

    def _run(self, batch: list[_Post]) -> None:
        try:
            stored = self._commit([a for post in batch for a in post.alerts])
        except Exception as err:  # noqa: BLE001 - handed to the posts, raised in their threads
            if len(batch) > 1 and not isinstance(err, StoreError):
                for post in batch:
                    self._run([post])
                return
            for post in batch:
                post.error, post.done = err, True
            return
        at = 0
        for post in batch:
            post.stored, post.done = stored[at:at + len(post.alerts)], True
            at += len(post.alerts)


def _result(post: _Post) -> list[StoredAlert]:
    if post.error is not None:
        raise post.error
    return post.stored
