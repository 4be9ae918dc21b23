"""Issue 5's recovery scenarios on the real stack: faults injected into the lab, alerts through
Prometheus and Alertmanager, recovery by the remediator, and a sampler that never sees a VM twice.
"""
from __future__ import annotations

import time

import pytest

from lab.stack import wait_for

pytestmark = pytest.mark.lab


def ha(lab, host, name, priority=0, group=None, start=True):
    return lab.define_guest(host, name, start=start, metadata=lab.ha_metadata(protected=True, priority=priority,
                                                                               group=group))


def running_where(lab, uuid) -> list[str]:
    return [h.name for h in lab.hosts if lab.is_on(h) and uuid in lab.running(h, inside=True)]


def test_crashed_vm_runs_again_on_its_host(stack_factory):
    lab, stack, sampler = stack_factory(vms=[{"name": "web-1", "priority": 100}])
    uuid = ha(lab, "h1", "web-1", priority=100)
    wait_for(lambda: stack.prometheus.query('hypervisor_vm_info{vm="web-1",ha="true"}'), 20, "VM seen by Prometheus")
    started = time.monotonic()
    lab.crash_guest("h1", "web-1")
    wait_for(lambda: lab.domain_state("h1", "web-1")[0] == "shutoff", 5, "crash visible")
    wait_for(lambda: running_where(lab, uuid) == ["h1"], 30, "web-1 running again on h1", on_timeout=stack.log_tail)
    print(f"\nvm_crash: running again on h1 after {time.monotonic() - started:.2f} s")
    wait_for(lambda: any(i["state"] in ("recovered", "resolved") for i in stack.incidents()), 10,
             "incident closed as recovered", on_timeout=lambda: str(stack.incidents()))
    assert sampler.duplicates == []


def test_host_power_loss_fences_and_restarts_guests_elsewhere_once(stack_factory):
    vms = [{"name": f"db-{i}", "priority": 10 * i} for i in range(4)]
    lab, stack, sampler = stack_factory(vms=vms)
    uuids = [ha(lab, "h1", v["name"], priority=v["priority"]) for v in vms]
    ha(lab, "h2", "load-2")  # h2 busier than h3 by allocation: spreading must still use both
    wait_for(lambda: len(stack.prometheus.query('hypervisor_vm_info{ha="true"}')) == 5, 20, "VMs seen")
    time.sleep(2)  # an inventory sync has stored their definitions
    started = time.monotonic()
    lab.power_off("h1")
    wait_for(lambda: all(running_where(lab, u) for u in uuids), 60, "every h1 guest running elsewhere",
             on_timeout=lambda: stack.log_tail() + "\n" + str(stack.incidents()))
    elapsed = time.monotonic() - started
    placed = {u: running_where(lab, u) for u in uuids}
    print(f"\nhost_power_loss: 4 guests running elsewhere after {elapsed:.2f} s: {placed}")
    assert all(len(hosts) == 1 and hosts[0] != "h1" for hosts in placed.values()), placed
    assert {hosts[0] for hosts in placed.values()} == {"h2", "h3"}, f"not spread: {placed}"
    assert not lab.is_on("h1"), "h1 must have been fenced (powered off by its BMC)"
    assert sampler.duplicates == []
