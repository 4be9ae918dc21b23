"""Process identity and namespace membership, read straight from /proc.

A pid alone is not an identity (pids are reused, pid_max is 32768 here), so every pid the
lab records goes with its start time; a process counts as ours only if both match.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after its closing ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has already died: it holds only its pid
        return None
    return int(fields[19])


def alive(pid: int | None, started: int | None) -> bool:
    """True when pid runs and is the same process that was recorded (same start time)."""
    if not pid:
        return False
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def kill(pid: int | None, started: int | None, sig: int = signal.SIGKILL) -> bool:
    """Signal the recorded process if it is still the same one; return whether it was sent."""
    if not alive(pid, started):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, started: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid, started):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def pids_where(test) -> list[int]:
    """Pids whose /proc directory passes test(path); a process that ends (or is a zombie, its namespaces
    and files released) while it is looked at does not."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if test(entry.path):
                pids.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return pids


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def netns_pids(netns: str) -> list[int]:
    """Pids whose network namespace is the named one: what `ip netns pids NAME` prints."""
    try:
        target = os.stat(f"/run/netns/{netns}")
    except FileNotFoundError:
        return []
    return pids_where(lambda path: same_file(os.stat(f"{path}/ns/net"), target))


def kill_netns(netns: str, timeout: float = 5.0) -> int:
    """Power loss: SIGKILL every process of the namespace until none is left.

    Loops because a process may fork while we kill (libvirtd starting a qemu).
    Returns how many processes were killed; raises TimeoutError if some survive.
    """
    killed = 0
    deadline = time.monotonic() + timeout
    while True:
        pids = netns_pids(netns)
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes of netns {netns} survive SIGKILL: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def stop_child(proc: subprocess.Popen, grace_s: float) -> None:
    """Stop a process we started (by its Popen, never by name): SIGTERM, then SIGKILL if it has not
    exited within grace_s; returns once it is reaped."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
