"""The fast path's ears: libvirt's domain lifecycle events from every host, as they happen.

A crashed guest is a lifecycle event the moment QEMU dies (stopped, detail crashed or failed, or
the crashed event itself), seconds before a scrape, a rule and Alertmanager report it. Each host
has one watcher thread that owns one connection of its own (the rule of libvirt_pool.py: a
connection is used by one thread, and closed by it, never from the event loop). The callback,
which libvirt runs on its event loop thread, only puts what happened on a queue: no libvirt call,
no store, nothing that can block the loop. A connection that dies (the host is down or cut off)
is noticed by its watcher within CHECK_EVERY_S (HostLost), closed by it, and opened again with a
backoff; the alert path keeps covering that host meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
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
        while not self._stop.is_set():
            try:
                conn, _ = open_kept_alive(uri, self._timeout)
            except HostUnreachable as err:
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
            while not self._stop.wait(CHECK_EVERY_S):
                if not _alive(conn):
                    log.info("events %s: connection lost; the alert path covers the host until it is back", host)
                    self.crashes.put(HostLost(host, time.monotonic()))
                    break
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass  # the connection is gone, and the callback with it
            _close(conn)

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
