"""Issue 10, must-show 5: a VM whose restart in place and start on another host both fail is rebuilt
from scratch (stale definitions removed, defined anew from the stored XML on a host that did not fail
it, its disk recreated from its base image) and runs; the incident shows the three rungs."""
from __future__ import annotations

import time

import pytest

from lab import images
from lab.stack import wait_for

pytestmark = pytest.mark.lab

RUNGS = ["vm_restarting", "vm_relocating", "vm_rebuilding"]
CLOSED = ("recovered", "failed", "dismissed", "closed_by_operator")


def test_vm_failing_restart_and_start_elsewhere_is_rebuilt_from_its_base_image_and_runs(stack_factory):
    lab, stack, sampler = stack_factory()
    base, disk = f"{images.IMAGES}/base.qcow2", f"{images.IMAGES}/web-r.qcow2"
    for h in lab.hosts:  # the golden image on every host; the VM's overlay on h1 only (host-local)
        images.create_base(h, base)
    images.create_overlay(lab.host("h1"), disk, base)
    uuid = lab.define_guest("h1", "web-r", disk=disk,
                            metadata=lab.ha_metadata(protected=True, priority=100, base_image=base))
    for h in ("h1", "h2", "h3"):  # one load figure everywhere: allocation decides where it goes
        lab.set_host_load(h, 0.2)
    for i in range(2):  # h3 carries more than h2: start elsewhere picks h2
        lab.define_guest("h3", f"busy-{i}")
    stack.wait_watching([uuid])
    lab.refuse_start("h1", "web-r")  # restart in place fails (a libvirt hook refuses it)
    lab.refuse_start("h2", "web-r")  # and so does the start on the other host placement picks
    started = time.monotonic()
    lab.crash_guest("h1", "web-r")
    # (not "running anywhere": a start that its hook refuses lists the domain as active for a moment)
    wait_for(lambda: (stack.incident(f"vm:{uuid}") or {"incident": {}})["incident"].get("state") in CLOSED, 90,
             "the incident closed", on_timeout=lambda: stack.log_tail() + "\n" + str(stack.incidents()))
    detail = stack.incident(f"vm:{uuid}")
    assert detail["incident"]["state"] == "recovered", detail["incident"]["reason"]
    elapsed = time.monotonic() - started
    assert lab.where_running(uuid) == ["h3"]
    states = [t["to_state"] for t in detail["history"]]
    assert [s for s in RUNGS if s in states] == RUNGS, states
    tries = [(a["action"]["kind"], a["ok"]) for a in detail["actions"] if a["action"]["kind"] != "schedule_retry"]
    assert ("start_vm", False) in tries and ("start_vm_elsewhere", False) in tries and tries[-1] == ("rebuild_vm", True)
    data = detail["incident"]["data"]
    record = data["rebuild"]
    assert data["failed_hosts"] == ["h1", "h2"] and record["excluded"] == ["h1", "h2"] and record["host"] == "h3"
    assert sorted(record["removed"]) == ["stale definition on h1", "stale definition on h2"], record
    assert record["recreated"][0] == "definition on h3 from the stored XML", record
    assert record["recreated"][1].startswith(f"disk vda {disk} on h3: a new qcow2 overlay of {base}"), record
    assert record["left_behind"] == [f"disk {disk} on h1, where it last ran (host-local; not deleted)"], record
    # The world agrees with the record: one definition left, on h3, over a fresh overlay of the base.
    assert "web-r" not in lab.domains("h1") and "web-r" not in lab.domains("h2")
    made = images.info(lab.host("h3"), disk)
    assert (made["format"], made["backing-filename"], made["backing-filename-format"]) == ("qcow2", base, "qcow2")
    assert made["format-specific"]["data"]["compat"] == "1.1"
    assert images.info(lab.host("h1"), disk) is not None, "the old disk on h1 is left behind, not deleted"
    print(f"\nvm_rebuild: restart in place (h1) and start elsewhere (h2) refused; rebuilt and running on h3 "
          f"{elapsed:.2f} s after the crash; rungs {[s for s in RUNGS if s in states]}; "
          f"tries {tries}; record {record}")
    assert sampler.duplicates == []
