"""The host's own kernel figures, read from a procfs root (`procfs` key, default /proc).

Like node_exporter's --path.procfs, the root is configurable so the exporter can run in a
container with the host's /proc mounted elsewhere (and so the lab can give each simulated host
its own figures, lab/figures.py). Both readers answer None when the figure cannot be read:
the series is then left out (load) or taken from libvirt (memory), never faked.
"""

from __future__ import annotations

from pathlib import Path


def read_load1(procfs: str) -> float | None:
    """The 1-minute load average: the first field of <procfs>/loadavg ("0.52 0.58 0.59 2/345 12345")."""
    try:
        return float((Path(procfs) / "loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_mem_available(procfs: str) -> int | None:
    """MemAvailable of <procfs>/meminfo in bytes: the kernel's estimate of the memory a new
    workload can get without swapping (free memory plus the reclaimable part of caches)."""
    try:
        with open(Path(procfs) / "meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # always in kB
    except (OSError, ValueError, IndexError):
        return None
    return None
