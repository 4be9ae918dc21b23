"""The rebuild rung: which hosts it excludes (a property of the table), the base-image declaration
(pure), and the action over the real libvirt edge on the test driver (stale definitions removed, a
running copy never touched, the disk recreated from its base through libvirt's storage API)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediator import actions, fsm
from remediator.edges.libvirt import DomainError
from remediator.fsm import ActionKind as A
from remediator.fsm import EventKind as E
from remediator.fsm import State as S
from remediator.model import Action, Event, Remediation, vm_subject
from remediator.rebuild import BaseDisk, DeclarationError, disk_from_base

from .conftest import NOW
from .test_engine import deliver, kinds_done, vm_alert
from .test_fsm import POLICY, Sim

HOSTS = ["h1", "h2", "h3", "h4"]


def _apply(sim: Sim, d: fsm.Decision) -> None:
    """Sim keeps state and attempts; the store also merges the decision's data."""
    sim.incident = replace(sim.incident, data={**sim.incident.data, **d.data})


# ---- the table: every host that failed the VM is excluded from its rebuild -------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fail", "fail_unnamed", "blocked", "retry"]),
                          st.sampled_from(HOSTS)), max_size=12))
def test_rebuild_excludes_its_host_and_every_host_that_failed_it(steps):
    sim = Sim.open(Remediation.VM_DOWN)
    _apply(sim, sim.result(E.VM_NOT_RUNNING))
    failed = {"h1"}  # a failed restart in place is its own host's failure
    for step, host in steps:
        if sim.state not in (S.VM_RESTARTING, S.VM_RELOCATING, S.VM_REBUILDING):
            break
        action = fsm.STEP_ACTION[sim.state]
        if step == "retry":
            d = sim.retry()
        elif step == "blocked":  # another host may still run it: not that host's failure
            d = sim.result(E.ACTION_FAILED, detail="h9 does not answer", blocked_by=["h9"])
        elif step == "fail_unnamed" or action is A.START_VM:
            d = sim.result(E.ACTION_FAILED, detail="refused")
            failed |= {"h1"} if action is A.START_VM else set()
        else:
            d = sim.result(E.ACTION_FAILED, detail="refused", tried=host)
            failed.add(host)
        _apply(sim, d)
        for a in d.actions:
            if a.kind == A.REBUILD_VM:
                assert set(a.params["exclude"]) == failed, (a.params, failed)
    assert set(sim.incident.data.get("failed_hosts", [])) <= failed


def test_the_three_rungs_then_the_rebuild_excludes_restart_and_relocation_hosts():
    sim = Sim.open(Remediation.VM_DOWN, fsm.Context(policy=POLICY, has_definition=True))
    _apply(sim, sim.result(E.VM_NOT_RUNNING))
    for _ in range(POLICY.restart_attempts):
        _apply(sim, sim.result(E.ACTION_FAILED, detail="hook refused"))
        if sim.state is S.VM_RESTARTING:
            _apply(sim, sim.retry())
    assert sim.state is S.VM_RELOCATING
    [relocate] = sim.log[-1].actions
    assert relocate.params["exclude"] == ["h1"]
    d = sim.result(E.ACTION_FAILED, detail="hook refused", tried="h2")
    _apply(sim, d)
    _apply(sim, sim.retry())
    d = sim.result(E.ACTION_FAILED, detail="hook refused", tried="h2")
    _apply(sim, d)
    assert sim.state is S.VM_REBUILDING
    [rebuild] = d.actions
    assert rebuild.kind == A.REBUILD_VM and rebuild.params["exclude"] == ["h1", "h2"]
    assert sim.incident.data["failed_hosts"] == ["h1", "h2"]


def test_an_operator_retry_forgets_the_failed_hosts():
    sim = Sim.open(Remediation.VM_DOWN)
    sim.incident = replace(sim.incident, state=S.FAILED, data={"failed_hosts": ["h1", "h2"]})
    d = sim.send(E.OPERATOR_RETRY)
    assert d.data == {"failed_hosts": []}


# ---- the declaration -----------------------------------------------------------------------------

