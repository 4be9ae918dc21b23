"""A lab host's own kernel figures: load average and available memory, real or simulated.

Every lab host shares this machine's one kernel, so /proc/loadavg and /proc/meminfo read the
same on every host and no single host can look loaded. The exporter reads both from a procfs
root (its `procfs` key, like node_exporter's --path.procfs); the lab points each host's exporter
at `<host.dir>/procfs/`, whose `loadavg` and `meminfo` are symlinks to the real /proc files until
a test replaces one with a file holding a simulated figure in the kernel's own format.

Each change is one rename() over the entry, so a reader sees the old file or the new one, never a
half-written one.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.host import LabHost

REAL_PROC = Path("/proc")
FILES = ("loadavg", "meminfo")


def clear(host: "LabHost") -> None:
    """Real figures again: each file is a symlink to this machine's /proc."""
    d = host.procfs_dir
    d.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        tmp = d / f".{name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(REAL_PROC / name)
        os.replace(tmp, d / name)


def set_load(host: "LabHost", load1: float) -> None:
    """loadavg as the kernel writes it ("8.00 8.00 8.00 2/345 12345"), all three averages load1."""
    if load1 < 0:
        raise ValueError(f"a load average cannot be negative: {load1}")
    running_total_lastpid = (REAL_PROC / "loadavg").read_text().split()[3:5]
    _write(host, "loadavg", " ".join([f"{load1:.2f}"] * 3 + running_total_lastpid) + "\n")


def set_memory_available(host: "LabHost", available_bytes: int) -> None:
    """meminfo as the kernel wrote it a moment ago, with MemAvailable replaced (kB, rounded down)."""
    if available_bytes < 0:
        raise ValueError(f"available memory cannot be negative: {available_bytes}")
    real = (REAL_PROC / "meminfo").read_text()
    text, found = re.subn(r"^MemAvailable:\s+\d+ kB$", f"MemAvailable:   {available_bytes // 1024:8d} kB",
                          real, count=1, flags=re.MULTILINE)
    if not found:
        raise RuntimeError("this kernel's /proc/meminfo has no MemAvailable line")
    _write(host, "meminfo", text)


def _write(host: "LabHost", name: str, text: str) -> None:
    d = host.procfs_dir
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.write_text(text)
    os.replace(tmp, d / name)
