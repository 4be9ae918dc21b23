"""A lab host's boot device and power log: the state every BMC of the host shares (IPMI and Redfish).

Both live in the host's lab directory, so that whichever BMC sets the next boot device, the other one
sees it, and a test can count power actions at the BMCs whatever protocol asked for them:
- `next-boot`: JSON `{"target": "pxe"|"disk", "once": true|false}`; absent means disk. A `once`
  override applies to the next power-on only (IPMI's non-persistent boot flag, Redfish's
  `BootSourceOverrideEnabled: Once`) and is consumed by it.
- `power.log`: one line per power action, `<unix-ts> <via> <action>` (via: ipmi|redfish; action:
  on, off, cycle, reset, bootdev-pxe, bootdev-disk, ...).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

NEXT_BOOT = "next-boot"
POWER_LOG = "power.log"
TARGETS = ("pxe", "disk")
# One lock per process: the IPMI and Redfish BMCs of a host are separate processes, and each
# rewrites next-boot atomically (rename), so a reader never sees half a file.
_lock = threading.Lock()


@dataclass(frozen=True)
class BootDevice:
    target: str = "disk"
    once: bool = False


def read(host_dir: str | Path) -> BootDevice:
    try:
        raw = json.loads((Path(host_dir) / NEXT_BOOT).read_text())
    except FileNotFoundError:
        return BootDevice()
    target = raw.get("target", "disk")
    return BootDevice(target if target in TARGETS else "disk", bool(raw.get("once", False)))


def write(host_dir: str | Path, target: str, once: bool) -> None:
    if target not in TARGETS:
        raise ValueError(f"boot target must be one of {TARGETS}, not {target!r}")
    path = Path(host_dir) / NEXT_BOOT
    tmp = path.with_name(f".{NEXT_BOOT}.{os.getpid()}.{threading.get_ident()}")
    with _lock:
        tmp.write_text(json.dumps({"target": target, "once": once}))
        os.replace(tmp, path)


def take_for_boot(host_dir: str | Path) -> str:
    """The target this power-on boots from; a once-override is consumed (the next boot is from disk)."""
    device = read(host_dir)
    if device.once:
        with _lock:
            (Path(host_dir) / NEXT_BOOT).unlink(missing_ok=True)  # no override any more: disk
    return device.target


def log_power(host_dir: str | Path, via: str, action: str) -> None:
    line = f"{time.time():.3f} {via} {action}\n"
    with _lock, open(Path(host_dir) / POWER_LOG, "a") as f:  # O_APPEND: one line per write, whole
        f.write(line)


def power_log(host_dir: str | Path) -> list[tuple[float, str, str]]:
    """(unix time, via, action) of every power action recorded for the host, oldest first."""
    try:
        lines = (Path(host_dir) / POWER_LOG).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        ts, via, action = line.split(" ", 2)
        out.append((float(ts), via, action))
    return out