def domain(meta: str, disks: str) -> str:
    return (f"<domain type='kvm'><name>v</name><uuid>u</uuid><metadata>{meta}</metadata>"
            f"<devices>{disks}</devices></domain>")


HA = "<rem:ha xmlns:rem='urn:remediator:ha:1' protected='true' {attrs}/>"
QCOW = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{path}'/>"
        "<target dev='{dev}' bus='virtio'/></disk>")
CDROM = "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/iso/x.iso'/></disk>"


def test_a_declared_base_image_names_the_first_qcow2_file_disk():
    xml = domain(HA.format(attrs="base-image='/img/base.qcow2'"),
                 CDROM + QCOW.format(path="/img/v.qcow2", dev="vda") + QCOW.format(path="/img/w.qcow2", dev="vdb"))
    assert disk_from_base(xml) == BaseDisk("vda", "/img/v.qcow2", "/img/base.qcow2", "qcow2")
    raw = domain(HA.format(attrs="base-image='/img/base.raw' base-format='raw'"), QCOW.format(path="/i/v", dev="vda"))
    assert disk_from_base(raw).base_format == "raw"


def test_no_declared_base_image_recreates_no_disk():
    assert disk_from_base(domain(HA.format(attrs=""), QCOW.format(path="/img/v.qcow2", dev="vda"))) is None
    assert disk_from_base(domain("", "")) is None


@pytest.mark.parametrize("attrs, disks, says", [
    ("base-image='/img/b.qcow2' base-format='vmdk'", QCOW.format(path="/img/v", dev="vda"), "base-format"),
    ("base-image='img/b.qcow2'", QCOW.format(path="/img/v", dev="vda"), "absolute"),
    ("base-image='/img/b.qcow2'", CDROM, "no file-backed qcow2 disk"),
    ("base-image='/img/b.qcow2'", QCOW.format(path="/img/./b.qcow2", dev="vda"), "base image itself"),
])
def test_a_declaration_that_cannot_be_carried_out_says_why(attrs, disks, says):
    with pytest.raises(DeclarationError, match=says):
        disk_from_base(domain(HA.format(attrs=attrs), disks))


# ---- the action and the ladder on the test driver --------------------------------------------------

def refuse_starts_on(dc, monkeypatch, *hosts):
    """Stand-in for the lab's refuse_start (a libvirt hook refusing the guest): the test driver has no
    hooks, so the edge's start raises what libvirt raises then (code 70, hook script failed)."""
    real = dc.hv.start

    def start(host, uuid):
        if host in hosts:
            raise DomainError(host, f"start {uuid}", "Hook script execution failed: refused by the test", 70)
        return real(host, uuid)

    monkeypatch.setattr(dc.hv, "start", start)


def test_restart_and_start_elsewhere_failing_rebuilds_it_on_a_host_that_did_not_fail(make_dc, monkeypatch):
    dc = make_dc({"h1": ["g1"], "h2": [], "h3": ["y1", "y2"]}, running=False)
    dc.sync()
    for name in ("y1", "y2"):  # h3 carries more: relocation prefers h2
        dc.hv.start("h3", dc.vms[name])
    refuse_starts_on(dc, monkeypatch, "h1", "h2")
    deliver(dc, vm_alert(dc, "g1", "h1"))
    [inc] = [i for i in dc.store.list_incidents() if i.subject == vm_subject(dc.vms["g1"])]
    assert inc.state == S.RECOVERED, inc.reason
    assert dc.running()[dc.vms["g1"]] == ["h3"]
    done = kinds_done(dc, inc.id)
    assert (A.START_VM, False) in done and (A.START_VM_ELSEWHERE, False) in done
    assert done[-1] == (A.REBUILD_VM, True)
    rungs = [t.to_state for t in dc.store.history(inc.id)]
    assert [s for s in (S.VM_RESTARTING, S.VM_RELOCATING, S.VM_REBUILDING) if s in rungs] == [
        S.VM_RESTARTING, S.VM_RELOCATING, S.VM_REBUILDING]
    assert inc.data["failed_hosts"] == ["h1", "h2"]
    record = inc.data["rebuild"]
    assert record["host"] == "h3" and record["excluded"] == ["h1", "h2"]
    # relocation left a definition on h2, the crash one on h1: both removed, defined anew on h3 only
    assert sorted(record["removed"]) == ["stale definition on h1", "stale definition on h2"]
    assert [d.uuid for d in dc.hv.domains("h1") + dc.hv.domains("h2") if d.uuid == dc.vms["g1"]] == []


