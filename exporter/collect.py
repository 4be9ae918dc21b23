"""The exporter's libvirt edge: one bulk stats call per scrape, definitions cached between scrapes.

Per scrape: `getAllDomainStats(STATE, NOWAIT)` (one round trip for every domain, running or
not; NOWAIT so a domain busy in a job, e.g. migrating, answers with what is at hand instead of
stalling everyone), `getMemoryStats` (one more, only when the host's procfs has no MemAvailable),
and the CPU time of each active domain.

CPU time, measured (20 running + 5 shut-off guests, libvirt 9.0, QEMU 7.2, over TCP, see
docs/metrics.md): the bulk CPU_TOTAL stat group costs ~30 ms per call, because libvirt takes a
job on every domain and asks each QEMU for its halt-polling figures over QMP (`query-stats`,
~1.4 ms a domain), while `virDomainGetInfo` costs ~0.15 ms a domain (it reads /proc and needs
no domain job, so a migrating domain does not block it). So the default `cpu_time_source: info`
makes one small call per active domain, `cpu_time_source: stats` keeps it in the single bulk
call for drivers where that is cheaper.

Those GetInfo calls are the bulk of a scrape. They run one after the other, on this thread, while
the event loop is parked (`event_loop_paused`): each call wakes the loop twice otherwise. They are
not spread over threads on the connection, although that measured faster (3.6 ms for 20 at four at
a time, against 5.8 ms one by one with the loop running): libvirt 9.0's client crashes the process
when its keepalive kills a connection with several calls in flight (found under packet loss, see
remediator/edges/libvirt_pool.py), and an exporter that dies looks like a host that did.

Per connection: host facts (hostname, versions, CPUs, memory). Per domain, only when it is
new, changed (libvirt's lifecycle and metadata events) or older than
`definition_refresh_seconds`: its XML definition, for the HA declaration, vCPUs and memory.

One misbehaving domain (vanished mid-scrape, XML unreadable) costs only its own info series
and counts an `errors_total{kind="domain"}`; an unreachable daemon raises HostUnreachable.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable

import libvirt

from exporter.domains import ACTIVE_STATES, DefinitionError, DomainDefinition, DomainState, parse_definition, vm_state_from_stats
from exporter.errors import ErrorCounter
from exporter.procfs import read_mem_available
from remediator.edges.libvirt_connect import HostUnreachable, event_loop_paused, is_unreachable, open_connection

CPU_TIME_SOURCES = ("info", "stats")
STAT_FLAGS = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
# Events after which a domain's cached definition is re-read.
_INVALIDATING_EVENTS = (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE)


@dataclass(frozen=True)
class HostFacts:
    """What does not change while a connection lives."""

    hostname: str
    libvirt_version: str
    hypervisor: str
    hypervisor_version: str
    cpus: int
    memory_bytes: int


@dataclass(frozen=True)
class VMSample:
    name: str
    uuid: str
    state: DomainState
    definition: DomainDefinition | None  # None when it could not be read this scrape


@dataclass(frozen=True)
class HostSample:
    facts: HostFacts
    memory_available_bytes: int
    vms: tuple[VMSample, ...]
    libvirt_seconds: float  # wall time of this scrape's libvirt calls (the libvirtd check)


class LibvirtSource:
    def __init__(
        self,
        uri: str,
        connect_timeout: float,
        keepalive: tuple[int, int],
        definition_refresh_seconds: float,
        errors: ErrorCounter,
        cpu_time_source: str = "info",
        clock: Callable[[], float] = time.monotonic,
        procfs: str | None = None,
    ) -> None:
        if cpu_time_source not in CPU_TIME_SOURCES:
            raise ValueError(f"cpu_time_source must be one of {CPU_TIME_SOURCES}, not {cpu_time_source!r}")
        self._stat_groups = libvirt.VIR_DOMAIN_STATS_STATE | (
            libvirt.VIR_DOMAIN_STATS_CPU_TOTAL if cpu_time_source == "stats" else 0
        )
        self._cpu_from_info = cpu_time_source == "info"
        self._uri = uri
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._definition_refresh = definition_refresh_seconds
        self._errors = errors
        self._clock = clock
        self._procfs = procfs  # the host's own /proc for MemAvailable; None: ask libvirt only
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._facts: HostFacts | None = None
        self._memory_stats_supported = True
        self._definitions: dict[str, tuple[DomainDefinition, float]] = {}
        # UUIDs whose definition changed (set from libvirt's event thread).
        self._dirty_lock = threading.Lock()
        self._dirty: set[str] = set()

    def collect(self) -> HostSample:
        """One scrape's worth of libvirt data; HostUnreachable or libvirtError when the host fails."""
        conn = self._connection()
        started = self._clock()
        try:
            facts = self._facts or self._read_facts(conn)
            self._facts = facts
            with event_loop_paused():  # a burst of round trips; keepalive still bounds each one
                records = conn.getAllDomainStats(self._stat_groups, STAT_FLAGS)
                cpu = self._cpu_seconds_of_active(records)
                available = self._memory_available(conn)
                vms = tuple(self._vm_sample(dom, stats, cpu) for dom, stats in records)
        except libvirt.libvirtError as err:
            self._errors.count("libvirt")
            if is_unreachable(err):
                self.reset()
                raise HostUnreachable(self._uri, err.get_error_message()) from err
            raise
        self._forget_missing({vm.uuid for vm in vms})
        return HostSample(facts, available, vms, self._clock() - started)

    def reset(self) -> None:
        """Drop the connection and everything learnt through it; the next collect() reconnects."""
        conn, self._conn = self._conn, None
        self._facts = None
        self._definitions.clear()
        if conn is None:
            return
        for callback_id in self._callback_ids:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass  # the connection is already gone; the callback with it
        self._callback_ids.clear()
        try:
            conn.close()
        except libvirt.libvirtError:
            pass  # closing a broken connection reports the breakage again; nothing left to do

    def _connection(self) -> libvirt.virConnect:
        if self._conn is not None:
            return self._conn
        try:
            conn = open_connection(self._uri, self._connect_timeout, self._keepalive, read_only=True)
        except HostUnreachable:
            self._errors.count("connect")
            raise
        self._definitions.clear()
        try:
            for event_id in _INVALIDATING_EVENTS:
                self._callback_ids.append(conn.domainEventRegisterAny(None, event_id, self._on_event, None))
        except libvirt.libvirtError as err:
            conn.close()
            self._callback_ids.clear()
            self._errors.count("connect")
            raise HostUnreachable(self._uri, f"cannot subscribe to domain events: {err.get_error_message()}") from err
        self._conn = conn
        return conn

    def _on_event(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, *_args: object) -> None:
        with self._dirty_lock:
            self._dirty.add(dom.UUIDString())

    def _read_facts(self, conn: libvirt.virConnect) -> HostFacts:
        info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
        return HostFacts(
            hostname=conn.getHostname(),
            libvirt_version=_version(conn.getLibVersion()),
            hypervisor=conn.getType().lower(),
            hypervisor_version=_version(conn.getVersion()),
            cpus=int(info[2]),
            memory_bytes=int(info[1]) * 1024 * 1024,
        )

    def _memory_available(self, conn: libvirt.virConnect) -> int:
        # The kernel's own MemAvailable first (it counts only the reclaimable part of the caches);
        # libvirt's free + buffers + cached when the procfs root has none.
        available = read_mem_available(self._procfs) if self._procfs is not None else None
        if available is not None:
            return available
        if self._memory_stats_supported:
            try:
                stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                self._memory_stats_supported = False  # e.g. the test driver: use free memory
            else:
                # What the kernel can hand to a new guest without swapping: free + page cache.
                return sum(stats.get(key, 0) for key in ("free", "buffers", "cached")) * 1024
        return int(conn.getFreeMemory())

    def _cpu_seconds_of_active(self, records: list[tuple[libvirt.virDomain, dict]]) -> dict[str, float | None]:
        """GetInfo of every active domain, one call at a time (nothing when CPU time comes in the bulk call)."""
        if not self._cpu_from_info:
            return {}
        return {dom.UUIDString(): self._cpu_seconds(dom) for dom, stats in records
                if vm_state_from_stats(stats).state in ACTIVE_STATES}

    def _vm_sample(self, dom: libvirt.virDomain, stats: dict, cpu: dict[str, float | None]) -> VMSample:
        uuid = dom.UUIDString()  # both held by the client-side object: no round trip
        name = dom.name()
        state = vm_state_from_stats(stats)
        if uuid in cpu:
            state = dataclasses.replace(state, cpu_seconds=cpu[uuid])
        return VMSample(name, uuid, state, self._definition(dom, uuid))

    def _cpu_seconds(self, dom: libvirt.virDomain) -> float | None:
        try:
            return dom.info()[4] / 1e9  # [state, max memory KiB, memory KiB, vcpus, cpu time ns]
        except libvirt.libvirtError as err:
            if is_unreachable(err):
                raise
            self._errors.count("domain")  # stopped or vanished since the bulk call: only its CPU series
            return None

    def _definition(self, dom: libvirt.virDomain, uuid: str) -> DomainDefinition | None:
        now = self._clock()
        with self._dirty_lock:
            changed = uuid in self._dirty
            self._dirty.discard(uuid)
        cached = self._definitions.get(uuid)
        if cached is not None and not changed and now - cached[1] < self._definition_refresh:
            return cached[0]
        try:
            # The persistent definition: the operator's declared intent, the same before and
            # after a crash (a running domain's live XML would differ until its next start).
            definition = parse_definition(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as err:
            if is_unreachable(err):
                raise
            self._errors.count("domain")  # vanished mid-scrape, or refused: only this VM degrades
            self._definitions.pop(uuid, None)
            return None
        except DefinitionError:
            self._errors.count("domain")
            self._definitions.pop(uuid, None)
            return None
        self._definitions[uuid] = (definition, now)
        return definition

    def _forget_missing(self, present: set[str]) -> None:
        for uuid in set(self._definitions) - present:
            del self._definitions[uuid]


def _version(number: int) -> str:
    """libvirt's packed version (major * 1,000,000 + minor * 1,000 + release) as "major.minor.release"."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"
