"""Issue 13 on the real stack: guests with qcow2 disks on the lab's shared storage (one tmpfs
bind-mounted at the same path on every host, as NFS) and in host-local pools, virtlockd on every host
with its lockspace on the shared storage. One lab and stack for the module: each test leaves every
host on, linked, active (its faults are undone at its end), so the next starts from a clean fleet.
"""
from __future__ import annotations

import subprocess
import time

import libvirt
import pytest
import yaml

from lab.firmware import io_writer
from lab.guests import disk_xml
from lab.sampler import DuplicateSampler
from lab.stack import BIN, Stack, wait_for
from remediator.config import UNSAFE_OPT_IN
from remediator.edges.libvirt_disks import is_disk_locked

pytestmark = pytest.mark.lab

POLICY = {"backoff": {"initial_s": 1, "max_s": 2}, "timings": {"inventory_sync_s": 2}}


@pytest.fixture(scope="module")
def fleet(storage_lab, tmp_path_factory):
    lab = storage_lab
    with DuplicateSampler(lab) as sampler, Stack(lab, tmp_path_factory.mktemp("storage"), policy=POLICY) as stack:
        yield lab, stack, sampler


def protected(lab, host, name, *, disk_host=None, base_image=None, on_io_error=None, writer=False,
              priority=0) -> tuple[str, str]:
    """A protected guest with a qcow2 overlay disk (shared, or in disk_host's own pool); (uuid, disk path)."""
    disk = lab.make_disk(name, disk_host)
    metadata = lab.ha_metadata(priority=priority, base_image=base_image, on_io_error=on_io_error)
    uuid = lab.define_guest(host, name, metadata=metadata,
                            disk_element=disk_xml(disk, bus="ide" if writer else "virtio",
                                                  error_policy="stop" if writer else None),
                            kernel=io_writer() if writer else None)
    return uuid, disk


def activate(stack, lab, host):
    """Give a host back to the fleet after a test's fault: on, answering, active."""
    if not lab.is_on(host):
        lab.power_on(host)
    assert stack.post(f"hosts/{host}/activate", {"reason": "test done"}).status_code == 200
    wait_for(lambda: condition(stack, host) == "up", 30,
             f"{host} active again", on_timeout=stack.log_tail)


def incident(stack, subject) -> dict | None:
    """The subject's incident (its fields, with its actions and history), or None before there is one."""
    found = stack.incident(subject)
    return {**found["incident"], "actions": found["actions"], "history": found["history"]} if found else None


def condition(stack, host) -> str:
    return next(h for h in stack.api("hosts")["hosts"] if h["name"] == host)["condition"]


def closed(stack, subject, timeout=60):
    wait_for(lambda: (i := incident(stack, subject)) and i["closed_at"], timeout, f"incident {subject} closed",
             on_timeout=lambda: f"{incident(stack, subject)}\n{stack.log_tail()}")
    return incident(stack, subject)


def test_host_power_loss_moves_4_shared_disk_guests_each_disk_opened_by_one_qemu(fleet):
    lab, stack, sampler = fleet
    seen = len(sampler.duplicates)
    guests = {f"s{i}": protected(lab, "h1", f"s{i}") for i in range(4)}
    stack.wait_watching([u for u, _ in guests.values()])
    # h2 loses its shared mount: its storage check fails, so no shared-disk guest may go there
    lab.fail_shared_mount("h2")
    wait_for(lambda: stack.prometheus.query('hypervisor_host_check{host="h2",check="storage"} == 0'), 20,
             "h2's storage check failing in Prometheus")
    started = time.monotonic()
    lab.power_off("h1")
    for name, (uuid, disk) in guests.items():
        wait_for(lambda: lab.where_running(uuid) == ["h3"], 60, f"{name} running on h3", on_timeout=stack.log_tail)
    took = time.monotonic() - started
    # the mount back at once: failing for 15 s would make h2 a damaged host (cordoned, drained), and
    # the next tests would see their guests moved off it
    lab.restore_shared_mount("h2")
    for name, (uuid, disk) in guests.items():
        openers, holders = lab.disk_openers(disk), lab.lease_holders(disk)
        print(f"{name}: {disk} open by {openers}, lease held by {holders}")
        assert list(openers.values()) == ["h3"], (name, openers)  # one QEMU, the new one: same disk file
        assert list(holders.values()) == ["h3"], (name, holders)  # h3's virtlockd holds its lease
    print(f"\n4 shared-disk guests on h3 {took:.1f} s after h1's power loss (h2 refused: storage check)")
    evacuation = closed(stack, "host:h1")
    assert evacuation["state"] == "recovered", evacuation["reason"]
    assert len(sampler.duplicates) == seen
    wait_for(lambda: stack.prometheus.query('hypervisor_host_check{host="h2",check="storage"} == 1'), 20,
             "h2's storage check passing again")
    activate(stack, lab, "h1")
    if condition(stack, "h2") != "up":  # a loaded machine kept the mount away past HypervisorHostDamaged's 15 s
        activate(stack, lab, "h2")


