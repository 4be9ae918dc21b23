"""The fast path's ears: libvirt's domain lifecycle events from every host, as they happen.

A crashed guest is a lifecycle event the moment QEMU dies (stopped, detail crashed or failed, or
the crashed event itself), seconds before a scrape, a rule and Alertmanager report it. Each host
has one watcher thread that owns one connection of its own (the rule of libvirt_pool.py: a
connection is used by one thread, and closed by it, never from the event loop). The callback,
which libvirt runs on its event loop thread, only puts what happened on a queue: no libvirt call,
no store, nothing that can block the loop. A connection that dies (the host is down or cut off)
is noticed by its watcher within CHECK_EVERY_S (HostLost), closed by it, and opened again with a
backoff; the alert path keeps covering that host meanwhile.

The watchers' connections are also evidence for verification (`link(host)`, `round_trip(host)`):
one whose keepalive failed at most LOSS_TRUSTED_FOR_S ago says the host does not answer (LOST), at
once, with no fresh connect timeout to pay. An older loss says nothing (UNKNOWN: World.answers
then asks with one bounded fresh probe), even when every reconnect since has failed: the link may
have healed since the watcher's latest attempt, and trusting that once fenced a host that had
healed half a second earlier (a storm released right after both hosts healed). After a loss the
watcher retries at most every RECONNECT_FAST_S for FAST_RETRIES_FOR_S, so that a healed host is
watched again within a second or so. A connection still up is not yet proof that the host
answers: an alert can arrive before the keepalive has noticed a cut (it needs ~4 s). So
`round_trip(host)` asks the watcher to make one real call on its kept-alive connection: a living
host answers it, even through a slow, lossy link that a fresh connect could not cross in time; a
cut-off host fails it when the keepalive closes the connection.
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
# After a loss the watcher tries again at least this often for a while: a healed host is watched
# (and its crashes heard) again within about a second.
RECONNECT_FAST_S = 1.0
FAST_RETRIES_FOR_S = 60.0
# How long a failed keepalive is proof enough on its own. The keepalive fails only after the host
# has not answered for ~4 s (1 s x 3, plus the watcher's check); a partition that heals within this
# much after that is one that lasted past every bound the alert path has (HostDown's for: 2 s
# included), so fencing it is what the timings promise. Later than this, the link may have healed
# unseen: a fresh probe decides. The alert and the keepalive both need ~4 s, so a HostDown alert
# for a cut host is verified well within it (bench-recovery's host_partition: 0.0-0.5 s apart).
LOSS_TRUSTED_FOR_S = 2.0
# A round trip on a kept-alive connection ends within the keepalive's bound (1 s x 3: a cut link
# fails the call after ~4 s); waiting longer than this means the watcher itself is stuck.
ROUND_TRIP_BOUND_S = 10.0


class Link(Enum):
    """What a host's watcher connection says of the host, for verification."""

    ANSWERS = "answers"  # held up by keepalive now: the host's libvirt answers
    LOST = "lost"  # its keepalive failed (or the socket closed) just now: the host does not answer
    UNKNOWN = "unknown"  # no watcher, never connected, or the loss is too old: ask afresh


@dataclass
class _LinkState:
    connected: bool = False
    lost_at: float | None = None  # monotonic: the held connection died (None: none died since the last)


def link_evidence(state: _LinkState, now: float, trusted_s: float = LOSS_TRUSTED_FOR_S) -> Link:
    """The pure rule: ANSWERS while connected; LOST only when a held connection died at most
    trusted_s ago; else UNKNOWN (a failed reconnect is not proof: the link may heal between two)."""
    if state.connected:
        return Link.ANSWERS
    if state.lost_at is None or now - state.lost_at > trusted_s:
        return Link.UNKNOWN
    return Link.LOST


class _Probe:
    """Round trips wanted from one host's watcher: generations asked and answered."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.wake = threading.Event()
        self.wanted = 0
        self.done = 0
        self.ok = False

    def ask(self) -> int:
        with self.cond:
            self.wanted += 1
            self.wake.set()
            return self.wanted

    def take(self) -> int | None:
        """The watcher's side: the latest generation asked, if any is not answered yet."""
        with self.cond:
            self.wake.clear()
            return self.wanted if self.wanted > self.done else None

    def answer(self, generation: int, ok: bool) -> None:
        with self.cond:
            if generation > self.done:
                self.done, self.ok = generation, ok
            self.cond.notify_all()

    def fail_pending(self) -> None:
        """The connection is gone: every round trip asked so far has failed."""
        self.answer(self.wanted, False)

    def wait(self, generation: int, timeout: float) -> bool | None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.done >= generation, timeout):
                return None
            return self.ok


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
        self._probes = {host: _Probe() for host in self._uris}

    def link(self, host: str) -> Link:
        """What this host's watcher connection says of it now (see the module's docstring)."""
        with self._links_lock:
            state = self._links.get(host)
            if state is None:
                return Link.UNKNOWN
            return link_evidence(state, time.monotonic())

    def round_trip(self, host: str, bound_s: float = ROUND_TRIP_BOUND_S) -> Link:
        """A real call on the host's kept-alive connection, made by its watcher: ANSWERS when it
        returned, LOST when it failed (the connection is gone: a cut-off host fails it once the
        keepalive closes it, ~4 s after the cut). Without a live connection, the held evidence
        (`link`). UNKNOWN when the watcher did not answer within `bound_s`: nothing is known."""
        if self.link(host) is not Link.ANSWERS:
            return self.link(host)
        probe = self._probes[host]
        generation, deadline = probe.ask(), time.monotonic() + bound_s
        while (answered := probe.wait(generation, CHECK_EVERY_S)) is None:
            if self.link(host) is not Link.ANSWERS:  # lost meanwhile, before the watcher took the ask
                return self.link(host)
            if time.monotonic() > deadline:
                return Link.UNKNOWN
        return Link.ANSWERS if answered else self.link(host)

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
                if lost_at is not None and time.monotonic() - lost_at < FAST_RETRIES_FOR_S:
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
            self._note(host, connected=True, lost_at=None)
            lost_at = None
            probe = self._probes[host]
            while True:
                probe.wake.wait(CHECK_EVERY_S)
                if self._stop.is_set():
                    break
                asked = probe.take()
                ok = _alive(conn) and (asked is None or _answers(conn))
                if not ok:
                    lost_at = time.monotonic()
                    self._note(host, connected=False, lost_at=lost_at)
                    probe.fail_pending()
                    log.info("events %s: connection lost; the alert path covers the host until it is back", host)
                    self.crashes.put(HostLost(host, lost_at))
                    break
                if asked is not None:
                    probe.answer(asked, True)
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass  # the connection is gone, and the callback with it
            _close(conn)
        self._note(host, connected=False)  # stopping: the watcher speaks for the host no more
        self._probes[host].fail_pending()

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


def _answers(conn: libvirt.virConnect) -> bool:
    """One cheap RPC to the daemon (its version): it returns from a living host however slow the
    link, and fails when the keepalive closes the connection of a cut-off one."""
    try:
        conn.getLibVersion()
        return True
    except libvirt.libvirtError:
        return False


def _close(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass  # closing a broken connection reports the breakage again
