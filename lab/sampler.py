"""Watches every lab host for a VM running twice, from the ground truth: QEMU processes.

Asking libvirt would miss the case that matters most (a partitioned or hung libvirtd whose
guests still run), so the sampler reads /proc: a guest runs on a host while a QEMU process with
its `-uuid` lives in that host's network namespace. Every `interval` seconds it takes one
snapshot of all hosts and records each UUID seen on more than one host.

One exception, checked only for a UUID seen twice: a live migration has a QEMU on both hosts by
design, the destination's waiting for the guest's state, then the source's stopped until it exits.
Those two never run the guest at once: libvirt shows one of them paused for the migration
(reason migration, or starting up on the destination), asked over each host's own unix socket
(no network, so a partition does not hide it). After the switch-over, libvirt forgets the source's
domain (--undefinesource) and kills its paused QEMU, which may take a few samples to exit: a QEMU
that its libvirt no longer knows (VIR_ERR_NO_DOMAIN) is given FORGOTTEN_GRACE_S to go, then
counts. Anything else, including a libvirt that does not answer, counts as running.

    with DuplicateSampler(lab) as sampler:
        ...fault and recovery...
    assert sampler.duplicates == []
"""
from __future__ import annotations

import os
import threading

import libvirt
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.lab import Lab

NETNS_DIR = Path("/run/netns")


_MIGRATION_PAUSES = frozenset({libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP})
# Measured on the lab (2 cores, shared): a migrated-away source QEMU outlived its domain by one or
# two 50 ms samples.
FORGOTTEN_GRACE_S = 2.0


@dataclass(frozen=True)
class Duplicate:
    at: float  # time.monotonic()
    uuid: str
    hosts: tuple[str, ...]


def qemu_uuids_by_netns() -> dict[int, dict[str, int]]:
    """netns inode -> {UUID: pid} of the QEMU processes in it (one pass over /proc)."""
    found: dict[int, dict[str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            if not argv or not argv[0].endswith(b"qemu-system-x86_64") or b"-uuid" not in argv:
                continue
            uuid = argv[argv.index(b"-uuid") + 1].decode()
            netns = os.stat(f"{entry.path}/ns/net").st_ino
        except (OSError, IndexError):
            continue  # the process ended while we looked
        found.setdefault(netns, {})[uuid] = int(entry.name)
    return found


def _still_runs(pid: int, uuid: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-uuid" in argv and argv[argv.index(b"-uuid") + 1].decode() == uuid


@dataclass
class DuplicateSampler:
    lab: Lab
    interval: float = 0.2
    duplicates: list[Duplicate] = field(default_factory=list)
    samples: int = 0

    migrations_seen: int = 0  # UUIDs on two hosts where one copy was paused for a live migration

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._netns = {os.stat(NETNS_DIR / h.netns).st_ino: h.name for h in self.lab.hosts}
        self._conns: dict[str, libvirt.virConnect] = {}
        self._forgotten_since: dict[tuple[str, str], float] = {}  # (host, uuid) -> first seen unknown

    def snapshot(self) -> dict[str, dict[str, int]]:
        """host -> {UUID: QEMU pid} running there now."""
        by_ns = qemu_uuids_by_netns()
        return {host: by_ns.get(ino, {}) for ino, host in self._netns.items()}

    def sample(self) -> list[Duplicate]:
        where: dict[str, list[str]] = {}
        pids: dict[str, list[int]] = {}
        for host, uuids in self.snapshot().items():
            for uuid, pid in uuids.items():
                where.setdefault(uuid, []).append(host)
                pids.setdefault(uuid, []).append(pid)
        now = time.monotonic()
        twice = {(host, uuid) for uuid, hosts in where.items() if len(hosts) > 1 for host in hosts}
        for key in set(self._forgotten_since) - twice:  # gone: a later migration starts its own grace
            del self._forgotten_since[key]
        found = []
        for uuid, hosts in where.items():
            if len(hosts) < 2:
                continue
            if self._one_copy_is_migrating(uuid, hosts):
                self.migrations_seen += 1
                continue
            if not all(_still_runs(pid, uuid) for pid in pids[uuid]):
                # One copy exited while libvirt was asked (a migration's source finishing): the states
                # read belong to a later moment than the snapshot, so they prove nothing either way.
                self.migrations_seen += 1
                continue
            found.append(Duplicate(now, uuid, tuple(sorted(hosts))))
        self.duplicates.extend(found)
        self.samples += 1
        return found

    def _one_copy_is_migrating(self, uuid: str, hosts: list[str]) -> bool:
        return any(self._paused_for_migration(host, uuid) for host in hosts)

    def _paused_for_migration(self, host: str, uuid: str) -> bool:
        # A kept connection may be to a libvirtd that has since restarted (a reinstalled host, a
        # libvirtd restart): its error says nothing of the guest, so ask once more on a new one.
        for fresh in (host not in self._conns, True):
            try:
                conn = self._conns.get(host)
                if conn is None:
                    conn = self._conns[host] = libvirt.open(self.lab.host(host).unix_uri)
                state, reason = conn.lookupByUUIDString(uuid).state()
                break
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:  # libvirt answered: it forgot this one
                    since = self._forgotten_since.setdefault((host, uuid), time.monotonic())
                    return time.monotonic() - since < FORGOTTEN_GRACE_S
                self._conns.pop(host, None)
                if fresh:
                    return False  # libvirt cannot tell: the QEMU counts as running
        # Measured on the lab: the destination is paused "starting up", then "migration", until it runs
        # ("migrated"); the source is paused "migration" from the switch-over until its QEMU exits.
        return state == libvirt.VIR_DOMAIN_PAUSED and reason in _MIGRATION_PAUSES

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> "DuplicateSampler":
        self._thread = threading.Thread(target=self._run, name="duplicate-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for conn in self._conns.values():
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
        self._conns.clear()

    def __enter__(self) -> "DuplicateSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
