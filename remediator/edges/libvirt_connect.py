"""Bounded libvirt connections: a dead, hung or partitioned libvirtd fails fast instead of blocking.

Without help, a libvirt call to a host whose network vanished blocks for minutes (TCP
retransmission), and `libvirt.open()` to such a host blocks as long. Two things bound it
(measured on the lab: docs/lab-facts.md, tests/exporter/test_libvirt_connect_lab.py):

- libvirt's default event loop registered and run in a daemon thread, so the client can
  send and watch keepalive messages; with `setKeepAlive(1, 3)` a call on a connection whose
  peer stopped answering fails after ~4 s;
- opening a connection in a helper thread that the caller waits on for at most `timeout`
  seconds (libvirt has no connect timeout of its own).

`event_loop_paused()` parks that loop thread while one caller makes a burst of calls (the
exporter's scrape): see its docstring for why and why keepalive still holds.

Used by the exporter and by the remediator's libvirt edge: written once, here.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import libvirt

__all__ = ["HostUnreachable", "ensure_event_loop", "event_loop_paused", "is_unreachable", "open_connection",
           "open_kept_alive"]

# Process-wide by nature: libvirt accepts one event loop implementation per process, and it
# must be registered before the first connection is opened.
_event_loop_lock = threading.Lock()
_event_loop_started = False

# Messages of VIR_ERR_INTERNAL_ERROR that mean "the connection is gone", not "the request was bad".
_LOST_CONNECTION_MESSAGES = (
    "client socket is closed",
    "keepalive timeout",
    "connection closed",
    "end of file while reading data",
)
# Codes that always mean the daemon cannot be reached (38: connection refused, host gone;
# 39: RPC layer broke; 5/6: no or invalid connection, e.g. after the keepalive closed it).
_UNREACHABLE_CODES = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
    }
)


class HostUnreachable(Exception):
    """libvirt at `uri` could not be reached (refused, timed out, connection lost)."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"libvirt at {uri} is unreachable: {reason}")
        self.uri = uri
        self.reason = reason


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process)."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default; they reach callers as exceptions.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        thread = threading.Thread(target=_run_event_loop, name="libvirt-event-loop", daemon=True)
        thread.start()
        _event_loop_started = True


def _run_event_loop() -> None:
    _pause.loop_thread = threading.current_thread()
    while True:
        _pause.park_while_requested()
        libvirt.virEventRunDefaultImpl()


@contextmanager
def event_loop_paused(park_timeout: float = 0.2) -> Iterator[None]:
    """Park the event loop thread during a burst of calls, for at most MAX_PAUSE_SECONDS.

    Why: around every call on a connection, libvirt's client stops and restarts watching its
    socket in the event loop, which wakes the loop thread twice per call; each time it comes
    back into Python for the GIL. Measured with 20 `virDomainGetInfo` calls on a busy 2-core
    lab machine: ~265 context switches with the loop running, ~32 with it parked (~23 without
    any event loop), and ~15 % less time.
    The pause is capped because the loop runs the keepalive: libvirt 9's client polls a call's
    socket without a timeout, so a call to a partitioned host fails only when the loop's
    keepalive timer declares the connection dead (a call made while the loop stayed parked
    hung until the link came back). After MAX_PAUSE_SECONDS the loop runs again until the
    burst ends, so the keepalive is at most that late. Events that arrive meanwhile are
    dispatched once the loop runs. If the loop does not park within `park_timeout` (a long
    callback), the calls simply run beside it.
    """
    _pause.request(park_timeout)
    try:
        yield
    finally:
        _pause.release()


# Shorter than the keepalive interval the project uses (1 s): a pause delays a keepalive ping
# by at most this, never long enough to miss one.
MAX_PAUSE_SECONDS = 0.5


