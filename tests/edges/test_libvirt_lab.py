"""remediator.edges.libvirt against a real libvirtd whose link flaps: threads sharing a connection.

Issue 9's segfault (remediator/edges/libvirt_pool.py names both ways): threads shared one connection
per host; one closed it after its call failed while another was still inside a call on it, and even
with no close, libvirt's keepalive killing a connection under several concurrent calls crashed the
client. Before the fix this test's hammer died with SIGSEGV (-11) in 3 runs of 3; a version that only
refcounted the close still died in 3 of 3. The hammer runs in a child process, so a crash is its exit
status (with faulthandler's thread dump on stderr).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

HAMMER = Path(__file__).with_name("hammer_hypervisors.py")
REPO = Path(__file__).resolve().parents[2]
THREADS = 8
# Each partition lasts past the keepalive's verdict (1 s interval, 3 missed: ~4 s), so every flap
# breaks the shared connection while the other threads are inside calls on it.
PARTITION_S = 5.0
FLAPS = 3
LOSS_PERCENT, LOSS_S = 50, 8.0


def start_hammer(uri: str, uuid: str, seconds: float, pythonpath: Path = REPO) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-X", "faulthandler", str(HAMMER), uri, uuid, str(seconds), str(THREADS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(pythonpath)})


def flap(lab, host, hammer: subprocess.Popen) -> int:
    """Partition and heal the host FLAPS times, then 50 % loss for a while; stops early if the hammer died."""
    done = 0
    for _ in range(FLAPS):
        lab.partition(host)
        time.sleep(PARTITION_S)
        lab.heal(host)  # returns once libvirtd answers again
        done += 1
        if hammer.poll() is not None:
            return done
    lab.packet_loss(host, LOSS_PERCENT)
    time.sleep(LOSS_S)
    lab.clear_packet_loss(host)
    return done


def test_threads_sharing_a_connection_survive_partitions_and_packet_loss(lab_factory):
    lab = lab_factory(hosts=1)
    host = lab.hosts[0]
    uuid = lab.define_guest(host, "g1")
    seconds = FLAPS * (PARTITION_S + 3) + LOSS_S + 5
    hammer = start_hammer(host.uri, uuid, seconds)
    try:
        flaps = flap(lab, host, hammer)
        out, err = hammer.communicate(timeout=seconds + 30)
    finally:
        if hammer.poll() is None:
            hammer.kill()
            hammer.wait()
        lab.heal(host)
        lab.clear_packet_loss(host)
    assert hammer.returncode == 0, f"hammer died with {hammer.returncode} after {flaps} flaps:\n{err[-3000:]}"
    counts = json.loads(out.splitlines()[-1])
    print(f"\n{THREADS} threads, {flaps} partitions, {LOSS_S:g} s at {LOSS_PERCENT} % loss: {counts}")
    assert counts["unreachable"] >= THREADS, counts  # every flap broke the connection under the threads
    assert counts["ok"] > 0 and counts["refused"] == 0, counts
    assert counts["reachable_at_end"], counts
