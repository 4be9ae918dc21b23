"""Group commit: concurrent writers whose work may share a transaction wait for one commit together.

The webhook must answer Alertmanager only after its alerts are durable, so each POST needs a commit;
but nothing requires one commit (one fsync) per POST. The first caller to arrive leads: it takes
every batch queued so far, writes them all in one transaction and commits once; callers that came
meanwhile wait, and when the leader is done the first of them leads the next group. Under no
concurrency this is exactly one transaction per call; under load the fsyncs are shared.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    __slots__ = ("item", "done", "lead", "result", "error")

    def __init__(self, item: T):
        self.item = item
        self.done = threading.Event()
        self.lead = False  # woken to lead the next group, not with a result
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    def __init__(self, write: Callable[[Sequence[T]], Sequence[R]], max_group: int = 256):
        """`write(items)` does every item's work in one transaction and returns one result per item; a
        result that is an exception is raised to that item's caller alone."""
        self._write = write
        self._max = max_group
        self._lock = threading.Lock()
        self._queue: list[_Waiter[T, R]] = []
        self._busy = False

    def submit(self, item: T) -> R:
        me: _Waiter[T, R] = _Waiter(item)
        with self._lock:
            self._queue.append(me)
            me.lead = not self._busy
            self._busy = True
        while not me.lead:
            me.done.wait()
            me.done.clear()
            if me.result is not None or me.error is not None:
                break
        if me.lead:
            self._lead()
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            group, self._queue = self._queue[: self._max], self._queue[self._max:]
        try:
            results: Sequence[Any] = self._write([w.item for w in group])
            for w, r in zip(group, results):
                if isinstance(r, BaseException):
                    w.error = r
                else:
                    w.result = r
        except BaseException as e:  # every caller of the group gets the transaction's failure
            for w in group:
                w.error = e
        with self._lock:
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].done.set()
            else:
                self._busy = False
        for w in group:
            w.lead = False
            w.done.set()
