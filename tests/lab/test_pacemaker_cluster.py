"""The peer the remediator is measured against (make bench-peer) still runs on the lab: a Pacemaker +
Corosync cluster, one node per lab host, forms, and after a host's power loss fences that host
through its BMC and runs its guest on a survivor, never on two hosts at once. ~45 s (most of it the
first DC election's 20 s dc-deadtime)."""
from __future__ import annotations

import uuid

import pytest

from bench.recovery import ORIGIN, inject, wait_landed
from lab.pacemaker import Cluster, node_name
from lab.pacemaker_config import TUNED
from lab.sampler import DuplicateSampler

pytestmark = pytest.mark.lab


def test_cluster_forms_and_runs_a_guest_of_a_powered_off_host_on_a_survivor_once(lab_factory):
    lab = lab_factory(3)
    guest_uuid = str(uuid.uuid4())
    cluster = Cluster(lab, TUNED, guests={"web": lab.guest_xml("web", uuid=guest_uuid)}, prefer=ORIGIN).start()
    assert cluster.placement() == {"web": node_name(lab.host(ORIGIN))}
    assert lab.running(ORIGIN) == {guest_uuid: "web"}

    with DuplicateSampler(lab) as sampler:
        fault_at = inject(lab, "host_power_loss")
        landed = wait_landed(lab, {guest_uuid: "web"}, {"h2", "h3"}, timeout=60)
    at, host = landed["web"]
    print(f"guest running on {host} {at - fault_at:.2f} s after the power loss")
    assert host in ("h2", "h3")
    assert not lab.is_on(ORIGIN), "fenced with stonith-action=off: the host stays off"
    assert sampler.samples > 0 and sampler.duplicates == []
    cluster.wait(lambda: cluster.placement().get("web") == node_name(lab.host(host)), 30,
                 "crm_mon agrees where the guest runs")
