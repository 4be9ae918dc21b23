"""The webhook's group commit: the alerts of concurrent posts are checked and stored by one leader in
one transaction (remediator/store/groupcommit.py's leader and followers).

Why at the webhook and not only in the store: each post's alerts must be committed (fsync'd) before
its 200, and on SQLite the store serves one caller at a time, reads included. With one transaction
per post, every worker thread queued on the store behind someone else's fsync, its inventory check
(a read) too: `make bench-scale` measured ~430 alerts/s at p99 149 ms, most of it waiting (py-spy).
Here the followers never touch the store: the leader checks every queued post's alerts against the
inventory and stores them all at once, then hands each post its own records.

Durability is unchanged: a post is answered only after the transaction holding its alerts has
committed; when that commit fails every post of the batch gets the store's error (503: Alertmanager
sends them again). A batch that fails in any other way is retried one post at a time, so one post's
problem stays its own.
"""

from __future__ import annotations

from typing import Callable, Sequence

from remediator.model import Alert
from remediator.store.base import StoredAlert, StoreError
from remediator.store.groupcommit import GroupCommit

# (alerts of every post in the batch, flattened) -> their stored records, in the same order
Commit = Callable[[Sequence[Alert]], list[StoredAlert]]


class WebhookCommits:
    def __init__(self, commit: Commit, max_posts: int = 256):
        self._commit = commit
        self._group: GroupCommit[Sequence[Alert], list[StoredAlert] | Exception] = GroupCommit(self._write, max_posts)

    def submit(self, alerts: Sequence[Alert]) -> list[StoredAlert]:
        """Store `alerts` (one post's) and return their records once committed; raises the store's error."""
        stored = self._group.submit(alerts)
        if isinstance(stored, Exception):
            raise stored
        return stored

    def _write(self, posts: Sequence[Sequence[Alert]]) -> list[list[StoredAlert] | Exception]:
        try:
            stored = self._commit([a for post in posts for a in post])
        except StoreError:
            raise  # the transaction failed: every post of the batch gets it
        except Exception as err:  # noqa: BLE001 - handed to the post it belongs to
            if len(posts) == 1:
                return [err]
            return [result for post in posts for result in self._write([post])]
        results: list[list[StoredAlert] | Exception] = []
        at = 0
        for post in posts:
            results.append(stored[at:at + len(post)])
            at += len(post)
        return results

    @property
    def _queue(self) -> list:
        """The posts waiting for a commit (tests look at it)."""
        return self._group._queue
