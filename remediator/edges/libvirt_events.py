"""The fast path's ears: libvirt's domain lifecycle events from every host, as they happen.

A crashed guest is a lifecycle event the moment QEMU dies (stopped, detail crashed or failed, or
the crashed event itself), seconds before a scrape, a rule and Alertmanager report it. Each host
has one watcher thread that owns one connection of its own (the rule of libvirt_pool.py: a
connection is used by one thread, and closed by it, never from the event loop). The callback,
which libvirt runs on its event loop thread, only puts what happened on a queue: no libvirt call,
no store, nothing that can block the loop. A connection that dies (the host is down or cut off)
is noticed by its watcher within CHECK_EVERY_S (HostLost), closed by it, and opened again with a
backoff; the alert path keeps covering that host meanwhile.

The watchers' connections are also evidence for verification (`link(host)`): a connection that
keepalive holds up says the host answers; one whose keepalive failed, with every reconnect since
failed too, says it does not, without paying a fresh connect timeout (a cut-off host's libvirt
never answers, so a fresh probe costs exactly its timeout). That evidence is only as old as the
watcher's latest failed attempt: the watcher retries at most every RECONNECT_FAST_S for
FAST_RETRIES_FOR_S after a loss, and evidence older than `fresh_s` counts as none.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Mapping

import libvirt

from remediator.edges.libvirt_connect import HostUnreachable, open_kept_alive

log = logging.getLogger(__name__)

# (event, detail) pairs that mean "the guest died without anyone asking" (libvirt's enums).
CRASH_EVENTS = frozenset({
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED),
    (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED),
})
CHECK_EVERY_S = 0.25  # isAlive() is a local check: cheap
RECONNECT_MAX_S = 10.0
# After a loss the watcher tries again at least this often for a while, so that "lost, and every
# reconnect since failed" stays fresh while the alert path (for: 5s) and verification run.
RECONNECT_FAST_S = 1.0
FAST_RETRIES_FOR_S = 60.0


class Link(Enum):
    """What a host's watcher connection says of the host, for verification."""

    ANSWERS = "answers"  # held up by keepalive now: the host's libvirt answers
    LOST = "lost"  # its keepalive failed (or the socket closed) and no reconnect has succeeded since
    UNKNOWN = "unknown"  # no watcher, never connected, or the evidence is too old: ask afresh


@dataclass
class _LinkState:
    connected: bool = False
    lost_at: float | None = None  # monotonic: the held connection died
    failed_at: float | None = None  # monotonic: the latest reconnect attempt that failed since


def link_evidence(state: _LinkState, now: float, fresh_s: float) -> Link:
    """The pure rule: ANSWERS while connected; LOST only after a held connection died, when the
    latest sign of it (the loss or a failed reconnect) is at most fresh_s old; else UNKNOWN."""
    if state.connected:
        return Link.ANSWERS
    if state.lost_at is None:
        return Link.UNKNOWN
    latest = max(state.lost_at, state.failed_at or state.lost_at)
    return Link.LOST if now - latest <= fresh_s else Link.UNKNOWN


@dataclass(frozen=True)
class HostLost:
    """The watcher's connection to the host died (socket closed, keepalive timed out)."""

    host: str
    at_monotonic: float


@dataclass(frozen=True)
class Crash:
    host: str
    uuid: str
    name: str
    at_monotonic: float
    reason: str  # "crashed", "failed", "panicked"


class DomainEvents:
    """Watch every host; `crashes` is the queue the engine reads."""

    def __init__(self, hosts: Mapping[str, str], connect_timeout: float = 2.0):
        self._uris = dict(hosts)
        self._timeout = connect_timeout
        self.crashes: "queue.Queue[Crash | HostLost]" = queue.Queue()  # what the engine reads, in order
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._links = {host: _LinkState() for host in self._uris}
        self._links_lock = threading.Lock()
        # A failed attempt's evidence lasts one attempt (timeout) plus one wait between attempts.
        self.fresh_s = connect_timeout + RECONNECT_FAST_S

    def link(self, host: str) -> Link:
        """What this host's watcher connection says of it now (see the module's docstring)."""
        with self._links_lock:
            state = self._links.get(host)
            if state is None:
                return Link.UNKNOWN
            return link_evidence(state, time.monotonic(), self.fresh_s)

    def _note(self, host: str, **change) -> None:
        with self._links_lock:
            for key, value in change.items():
                setattr(self._links[host], key, value)

    def start(self) -> None:
        self._stop.clear()  # started again when a replica leads again
        self._threads = [t for t in self._threads if t.is_alive()]
        for host, uri in self._uris.items():
            thread = threading.Thread(target=self._watch, args=(host, uri), name=f"events {host}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _watch(self, host: str, uri: str) -> None:
        backoff = CHECK_EVERY_S
        lost_at = None
        while not self._stop.is_set():
            try:
                conn, _ = open_kept_alive(uri, self._timeout)
            except HostUnreachable as err:
                now = time.monotonic()
                self._note(host, failed_at=now)
                if lost_at is not None and now - lost_at < FAST_RETRIES_FOR_S:
                    backoff = min(backoff, RECONNECT_FAST_S)
                log.debug("events %s: %s; trying again in %.0f s", host, err, backoff)
                self._stop.wait(backoff)
                backoff = min(RECONNECT_MAX_S, backoff * 2)
                continue
            backoff = CHECK_EVERY_S
            try:
                callback_id = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                          self._on_lifecycle, host)
            except libvirt.libvirtError as err:
                log.warning("events %s: cannot subscribe: %s", host, err.get_error_message())
                _close(conn)
                self._stop.wait(backoff)
                continue
            log.info("events %s: watching domain lifecycle events", host)
            self._note(host, connected=True, lost_at=None, failed_at=None)
            lost_at = None
            while not self._stop.wait(CHECK_EVERY_S):
                if not _alive(conn):
                    lost_at = time.monotonic()
                    self._note(host, connected=False, lost_at=lost_at, failed_at=None)
                    log.info("events %s: connection lost; the alert path covers the host until it is back", host)
                    self.crashes.put(HostLost(host, lost_at))
                    break
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass  # the connection is gone, and the callback with it
            _close(conn)
        self._note(host, connected=False)  # stopping: the watcher speaks for the host no more

    def _on_lifecycle(self, _conn, dom, event: int, detail: int, host: str) -> None:
        # On libvirt's event loop thread: read what the domain object holds already, queue, return.
        if (event, detail) not in CRASH_EVENTS:
            return
        reason = {libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed"}.get(detail, "crashed") if (
            event == libvirt.VIR_DOMAIN_EVENT_STOPPED) else "panicked"
        self.crashes.put(Crash(host, dom.UUIDString(), dom.name(), time.monotonic(), reason))


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass  # closing a broken connection reports the breakage again