def _restart_remediator(stack, *, unsafe: bool):
    """The same store, with or without the unsafe test policy (the loader refuses it without the opt-in)."""
    stack.stop_remediator()
    config = yaml.safe_load(stack.config_path.read_text())
    config["policy"]["unsafe_skip_fencing"] = unsafe
    stack.config_path.write_text(yaml.safe_dump(config))
    stack.env = {UNSAFE_OPT_IN: "1"} if unsafe else {}
    stack.start_remediator()


def test_with_fencing_bypassed_a_second_copy_is_refused_by_the_disk_lease(fleet):
    lab, stack, sampler = fleet
    uuid, disk = protected(lab, "h2", "lease1")
    stack.wait_watching([uuid])
    # Without the opt-in, the loader refuses the unsafe policy and names the file and key.
    config = yaml.safe_load(stack.config_path.read_text())
    config["policy"]["unsafe_skip_fencing"] = True
    unsafe_file = stack.workdir / "unsafe.yml"
    unsafe_file.write_text(yaml.safe_dump(config))
    refused = subprocess.run([str(BIN / "remediator"), "status", "--config", str(unsafe_file)],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and f"{unsafe_file}: policy.unsafe_skip_fencing: refused" in refused.stderr
    _restart_remediator(stack, unsafe=True)
    try:
        lab.partition("h2")  # h2 and lease1 keep running, unseen; the "fence" proves nothing
        evacuation = closed(stack, "host:h2")
        holders_during = lab.lease_holders(disk)
        assert lab.where_running(uuid) == ["h2"], lab.where_running(uuid)
        assert list(lab.disk_openers(disk).values()) == ["h2"]
        assert list(holders_during.values()) == ["h2"], holders_during
        kinds = [a["action"]["kind"] for a in evacuation["actions"]]
        print(f"\nincident: {evacuation['state']}: {evacuation['reason']}\nactions: {kinds}\nlease: {holders_during}")
        assert "its disk is locked" in evacuation["reason"] and "1 not started, running elsewhere" in evacuation["reason"]
        assert kinds.count("evacuate_host") == 1 and "rebuild_vm" not in kinds and "schedule_retry" not in kinds
        assert evacuation["state"] == "recovered"
        assert incident(stack, f"vm:{uuid}") is None  # no VM incident went on to restart or rebuild it
    finally:
        lab.heal("h2")
        _restart_remediator(stack, unsafe=False)
    activate(stack, lab, "h2")
    assert lab.where_running(uuid) == ["h2"]
    # The lease alone: QEMU's own image lock refused the copy above first (same file, same kernel). Two
    # host-local files at one path are two inodes, invisible to it; their lease (one per path, in the
    # shared lockspace) is one, and virtlockd refuses the second QEMU by itself.
    first = lab.make_disk("lease2", "h1")
    lease_uuid = lab.define_guest("h1", "lease2", disk=first)
    with pytest.raises(libvirt.libvirtError) as refused_by_lease:
        lab.define_guest("h3", "lease2", uuid=lease_uuid, disk=lab.make_disk("lease2", "h3"))
    print(f"virtlockd alone: {refused_by_lease.value}")
    assert is_disk_locked(refused_by_lease.value) and "resource busy" in str(refused_by_lease.value)
    assert lab.where_running(lease_uuid) == ["h1"] and list(lab.lease_holders(first).values()) == ["h1"]


def test_host_local_guest_of_a_lost_host_is_rebuilt_from_its_base_image_old_disk_left_behind(fleet):
    lab, stack, sampler = fleet
    seen = len(sampler.duplicates)
    uuid, disk = protected(lab, "h1", "local1", disk_host="h1", base_image=lab.base_image)
    stack.wait_watching([uuid])
    lab.power_off("h1")
    wait_for(lambda: lab.where_running(uuid), 60, "local1 running again", on_timeout=stack.log_tail)
    dst = lab.where_running(uuid)[0]
    evacuation = closed(stack, "host:h1")
    rebuilt = evacuation["data"]["rebuilt"][uuid]
    print(f"\nincident: {evacuation['reason']}\nrebuilt: {rebuilt}")
    assert rebuilt["host"] == dst and rebuilt["recreated"][1].startswith(
        f"disk vda {disk} on {dst}: a new qcow2 overlay of {lab.base_image}"), rebuilt
    assert f"disk {disk} on h1, where it last ran (host-local; not deleted)" in rebuilt["left_behind"], rebuilt
    assert f"left behind: disk {disk} on h1" in evacuation["reason"]
    old, new = lab.real_path(disk, "h1"), lab.real_path(disk, dst)
    assert old.exists() and new.exists() and old != new
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(new)], capture_output=True, text=True,
                          check=True).stdout
    assert f'"backing-filename": "{lab.base_image}"' in info
    assert list(lab.disk_openers(disk, dst).values()) == [dst]
    assert len(sampler.duplicates) == seen
    activate(stack, lab, "h1")


