"""The labs of this machine, as their state files record them: find one by name, tear one down
(also one whose owner died), list what is left of one after it went, and the QEMU capabilities cache
new lab hosts start from.

Module functions over state files, not Lab methods: `python -m lab down` and a reaping lab use them
for labs another process built. See docs/lab.md.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from lab import host as hostmod, power, procs, state as st, storage as storagemod
from lab.host import LabHost

# The capabilities cache of a lab host that probed every QEMU binary (not only x86_64: the older
# "cache-seed" lacked qemu-system-i386, which each fresh libvirtd then probed at its first guest).
SEED_NAME = "cache-seed-every-arch"


def _owner_alive(pid: int, start: int) -> bool:
    return procs.alive(pid, start)


def teardown(state_file: Path, keeper_proc: subprocess.Popen | None = None) -> None:
    """Remove everything a lab's state file records. Idempotent; safe after a crash."""
    data = st.read(state_file)
    run_dir = state_file.parent
    if data is not None:
        hosts = [LabHost.from_dict(h) for h in data.get("hosts", [])]
        for d in data.get("daemons", []):
            procs.kill(d["pid"], d["start"])
        for h in hosts:
            procs.kill(h.bmc_pid, h.bmc_start)
            if hostmod.netns_exists(h.netns):
                power.power_loss(h)
            hostmod.delete_host_net(h)
        if data.get("bridge"):
            hostmod.delete_bridge(data["bridge"])
        kp = data.get("keeper") or {}
        if procs.kill(kp.get("pid"), kp.get("start")):
            procs.wait_gone(kp["pid"], kp.get("start"), 5.0)
        if data.get("data_dir"):
            if data.get("storage"):
                storagemod.unmount_shared(Path(data["data_dir"]) / "shared")
            shutil.rmtree(data["data_dir"], ignore_errors=True)
    if keeper_proc is not None:
        keeper_proc.wait(timeout=5)  # our child: reap it, or it stays a zombie
    shutil.rmtree(run_dir, ignore_errors=True)  # last: this releases the index


def reap_abandoned(roots: st.Roots, index: int) -> bool:
    """Tear down the lab at index if its owner died; True when the index became free."""
    if not st.is_abandoned(roots, index, _owner_alive):
        return False
    if not st.claim_for_reaping(roots, index):
        return False
    print(f"lab: tearing down abandoned lab {st.lab_id(index)} (its owner is gone)", file=sys.stderr)
    teardown(st.state_path(roots, index))
    return True


def find_lab(roots: st.Roots, name: str) -> Path | None:
    for path, data in st.list_states(roots):
        if data.get("name") == name:
            return path
    return None


def cache_seed(roots: st.Roots = st.Roots()) -> Path | None:
    """The QEMU capabilities cache new lab hosts start from; None until a first lab made it."""
    for candidate in (hostmod.SYSTEM_CACHE, roots.data / SEED_NAME):
        if (candidate / "qemu" / "capabilities").is_dir() and any((candidate / "qemu" / "capabilities").iterdir()):
            return candidate
    return None


def leftovers(resources: dict) -> list[str]:
    """What still exists of a lab's resources (from Lab.resources()) after it was torn down.

    Every name derives from the lab's index, and an index is free only once the run dir (state
    file) of its last lab is gone: a state file recording another keeper is a newer lab (another
    test run on this machine) that took the index after ours was fully torn down; then only the
    recorded pids are ours to check."""
    left = [f"pid {pid}" for pid, start in resources["pids"] if procs.alive(pid, start)]
    now = st.read(Path(resources["state_file"])) if resources.get("state_file") else None
    if now is not None and resources.get("keeper") and now.get("keeper") != resources["keeper"]:
        return left
    left += [f"netns {n}" for n in resources["netns"] if hostmod.netns_exists(n)]
    left += [f"link {l}" for l in resources["links"] if l and hostmod.link_exists(l)]
    left += [f"netns pids {n}: {procs.netns_pids(n)}" for n in resources["netns"] if procs.netns_pids(n)]
    for key in ("state_file", "data_dir"):
        if resources[key] and Path(resources[key]).exists():
            left.append(f"{key} {resources[key]}")
    return left
