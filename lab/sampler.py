"""Watches every lab host for a VM running twice, from the ground truth: QEMU processes.

Asking libvirt would miss the case that matters most (a partitioned or hung libvirtd whose
guests still run), so the sampler reads /proc: a guest runs on a host while a QEMU process with
its `-uuid` lives in that host's network namespace. Every `interval` seconds it takes one
snapshot of all hosts and records each UUID seen on more than one host.

    with DuplicateSampler(lab) as sampler:
        ...fault and recovery...
    assert sampler.duplicates == []
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.lab import Lab

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class Duplicate:
    at: float  # time.monotonic()
    uuid: str
    hosts: tuple[str, ...]


def qemu_uuids_by_netns() -> dict[int, set[str]]:
    """netns inode -> UUIDs of the QEMU processes in it (one pass over /proc)."""
    found: dict[int, set[str]] = {}
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
        found.setdefault(netns, set()).add(uuid)
    return found


@dataclass
class DuplicateSampler:
    lab: Lab
    interval: float = 0.2
    duplicates: list[Duplicate] = field(default_factory=list)
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._netns = {os.stat(NETNS_DIR / h.netns).st_ino: h.name for h in self.lab.hosts}

    def snapshot(self) -> dict[str, set[str]]:
        """host -> UUIDs running there now."""
        by_ns = qemu_uuids_by_netns()
        return {host: by_ns.get(ino, set()) for ino, host in self._netns.items()}

    def sample(self) -> list[Duplicate]:
        where: dict[str, list[str]] = {}
        for host, uuids in self.snapshot().items():
            for uuid in uuids:
                where.setdefault(uuid, []).append(host)
        now = time.monotonic()
        found = [Duplicate(now, uuid, tuple(sorted(hosts))) for uuid, hosts in where.items() if len(hosts) > 1]
        self.duplicates.extend(found)
        self.samples += 1
        return found

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

    def __enter__(self) -> "DuplicateSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