def test_guest_paused_on_io_error_is_handled_by_each_policy(fleet):
    lab, stack, sampler = fleet
    seen = len(sampler.duplicates)
    guests = {policy: protected(lab, "h2", f"io-{policy.replace('_', '-')}", on_io_error=policy, writer=True)
              for policy in ("wait", "resume", "restart_elsewhere")}
    uuids = {policy: u for policy, (u, _) in guests.items()}
    stack.wait_watching(uuids.values())
    filled = lab.fill_shared_storage()
    try:
        _each_policy_while_full_then_freed(lab, stack, uuids, filled)
    finally:
        lab.free_shared_storage()  # a failure above must not leave the next test a full disk
    assert len(sampler.duplicates) == seen


def _paused_on_io_error(lab, host, name) -> bool:
    try:
        return lab.domain_state(host, name) == ("paused", "5")
    except libvirt.libvirtError:  # restart_elsewhere: already destroyed and undefined on h2
        return False


def _each_policy_while_full_then_freed(lab, stack, uuids, filled):
    started = time.monotonic()
    # restart_elsewhere acts the moment its guest pauses: by the time one looks, the paused copy may
    # already be gone from h2. Its incident is the proof that it paused (opened by the pause alone).
    move = f"vm:{uuids['restart_elsewhere']}:io_error"
    for policy in ("wait", "resume"):
        name = f"io-{policy}"
        wait_for(lambda: _paused_on_io_error(lab, "h2", name), 10, f"{name} paused on an I/O error")
    wait_for(lambda: _paused_on_io_error(lab, "h2", "io-restart-elsewhere") or incident(stack, move), 10,
             "io-restart-elsewhere paused on an I/O error (or its incident already open)")
    paused_s = time.monotonic() - started
    wait_for(lambda: (i := incident(stack, f"vm:{uuids['wait']}:io_error")) and i["state"] == "vm_io_waiting", 20,
             "the wait guest's incident waiting", on_timeout=stack.log_tail)
    wait_for(lambda: (i := incident(stack, f"vm:{uuids['resume']}:io_error")) and i["attempts"] >= 2, 20,
             "a resume tried while the storage is still full", on_timeout=stack.log_tail)
    # restart_elsewhere acts at once on what placement knows: before the exporters' storage checks (every
    # second on this lab) see the full storage it restarts the guest on another host; once they do, it waits for a host
    # whose check passes. Either way the paused copy goes first.
    wait_for(lambda: ((i := incident(stack, move)) and i["closed_at"]) or len(stack.prometheus.query(
        'hypervisor_host_check{check="storage"} == 0')) == len(lab.hosts), 20, "moved, or every storage check failing")
    moved_while_full = bool(incident(stack, move)["closed_at"])
    held_s = time.monotonic() - started
    lab.free_shared_storage()  # within the 15 s the storage checks may fail before a host counts as damaged
    freed = time.monotonic()
    resumed = closed(stack, f"vm:{uuids['resume']}:io_error")
    resumed_s = time.monotonic() - freed
    moved = closed(stack, move)
    print(f"\nfilled {filled >> 20} MiB; all 3 paused {paused_s:.1f} s later; storage freed {held_s:.1f} s after "
          f"filling; resumed {resumed_s:.1f} s after freeing; restarted elsewhere "
          f"{'while the storage was still full' if moved_while_full else 'once a host passed its storage check'}"
          f"\nresume: {resumed['reason']}\nmove: {moved['reason']}")
    assert lab.domain_state("h2", "io-resume") == ("running", "5")  # running, reason unpaused
    print("move history:\n  " + "\n  ".join(t["reason"] for t in moved["history"]))
    # (moved while the storage was still full, its new copy may pause there again: a second incident moves
    # it once more when a host's storage check passes; `moved` is the latest)
    assert any("destroyed the paused copy on" in t["reason"] for t in moved["history"]), moved["history"]
    assert moved["state"] == "recovered" and "started on" in moved["reason"], moved["reason"]
    assert len(lab.where_running(uuids["restart_elsewhere"])) == 1
    assert lab.domain_state("h2", "io-wait") == ("paused", "5")  # wait: left as it is
    assert incident(stack, f"vm:{uuids['wait']}:io_error")["state"] == "vm_io_waiting"
    lab.exec("h2", ["virsh", "resume", "io-wait"], check=True, capture_output=True)  # the operator's repair
    assert closed(stack, f"vm:{uuids['wait']}:io_error")["state"] == "recovered"