def test_rebuild_never_touches_a_running_copy(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": [], "h3": []}, running=False)
    dc.sync()
    uuid = dc.vms["g1"]
    dc.hv.define("h2", dc.store.get_vm(uuid).xml)
    dc.hv.start("h2", uuid)
    out = actions.perform(dc.engine, Action(A.REBUILD_VM, {"uuid": uuid, "host": "h1", "exclude": ["h1"]}))
    assert out.event is E.ACTION_OK and "already running on h2" in out.detail
    assert uuid in {d.uuid for d in dc.hv.domains("h1")}, "nothing is removed when a copy runs"
    assert dc.running()[uuid] == ["h2"]


def test_rebuild_with_nowhere_to_go_changes_nothing(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []}, running=False)
    dc.sync()
    uuid = dc.vms["g1"]
    out = actions.perform(dc.engine, Action(A.REBUILD_VM, {"uuid": uuid, "host": "h1", "exclude": ["h1", "h2"]}))
    assert out.event is E.ACTION_FAILED and "excluded, having failed it: h1, h2" in out.detail
    assert uuid in {d.uuid for d in dc.hv.domains("h1")}


def test_rebuild_recreates_the_declared_disk_through_libvirt_storage(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []}, running=False)
    dc.sync()
    uuid = dc.vms["g1"]
    vm = dc.store.get_vm(uuid)
    xml = vm.xml.replace('protected="true"', 'protected="true" base-image="/default-pool/base.qcow2"').replace(
        "</devices>", QCOW.format(path="/default-pool/g1.qcow2", dev="vda") + "</devices>")
    assert disk_from_base(xml) is not None
    dc.store.upsert_vm(replace(vm, xml=xml), NOW)
    out = actions.perform(dc.engine, Action(A.REBUILD_VM, {"uuid": uuid, "host": "h1", "exclude": ["h1"]}))
    assert out.event is E.ACTION_OK, out.detail
    record = out.data["rebuild"]
    assert record["recreated"][1].startswith("disk vda /default-pool/g1.qcow2 on h2: a new qcow2 overlay of "
                                             "/default-pool/base.qcow2"), record
    assert record["left_behind"] == ["disk /default-pool/g1.qcow2 on h1, where it last ran (host-local; not deleted)"]
    with dc.hv._lease("h2") as conn:
        vol = conn.storageVolLookupByPath("/default-pool/g1.qcow2")
        assert "<backingStore>" in vol.XMLDesc(0) and "/default-pool/base.qcow2" in vol.XMLDesc(0)


def test_rebuild_never_replaces_a_disk_another_vm_of_the_host_uses(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": ["o1"]}, running=False)
    dc.sync()
    uuid = dc.vms["g1"]
    vm = dc.store.get_vm(uuid)
    disk = QCOW.format(path="/default-pool/g1.qcow2", dev="vda")
    xml = vm.xml.replace('protected="true"', 'protected="true" base-image="/default-pool/base.qcow2"').replace(
        "</devices>", disk + "</devices>")
    dc.store.upsert_vm(replace(vm, xml=xml), NOW)
    other = dc.hv.domain_xml("h2", dc.vms["o1"]).replace("</devices>", disk + "</devices>")
    dc.hv.define("h2", other)  # o1 on h2 uses the same path (a misconfiguration): its disk is not touched
    out = actions.perform(dc.engine, Action(A.REBUILD_VM, {"uuid": uuid, "host": "h1", "exclude": ["h1"]}))
    assert out.event is E.ACTION_FAILED and "is a disk of o1 too: not replaced" in out.detail, out.detail
    assert out.extra["tried"] == "h2"
    assert uuid in {d.uuid for d in dc.hv.domains("h1")}, "a disk that cannot be made removes nothing"
