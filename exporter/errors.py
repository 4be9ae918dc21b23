"""Counts of the exporter's own errors by kind: `hypervisor_exporter_errors_total{kind}`."""

from __future__ import annotations

import threading

# Every kind is published from the start (at 0), so `rate()` and alerts see the first error.
KINDS: tuple[str, ...] = (
    "connect",  # could not open the libvirt connection in time
    "libvirt",  # a host-level libvirt call failed (the scrape reports hypervisor_up 0)
    "timeout",  # libvirt did not answer within the scrape's deadline (hypervisor_up 0)
    "domain",  # one domain's data could not be read (only its own series are missing)
    "check_timeout",  # a host check did not finish within its timeout (reported failed)
)


class ErrorCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {kind: 0 for kind in KINDS}

    def count(self, kind: str, n: int = 1) -> None:
        if kind not in self._counts:
            raise ValueError(f"unknown error kind {kind!r} (known: {', '.join(KINDS)})")
        with self._lock:
            self._counts[kind] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