class _LoopPause:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._requests = 0
        self._parked = False
        self._overdue = False  # this burst outlasted MAX_PAUSE_SECONDS: the loop runs until it ends
        self.loop_thread: threading.Thread | None = None

    def request(self, park_timeout: float) -> None:
        with self._cond:
            self._requests += 1
            if (self.loop_thread is None or self.loop_thread is threading.current_thread()
                    or self._parked or self._overdue):
                return  # no loop, the loop's own callback, already parked, or not to be parked now
        # A timer due now ends the loop's current poll; the thread then parks before the next one.
        if libvirt.virEventAddTimeout(0, _remove_timer, None) < 0:
            return
        with self._cond:
            self._cond.wait_for(lambda: self._parked, park_timeout)

    def release(self) -> None:
        with self._cond:
            self._requests -= 1
            if self._requests == 0:
                self._overdue = False
                self._cond.notify_all()

    def park_while_requested(self) -> None:
        with self._cond:
            if not self._requests or self._overdue:
                return
            deadline = time.monotonic() + MAX_PAUSE_SECONDS
            self._parked = True
            self._cond.notify_all()
            while self._requests and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            self._parked = False
            self._overdue = self._requests > 0


def _remove_timer(timer: int, _opaque: object) -> None:
    libvirt.virEventRemoveTimeout(timer)


_pause = _LoopPause()


def is_unreachable(err: libvirt.libvirtError) -> bool:
    """True when `err` says the daemon cannot be reached (as opposed to a refused or bad request)."""
    code = err.get_error_code()
    if code in _UNREACHABLE_CODES:
        return True
    if code == libvirt.VIR_ERR_INTERNAL_ERROR:
        message = (err.get_error_message() or "").lower()
        return any(text in message for text in _LOST_CONNECTION_MESSAGES)
    return False


def open_connection(
    uri: str,
    timeout: float,
    keepalive: tuple[int, int] | None = (1, 3),
    read_only: bool = False,
) -> libvirt.virConnect:
    """Open `uri` within `timeout` seconds, with keepalive set; raise HostUnreachable otherwise.

    keepalive is (interval seconds, missed replies): the connection is declared dead after about
    interval * (count + 1) seconds of silence. Drivers without a network (test:///, local unix
    socket to a driver without keepalive support) ignore it.
    """
    return open_kept_alive(uri, timeout, keepalive, read_only)[0]


def open_kept_alive(
    uri: str,
    timeout: float,
    keepalive: tuple[int, int] | None = (1, 3),
    read_only: bool = False,
) -> tuple[libvirt.virConnect, bool]:
    """open_connection(), and whether keepalive runs on it: True for a connection carried by
    libvirt's RPC client (a daemon, local or remote), False for a driver inside this process."""
    ensure_event_loop()
    attempt = _OpenAttempt(uri, read_only)
    thread = threading.Thread(target=attempt.run, name=f"libvirt-open {uri}", daemon=True)
    thread.start()
    conn = attempt.wait(timeout)
    kept_alive = keepalive is not None and _set_keepalive(conn, uri, keepalive)
    return conn, kept_alive


def _set_keepalive(conn: libvirt.virConnect, uri: str, keepalive: tuple[int, int]) -> bool:
    interval, count = keepalive
    try:
        conn.setKeepAlive(interval, count)
        return True
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return False  # a local driver (test:///): nothing between us and it can partition
        conn.close()
        if is_unreachable(err):
            raise HostUnreachable(uri, err.get_error_message()) from err
        raise


class _OpenAttempt:
    """One libvirt.open() in a helper thread; if the caller gave up, a late connection is closed."""

    def __init__(self, uri: str, read_only: bool) -> None:
        self._uri = uri
        self._read_only = read_only
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False
        self._conn: libvirt.virConnect | None = None
        self._error: libvirt.libvirtError | None = None

    def run(self) -> None:
        try:
            conn = libvirt.openReadOnly(self._uri) if self._read_only else libvirt.open(self._uri)
        except libvirt.libvirtError as err:
            with self._lock:
                self._error = err
            self._done.set()
            return
        with self._lock:
            if self._abandoned:
                conn.close()
                return
            self._conn = conn
        self._done.set()

    def wait(self, timeout: float) -> libvirt.virConnect:
        finished = self._done.wait(timeout)
        with self._lock:
            if not finished:
                self._abandoned = True
                raise HostUnreachable(self._uri, f"no connection within {timeout:g} s")
            if self._error is not None:
                raise HostUnreachable(self._uri, self._error.get_error_message()) from self._error
            assert self._conn is not None
            return self._conn
