"""Run a blocking function with a deadline, at most one run in flight.

A libvirt call to a hung daemon or a write to a dead disk can block far longer than a scrape
may take. The function runs in a daemon thread; callers wait at most their timeout. A caller
arriving while a run is still in flight waits for that same run instead of starting another,
so a hung dependency costs one stuck thread, never a pile of them.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class CallTimedOut(Exception):
    """The function did not finish within the caller's timeout (it may still be running)."""


class BoundedCall(Generic[T]):
    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._fn = fn
        self._name = name
        self._lock = threading.Lock()
        self._run: _Run[T] | None = None

    def __call__(self, timeout: float) -> T:
        """fn()'s result or its exception; CallTimedOut if it takes longer than `timeout`."""
        return self.begin().wait(timeout)

    def begin(self) -> "_Run[T]":
        """Start a run unless one is in flight; wait on what this returns (lets callers start many)."""
        with self._lock:
            run = self._run
            if run is None or run.done.is_set():
                run = _Run(self._fn, self._name)
                self._run = run
                threading.Thread(target=run.execute, name=self._name, daemon=True).start()
        return run

    @property
    def in_flight(self) -> bool:
        with self._lock:
            return self._run is not None and not self._run.done.is_set()


class _Run(Generic[T]):
    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._fn = fn
        self._name = name
        self.done = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None

    def execute(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as err:  # noqa: BLE001 - handed to the waiting caller, who re-raises it
            self._error = err
        finally:
            self.done.set()

    def wait(self, timeout: float) -> T:
        if not self.done.wait(max(timeout, 0.0)):
            raise CallTimedOut(f"{self._name} did not finish within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]
