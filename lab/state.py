"""Where a lab lives on disk and the record of everything it created.

The state file is written before each thing is created (intent before act), so `down`
from another process or after a crash finds every namespace, link and pid by its record.
One lab = one small index, allocated by mkdir of its run dir (atomic); every name derives
from the index, so several labs run side by side.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

RUN_ROOT = Path("/run/remediator-lab")       # state + index locks (tmpfs: gone at reboot)
DATA_ROOT = Path("/var/tmp/remediator-lab")  # per-host private /etc/libvirt, /var/lib/libvirt...
MAX_INDEX = 250
# A run dir without a state file older than this is the remains of a crash during allocation.
HALF_BORN_AGE_S = 60.0
REAPER_STALE_S = 120.0


@dataclass(frozen=True)
class Roots:
    run: Path = RUN_ROOT
    data: Path = DATA_ROOT


def lab_id(index: int) -> str:
    return f"rl{index}"


def run_dir(roots: Roots, index: int) -> Path:
    return roots.run / lab_id(index)


def data_dir(roots: Roots, index: int) -> Path:
    return roots.data / lab_id(index)


def state_path(roots: Roots, index: int) -> Path:
    return run_dir(roots, index) / "state.json"


def write(path: Path, state: dict) -> None:
    """Atomic replace, so a reader (a BMC, `lab status`) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def list_states(roots: Roots) -> list[tuple[Path, dict]]:
    if not roots.run.is_dir():
        return []
    found = []
    for d in sorted(roots.run.iterdir()):
        if d.name.startswith("rl") and d.name[2:].isdigit():
            st = read(d / "state.json")
            if st is not None:
                found.append((d / "state.json", st))
    return found


def try_claim(roots: Roots, index: int) -> bool:
    """mkdir is atomic: exactly one process gets a given index."""
    roots.run.mkdir(parents=True, exist_ok=True)
    try:
        run_dir(roots, index).mkdir()
    except FileExistsError:
        return False
    return True


def is_abandoned(roots: Roots, index: int, owner_alive) -> bool:
    """True when the lab at index belongs to nobody: its owner died, or it died being born.

    Detached labs (from `python -m lab up`) have no owner and are only removed by `down`.
    """
    d = run_dir(roots, index)
    st = read(d / "state.json")
    if st is None:
        try:
            return time.time() - d.stat().st_mtime > HALF_BORN_AGE_S
        except FileNotFoundError:
            return False
    owner = st.get("owner")
    if owner is None:
        return False
    return not owner_alive(owner["pid"], owner["start"])


def claim_for_reaping(roots: Roots, index: int) -> bool:
    """mkdir of a marker inside the abandoned run dir: one reaper wins.

    The run dir (the index lock) stays until the reaper has removed everything the old lab
    created, so no new lab can take the index and its names while they still exist. A marker
    older than REAPER_STALE_S is from a reaper that died: it is taken over.
    """
    marker = run_dir(roots, index) / "reaping"
    try:
        marker.mkdir()
        return True
    except FileNotFoundError:
        return False  # someone else finished reaping meanwhile
    except FileExistsError:
        try:
            if time.time() - marker.stat().st_mtime < REAPER_STALE_S:
                return False
            os.utime(marker)  # take it over (a race here only means two idempotent teardowns)
            return True
        except FileNotFoundError:
            return False


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=False) if path.exists() else None
