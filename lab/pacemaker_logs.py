"""Where a Pacemaker recovery's time went, read from the nodes' own corosync and pacemaker logs.

Both logs start each line with a local timestamp to the millisecond and no year
("Dec 03 07:36:22.886 ..."); `moments` returns, for each named step, the epoch time of its first
line at or after the fault, over the logs of every node given (the DC, the fencer and the nodes
that start the guests are not always the same node).
"""
from __future__ import annotations

import datetime
import re
import time
from pathlib import Path

STAMP = re.compile(r"^(\w{3} \d{2} \d{2}:\d{2}:\d{2}\.\d{3}) ")

# Host faults: each step as the survivors log it.
HOST_STEPS = {
    "token_lost": r"A processor failed, forming new configuration",
    "membership": r"A new membership \(\S+\) was formed\. Members left",
    "fence_requested": r"Requesting fencing \(\w+\) of node {node}",
    "fenced": r"Operation '\w+' targeting {node} by \S+ for \S+: OK",
    "start_initiated": r"Initiating start operation vm-",
}
# A guest crash: the node's recurring monitor finds it gone, Pacemaker stops and starts it again.
CRASH_STEPS = {
    "monitor_failed": r"Result of monitor operation for vm-{guest} on \S+: not running",
    "stopped": r"Result of stop operation for vm-{guest} on \S+: ok",
}
STARTED = re.compile(r"Result of start operation for vm-(\S+) on \S+: ok")
# A node's controller logs each change of its throttle mode (its job limit follows the machine's load).
THROTTLE = re.compile(r"^\w{3} \d{2} \S+ (\S+) pacemaker-controld.*New throttle mode: (\w+)")


def _epoch(stamp: str, year: int) -> float:
    moment = datetime.datetime.strptime(f"{year} {stamp}", "%Y %b %d %H:%M:%S.%f")
    return moment.astimezone().timestamp()  # the logs' local time -> epoch


def lines_since(paths: list[Path], since: float) -> list[tuple[float, str]]:
    """(epoch, line) of every timestamped line at or after `since`, over all files, in time order."""
    year = datetime.datetime.fromtimestamp(since or time.time()).year
    out = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = STAMP.match(line)
            if m:
                t = _epoch(m.group(1), year)
                if t >= since - 0.001:  # ms in the logs, µs in `since`
                    out.append((t, line))
    return sorted(out, key=lambda x: x[0])


def moments(paths: list[Path], since: float, steps: dict[str, str], **names: str) -> dict[str, float]:
    """Epoch of each step's first line after `since`; steps not logged are left out."""
    patterns = {k: re.compile(v.format(**{n: re.escape(x) for n, x in names.items()})) for k, v in steps.items()}
    found: dict[str, float] = {}
    for t, line in lines_since(paths, since):
        for step, pattern in patterns.items():
            if step not in found and pattern.search(line):
                found[step] = t
    return found


def starts(paths: list[Path], since: float) -> dict[str, float]:
    """guest name -> epoch of the first successful start logged after `since`."""
    found: dict[str, float] = {}
    for t, line in lines_since(paths, since):
        m = STARTED.search(line)
        if m:
            found.setdefault(m.group(1), t)
    return found


def throttle_modes(paths: list[Path], at: float) -> dict[str, str]:
    """node -> its throttle mode at epoch `at` (the last change it logged before then)."""
    modes: dict[str, str] = {}
    for t, line in lines_since(paths, 0.0):
        m = THROTTLE.match(line)
        if m and t <= at:
            modes[m.group(1)] = m.group(2)
    return dict(sorted(modes.items()))
