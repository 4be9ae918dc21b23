"""libvirt connections to the hosts: a daemon's connection is used by one thread at a time.

The cause of issue 9's segfault. The remediator's threads (engine loop, action and evacuation
pools, host probes, scheduler jobs, web requests) shared one connection per host, and once a host's
link lost packets or flapped the process died (`segfault ... in libvirt.so`), two ways:

1. A thread whose call failed as unreachable closed the shared connection at once; `close()`
   dropped its last reference while another thread was still inside a call on it (libvirt's remote
   driver releases its lock for the duration of an RPC), and that call woke on freed memory.
2. Even with nobody closing it: when libvirt's keepalive, run by the event-loop thread, declares a
   connection dead while several threads are inside calls on it, libvirt 9.0's RPC client crashes
   (`g_main_loop_quit: assertion 'loop != NULL' failed`, then SIGSEGV). The same fault with one
   call at a time per connection never did (tests/edges/test_libvirt_lab.py).

So a connection carried by libvirt's RPC client (keepalive on) has one owner at a time:
`lease(host)` hands the calling thread an idle connection of the host, or opens a new one, and
takes it back after the call. Calls to one host still run in parallel (a long migration does not
hold up a probe), each on its own connection. A call that fails as unreachable makes the host's
connections stale: the idle ones are closed at once (nobody holds them), the others by their owner
when it gives them back. An in-process driver (libvirt's test driver: no RPC client, no keepalive,
and every open of a file a private copy) keeps one connection per host that threads share; it is
closed only when no thread holds it. Nothing runs in the event-loop thread and no close callback is
registered, so the event loop never closes a connection. Callers keep no domain object past their
lease (the Hypervisors methods return plain data): another thread may own the connection next.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import libvirt

from remediator.edges.libvirt_connect import open_kept_alive

__all__ = ["ConnectionPool"]

# Idle daemon connections kept per host; more are opened while more threads call at once, and closed
# when they come back to a full shelf. Concurrent calls per host are bounded by the service's threads.
KEEP_IDLE = 4


class _Shared:
    """An in-process driver's connection, used by `users` threads; stale: close when unused."""

    __slots__ = ("conn", "users", "stale")

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn, self.users, self.stale = conn, 0, False


class ConnectionPool:
    def __init__(self, uris: Mapping[str, str], connect_timeout: float,
                 opener: Callable[[str, float], tuple[libvirt.virConnect, bool]] = open_kept_alive,
                 keep_idle: int = KEEP_IDLE) -> None:
        self._uris = dict(uris)
        self._timeout = connect_timeout
        self._open = opener
        self._keep_idle = keep_idle
        self._lock = threading.Lock()
        self._idle: dict[str, list[libvirt.virConnect]] = {host: [] for host in self._uris}
        self._shared: dict[str, _Shared] = {}
        # Bumped when a call to the host failed: connections of an older generation are not reused.
        self._generation: dict[str, int] = dict.fromkeys(self._uris, 0)

    def uri(self, host: str) -> str:
        try:
            return self._uris[host]
        except KeyError:
            raise KeyError(f"unknown host {host!r}") from None

    @contextmanager
    def lease(self, host: str) -> Iterator[libvirt.virConnect]:
        """A connection to the host for this thread's call (HostUnreachable if none can be opened)."""
        uri = self.uri(host)
        with self._lock:
            generation = self._generation[host]
            shared = self._hold_shared(host)
        if shared is None:
            conn = self._take_idle(host)
            if conn is None:
                conn, kept_alive = self._open(uri, self._timeout)  # raises HostUnreachable
                if not kept_alive:
                    shared = self._share(host, conn)
        if shared is not None:
            try:
                yield shared.conn
            finally:
                self._release_shared(shared)
            return
        try:
            yield conn
        finally:
            self._give_back(host, conn, generation)

    def failed(self, host: str) -> None:
        """A call to the host failed as unreachable: none of its current connections is reused."""
        with self._lock:
            self._generation[host] += 1
            stale, self._idle[host] = self._idle[host], []
            shared = self._shared.pop(host, None)
            if shared is not None:
                shared.stale = True
                if shared.users == 0:
                    stale.append(shared.conn)
        for conn in stale:
            _close_quietly(conn)

    def close(self) -> None:
        """Close the idle connections; those in use close when their call is done."""
        for host in self._uris:
            self.failed(host)

    # -- daemon connections: one owner at a time --------------------------------------------------
    def _take_idle(self, host: str) -> libvirt.virConnect | None:
        """An idle connection still open. One the keepalive closed while idle is dropped: isAlive()
        asks the client library, not the host, so a healed host is not failed on a dead socket."""
        while True:
            with self._lock:
                if not self._idle[host]:
                    return None
                conn = self._idle[host].pop()
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
            _close_quietly(conn)

    def _give_back(self, host: str, conn: libvirt.virConnect, generation: int) -> None:
        with self._lock:
            keep = generation == self._generation[host] and len(self._idle[host]) < self._keep_idle
            if keep:
                self._idle[host].append(conn)
        if not keep:
            _close_quietly(conn)

    # -- in-process drivers: one connection, shared ------------------------------------------------
    def _hold_shared(self, host: str) -> _Shared | None:
        shared = self._shared.get(host)  # caller holds the lock
        if shared is not None:
            shared.users += 1
        return shared

    def _share(self, host: str, conn: libvirt.virConnect) -> _Shared:
        """Make `conn` the host's shared connection, unless another thread's open won the race."""
        with self._lock:
            shared = self._hold_shared(host)
            if shared is None:
                shared = self._shared[host] = _Shared(conn)
                shared.users = 1
                return shared
        _close_quietly(conn)
        return shared

    def _release_shared(self, shared: _Shared) -> None:
        with self._lock:
            shared.users -= 1
            close_now = shared.stale and shared.users == 0
        if close_now:
            _close_quietly(shared.conn)


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass  # the socket is already gone: that is why it is being closed
