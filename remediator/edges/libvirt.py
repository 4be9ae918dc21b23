"""The hypervisors, through libvirt: the only module of the service that changes a host's domains.

Connections are opened with a timeout and kept alive (see libvirt_connect), so a dead or
partitioned host costs seconds, not minutes. Each call leases a connection of its own for its
duration (libvirt_pool: libvirt crashed when threads shared one that broke). Any libvirt error that
means "cannot talk to the host" becomes `HostUnreachable` and drops the host's connections; other
libvirt errors are re-raised as `DomainError` naming the host and the domain. Every write is
idempotent (starting a running domain, defining the same XML, undefining what is gone all succeed),
so an action resumed after a restart does not fail on its own earlier half.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import libvirt

from remediator.edges import libvirt_storage
from remediator.edges.libvirt_connect import HostUnreachable, is_unreachable
from remediator.edges.libvirt_disks import DiskOps, is_disk_locked
from remediator.edges.libvirt_pool import ConnectionPool

__all__ = ["DiskLocked", "DomainError", "DomainInfo", "HostUnreachable", "Hypervisors", "MigrationResult",
           "STATE_NAMES"]

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
# A domain in one of these states has a live QEMU process: it counts as running for "never twice".
ALIVE_STATES = frozenset({"running", "blocked", "paused", "shutdown", "pmsuspended"})

_STATS = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU
_UNDEFINE_FLAGS = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
_MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


class DomainError(RuntimeError):
    """libvirt refused an operation on a reachable host."""

    def __init__(self, host: str, what: str, message: str, code: int | None = None):
        super().__init__(f"{host}: {what}: {message}")
        self.host = host
        self.code = code


class DiskLocked(DomainError):
    """A start refused because a disk is leased or locked by another QEMU: the VM runs somewhere else.
    Never a reason to try harder or to rebuild (edges/libvirt_disks.py)."""


@dataclass(frozen=True)
class DomainInfo:
    uuid: str
    name: str
    state: str  # one of STATE_NAMES' values
    reason: int  # libvirt's state reason code (e.g. VIR_DOMAIN_SHUTOFF_CRASHED)
    vcpus: int
    memory_bytes: int

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES


@dataclass(frozen=True)
class MigrationResult:
    """A completed live migration, from the destination's completed-job statistics.

    downtime_ms: how long the guest was paused for the final switch-over (libvirt's `downtime`);
    total_ms: the migration job from start to end (`time_elapsed`); wall_s: the migrate call as the
    caller waited for it. A figure the driver does not report is None (the guest still moved).
    """

    downtime_ms: int | None
    total_ms: int | None
    wall_s: float


def address_of(uri: str) -> str | None:
    """The host part of a libvirt URI (qemu+tcp://10.0.0.5/system -> 10.0.0.5), for the migration stream."""
    return urlsplit(uri).hostname


def uuid_of_xml(xml: str) -> str | None:
    node = ET.fromstring(xml).find("uuid")
    return node.text.strip() if node is not None and node.text else None


class Hypervisors(DiskOps):
    def __init__(self, hosts: Mapping[str, str], connect_timeout: float = 3.0,
                 gate: Callable[[str], None] | None = None):
        """`gate(what)` is called before every call to a host and again right before every call that
        changes something (create, destroy, define, undefine, migrate, autostart, disk): a replica that
        lost its lease raises there (leadership.LeaseLost) and nothing reaches libvirt."""
        self._gate = gate or (lambda what: None)
        self._uris = dict(hosts)
        self._pool = ConnectionPool(self._uris, connect_timeout)

    @property
    def hosts(self) -> list[str]:
        return list(self._uris)

    # -- connections ---------------------------------------------------------------------------
    def _lease(self, host: str):
        """A connection to the host for one call (context manager; HostUnreachable if none)."""
        return self._pool.lease(host)

    def _call(self, host: str, what: str, fn):
        """Run fn(conn) on a connection leased to this thread, translating libvirt's errors into
        HostUnreachable or DomainError. fn returns plain data: no domain object outlives the lease."""
        self._gate(what)
        with self._lease(host) as conn:  # raises HostUnreachable
            try:
                self._gate(what)  # again: the lease may have waited
                return fn(conn)
            except libvirt.libvirtError as err:
                if is_unreachable(err):
                    self._pool.failed(host)
                    raise HostUnreachable(self._uris[host], err.get_error_message()) from err
                error = DiskLocked if is_disk_locked(err) else DomainError
                raise error(host, what, err.get_error_message(), err.get_error_code()) from err

    def close(self) -> None:
        self._pool.close()

    # -- reads ---------------------------------------------------------------------------------
    def is_reachable(self, host: str) -> bool:
        try:
            self._call(host, "ping", lambda conn: conn.getLibVersion())
            return True
        except HostUnreachable:
            return False

    def domains(self, host: str) -> list[DomainInfo]:
        """Every defined domain of the host, running or not, in one bulk call."""

        def fetch(conn):
            return [_domain_info(dom, stats) for dom, stats in conn.getAllDomainStats(_STATS)]

        return self._call(host, "list domains", fetch)

    def capacity(self, host: str) -> tuple[int, int]:
        """(CPUs, memory bytes) of the host."""
        info = self._call(host, "node info", lambda conn: conn.getInfo())
        return int(info[2]), int(info[1]) * 1024 * 1024

    def domain_xml(self, host: str, uuid: str) -> str:
        """The persistent definition (inactive XML, with secrets) to recreate the domain elsewhere."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
        return self._call(host, f"XML of {uuid}", lambda conn: conn.lookupByUUIDString(uuid).XMLDesc(flags))

    def find_running(self, uuid: str, hosts: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
        """(hosts where the domain is alive, hosts that could not be asked)."""
        running, unknown = [], []
        for host in hosts if hosts is not None else self._uris:
            try:
                state = self._domain_state(host, uuid)
            except HostUnreachable:
                unknown.append(host)
                continue
            if state is not None and state in ALIVE_STATES:
                running.append(host)
        return running, unknown

    def _domain_state(self, host: str, uuid: str) -> str | None:
        def fetch(conn):
            try:
                dom = conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise
            return STATE_NAMES.get(dom.state()[0], "nostate")

        return self._call(host, f"state of {uuid}", fetch)

    # -- writes (idempotent) ---------------------------------------------------------------------
    def start(self, host: str, uuid: str) -> None:
        def run(conn):
            dom = conn.lookupByUUIDString(uuid)
            if not dom.isActive():
                self._gate(f"start {uuid}")
                dom.create()

        self._call(host, f"start {uuid}", run)

    def define(self, host: str, xml: str) -> str:
        def run(conn):
            self._gate("define")
            return conn.defineXML(xml).UUIDString()

        return self._call(host, "define", run)

    def define_and_start(self, host: str, xml: str) -> str:
        uuid = self.define(host, xml)
        self.start(host, uuid)
        return uuid

    def destroy(self, host: str, uuid: str) -> None:
        def run(conn):
            dom = _lookup(conn, uuid)
            if dom is not None and dom.isActive():
                self._gate(f"destroy {uuid}")
                dom.destroy()

        self._call(host, f"destroy {uuid}", run)

    def undefine(self, host: str, uuid: str) -> bool:
        """Remove a definition that is not running (a stale copy on a host that came back); True when
        there was one. A running domain is refused (DomainError): a copy that runs is never touched."""

        def run(conn):
            dom = _lookup(conn, uuid)
            if dom is None:
                return False
            if dom.isActive():
                raise DomainError(host, f"undefine {uuid}", "domain is running; refusing to undefine it")
            self._gate(f"undefine {uuid}")
            try:
                # A UEFI guest's NVRAM and a managed save would otherwise block the undefine.
                dom.undefineFlags(_UNDEFINE_FLAGS)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                    raise
                dom.undefine()  # drivers without those features refuse the flags themselves
            return True

        return self._call(host, f"undefine {uuid}", run)

    def recreate_disk(self, host: str, uuid: str, path: str, base: str, base_format: str) -> bool:
        """The disk at `path` on `host` made anew as a qcow2 overlay of `base` for the domain `uuid`
        (libvirt_storage.py); True when an old file was replaced. DomainError when another domain of the
        host uses that path (it is never replaced)."""

        def run(conn):
            try:
                self._gate(f"recreate {path}")
                return libvirt_storage.recreate_overlay(conn, path, base, base_format, owner=uuid)
            except libvirt_storage.DiskInUse as err:
                raise DomainError(host, f"recreate {path}", str(err)) from err

        return self._call(host, f"recreate {path} from {base}", run)

    def migrate_live(self, src: str, dst: str, uuid: str) -> MigrationResult:
        """Live-migrate, persistent on the destination and undefined on the source.

        The migration stream goes to the destination's address from its URI (tcp://<address>), not
        to the hostname libvirt would otherwise resolve on the source. A destination that refuses
        (e.g. its qemu hook fails, code VIR_ERR_HOOK_SCRIPT_FAILED) raises DomainError and the
        guest keeps running on the source.
        """
        address = address_of(self._pool.uri(dst))
        migrate_uri = f"tcp://{address}" if address else None
        # The client drives the migration on both connections: each is leased for its whole length.
        with self._lease(dst) as dst_conn:

            def run(conn):
                started = time.monotonic()
                self._gate(f"migrate {uuid} to {dst}")
                moved = conn.lookupByUUIDString(uuid).migrate(dst_conn, _MIGRATE_FLAGS, None, migrate_uri, 0)
                # the virDomain migrate() returns belongs to dst_conn: read and dropped inside the lease
                return _migration_result(moved, time.monotonic() - started)

            return self._call(src, f"migrate {uuid} to {dst}", run)


    def set_autostart(self, host: str, uuid: str, on: bool) -> None:
        """Whether libvirtd starts the domain when it starts (off for a copy that must not run)."""

        def run(conn):
            dom = _lookup(conn, uuid)
            if dom is not None and bool(dom.autostart()) != on:
                self._gate(f"autostart {uuid}")
                dom.setAutostart(int(on))

        self._call(host, f"autostart {uuid}", run)


def _lookup(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _migration_result(moved: libvirt.virDomain, wall_s: float) -> MigrationResult:
    """Read the completed job on the destination: with VIR_MIGRATE_UNDEFINE_SOURCE the source's
    domain is gone, and libvirt copies the source's figures into the destination's completed job.
    KEEP_COMPLETED leaves them for `virsh domjobinfo --completed`."""
    try:
        stats = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
    except libvirt.libvirtError:
        stats = {}  # the guest moved; only its figures are missing
    downtime, elapsed = stats.get("downtime"), stats.get("time_elapsed")
    return MigrationResult(
        downtime_ms=None if downtime is None else int(downtime),
        total_ms=None if elapsed is None else int(elapsed),
        wall_s=wall_s,
    )


def _domain_info(dom: libvirt.virDomain, stats: Mapping) -> DomainInfo:
    state = stats.get("state.state", libvirt.VIR_DOMAIN_NOSTATE)
    vcpus, memory_kib = stats.get("vcpu.maximum"), stats.get("balloon.maximum")
    if vcpus is None or memory_kib is None:
        # Drivers that do not report these stat groups (test driver, some inactive domains):
        # one more round trip for this domain only.
        _, memory_kib, _, vcpus, _ = dom.info()
    return DomainInfo(
        uuid=dom.UUIDString(),
        name=dom.name(),
        state=STATE_NAMES.get(state, "nostate"),
        reason=int(stats.get("state.reason", 0)),
        vcpus=int(vcpus),
        memory_bytes=int(memory_kib) * 1024,
    )