def test_protect_on_a_running_unprotected_guest_then_its_crash_is_recovered(fleet):
    lab, stack, sampler = fleet
    seen = len(sampler.duplicates)
    disk = lab.make_disk("adopted")
    uuid = lab.define_guest("h3", "adopted", disk=disk)
    wait_for(lambda: stack.prometheus.query('hypervisor_vm_info{vm="adopted",ha="false"}'), 20, "seen unprotected")
    started = time.monotonic()
    out = subprocess.run([str(BIN / "remediator"), "protect", "adopted", "--priority", "5", "--group", "adopted",
                          "--config", str(stack.config_path)], capture_output=True, text=True, check=True).stdout
    assert "protected (priority 5, group adopted)" in out
    scrape_s = wait_for(lambda: stack.prometheus.query('hypervisor_vm_info{vm="adopted",ha="true",priority="5"}'),
                        10, "protected in the next scrape")
    wait_for(lambda: any(v["uuid"] == uuid and v["priority"] == 5 and v["definition"]
                         for v in stack.api("vms")["vms"]), 10, "protected in the next inventory sync")
    print(f"\nprotect: Prometheus sees it {scrape_s:.1f} s after the call returned, the inventory "
          f"{time.monotonic() - started:.1f} s after (sync every {POLICY['timings']['inventory_sync_s']} s)")
    lab.crash_guest("h3", "adopted")
    wait_for(lambda: lab.where_running(uuid), 30, "adopted running again", on_timeout=stack.log_tail)
    assert closed(stack, f"vm:{uuid}")["state"] == "recovered"
    out = subprocess.run([str(BIN / "remediator"), "unprotect", "adopted", "--config", str(stack.config_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "unprotected" in out
    wait_for(lambda: stack.prometheus.query('hypervisor_vm_info{vm="adopted",ha="false"}'), 10, "unprotected again")
    assert len(sampler.duplicates) == seen
