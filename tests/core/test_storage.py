"""Issue 13's pure parts: what a VM's disks say about where it may run, placement's storage rule, and
the incident table's rows for a disk lease, a host-local disk and a VM paused on an I/O error."""
from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from dataclasses import replace
from types import SimpleNamespace

import libvirt

from exporter.domains import HA_NAMESPACE, parse_ha
from lab.guests import guest_xml
from remediator import fsm, storage
from remediator.fsm import ActionKind as A
from remediator.fsm import Context, EventKind as E, State as S
from remediator.model import Alert, AlertStatus, HostCapacity, Incident, ProtectedVM, Remediation
from remediator.disk_actions import PAUSED_IOERROR, handle_io_error
from remediator.edges.libvirt import DomainError
from remediator.placement import Plan, place
from remediator.world import Capacities
from tests.core.test_fsm import POLICY, T0, UUID, Sim, kinds

SHARED = "/srv/shared"


def test_disks_under_a_shared_path_are_shared_any_other_is_host_local_none_is_none():
    shared = guest_xml("a", disk=f"{SHARED}/a.qcow2")
    local = guest_xml("b", disk="/var/lib/libvirt/images/b.qcow2")
    assert storage.kind_of(shared, [SHARED]) == storage.SHARED
    assert storage.kind_of(shared, ["/srv/sharedX"]) == storage.LOCAL  # a prefix is not a parent directory
    assert storage.kind_of(local, [SHARED]) == storage.LOCAL
    assert storage.kind_of(guest_xml("c"), [SHARED]) == storage.NONE
    assert [d.path for d in storage.local_disks(local, [SHARED])] == ["/var/lib/libvirt/images/b.qcow2"]
    assert storage.file_disks(shared)[0] == storage.Disk(f"{SHARED}/a.qcow2", "qcow2", "vda")


def test_the_protection_element_reads_back_as_written():
    element = storage.ha_element(priority=7, group="db", base_image="/srv/base.qcow2", on_io_error="wait")
    # libvirt stores it in the namespace the call names: as the exporter and the inventory then read it
    stored = element.replace("<ha ", f'<rem:ha xmlns:rem="{HA_NAMESPACE}" ')
    ha = parse_ha(ET.fromstring(f"<metadata>{stored}</metadata>"))
    assert (ha.protected, ha.priority, ha.group, ha.base_image, ha.on_io_error) == (True, 7, "db", "/srv/base.qcow2",
                                                                                   "wait")


def test_shared_storage_vms_avoid_a_host_whose_storage_check_fails_others_do_not():
    hosts = [HostCapacity("a", 4, 8 << 30, load1=0.0, shared_storage_ok=False),
             HostCapacity("b", 4, 8 << 30, load1=2.0, shared_storage_ok=True)]
    vms = [ProtectedVM(f"u-{k}", k, None, 1, 1 << 20) for k in ("shared", "local", "none")]
    plan = place(hosts, vms, storage_of={"u-shared": "shared", "u-local": "local"})
    assert plan.assignments == {"u-shared": "b", "u-local": "a", "u-none": "a"}
    hosts[1] = replace(hosts[1], shared_storage_ok=False)
    plan = place(hosts, vms[:1], storage_of={"u-shared": "shared"})
    assert "its shared-storage check fails" in plan.unplaced["u-shared"]
    unknown = [replace(h, shared_storage_ok=None) for h in hosts]  # no figure: not held against it
    assert place(unknown, vms[:1], storage_of={"u-shared": "shared"}).complete


def test_a_start_refused_by_the_disk_lease_ends_the_incident_no_retry_no_rebuild():
    sim = Sim.open(Remediation.VM_DOWN, Context(policy=POLICY, has_definition=True))
    sim.result(E.VM_NOT_RUNNING)
    d = sim.result(E.ACTION_OK, disk_locked=True, detail="not started on h1, its disk is locked")
    assert sim.state is S.DISMISSED and d.closes and kinds(d) == [] and "runs somewhere" in d.reason


def test_a_host_local_vm_goes_straight_to_the_rebuild_rung():
    sim = Sim.open(Remediation.VM_DOWN, Context(policy=POLICY, has_definition=True))
    sim.incident = replace(sim.incident, state=S.VM_RELOCATING, attempts=1)
    d = sim.result(E.ACTION_FAILED, host_local=True, detail="g1 has a host-local disk")
    assert sim.state is S.VM_REBUILDING and kinds(d) == [A.REBUILD_VM]
    d = sim.result(E.ACTION_OK, hosts=["h2"], detail="g1 rebuilt on h2; its old disk h1:/x was left behind")
    assert sim.state is S.RECOVERED and "left behind" in d.reason


def io_sim() -> Sim:
    a = Alert(fingerprint="f", status=AlertStatus.FIRING, remediation=Remediation.VM_IO_ERROR, alertname="A",
              host="h1", starts_at=T0, vm="g1", uuid=UUID)
    assert a.subject == f"vm:{UUID}:io_error"  # its own incident, beside a vm_down one
    d = fsm.start(a, Context(policy=POLICY))
    assert d.next_state is S.VM_IO_HANDLING and kinds(d) == [A.HANDLE_IO_ERROR]
    inc = Incident(id=1, subject=a.subject, kind=a.remediation, state=d.next_state, host="h1", opened_at=T0,
                   updated_at=T0, vm_uuid=UUID, vm_name="g1", attempts=d.attempts)
    return Sim(inc, Context(policy=POLICY))


def test_io_error_wait_stays_open_until_the_vm_runs_or_stops():
    sim = io_sim()
    sim.result(E.ACTION_OK, waiting=True, detail="g1 stays paused (on_io_error wait)")
    assert sim.state is S.VM_IO_WAITING and sim.incident.is_open
    assert sim.send(E.RETRY, state=S.VM_IO_WAITING).ignored
    assert sim.send(E.ALERT_RESOLVED).next_state is S.RECOVERED


def test_io_error_resume_retries_with_backoff_without_a_limit_until_the_storage_is_back():
    sim = io_sim()
    for n in range(10):
        d = sim.result(E.ACTION_FAILED, detail="paused again: its storage still fails")
        assert sim.state is S.VM_IO_HANDLING and kinds(d) == [A.SCHEDULE_RETRY]
        assert d.actions[0].params["after_s"] == min(POLICY.backoff_max_s, POLICY.backoff_s * 2 ** n)
        assert kinds(sim.retry()) == [A.HANDLE_IO_ERROR]
    assert sim.send(E.ALERT_RESOLVED).ignored  # the step's own result ends it, not a late resolve
    assert sim.result(E.ACTION_OK, detail="resumed g1 on h1").next_state is S.RECOVERED


class FakeHypervisors:
    """What the I/O-error handler asks of libvirt, recorded; `fail_starts` starts fail first."""

    def __init__(self, state, fail_starts=0):
        self.state, self.fail_starts, self.calls = state, fail_starts, []

    def domain_state(self, host, uuid):
        return self.state

    def domain_xml(self, host, uuid):
        return "<domain/>"

    def destroy(self, host, uuid):
        self.calls.append(("destroy", host))
        self.state = (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED)

    def define_and_start(self, host, xml):
        self.calls.append(("start", host))
        if self.fail_starts:
            self.fail_starts -= 1
            raise DomainError(host, "start", "qemu exited")

    def undefine(self, host, uuid):
        self.calls.append(("undefine", host))
        return True


def io_engine(hv, placed: str | None):
    vm = ProtectedVM(UUID, "g1", "h1", 1, 1 << 20, xml=guest_xml("g1", uuid=UUID, metadata=(
        f'<rem:ha xmlns:rem="{HA_NAMESPACE}" protected="true" on-io-error="restart_elsewhere"/>')))
    plan = Plan({UUID: placed} if placed else {}, {} if placed else {UUID: "no host can take g1: h2: full"})
    world = SimpleNamespace(place=lambda vms, exclude: (plan, Capacities([], "libvirt")),
                            find_running=lambda uuid: ([], []), may_still_run_it=lambda *a, **k: [],
                            remember_host=lambda uuid, host: None)
    store = SimpleNamespace(get_vm=lambda uuid: vm, note_vm_location=lambda *a: None)
    config = SimpleNamespace(dry_run=False, policy=SimpleNamespace(on_io_error="resume"))
    return SimpleNamespace(config=config, store=store, hv=hv, world=world, vm_lock=lambda uuid: threading.Lock(),
                           clock=lambda: T0)


def test_restart_elsewhere_gives_up_the_paused_copy_only_for_a_placed_host_and_finishes_a_failed_start():
    params = {"uuid": UUID, "host": "h1"}
    hv = FakeHypervisors(PAUSED_IOERROR)
    out = handle_io_error(io_engine(hv, None), params)
    assert not out.ok and "the paused copy stays on h1" in out.detail and hv.calls == []
    hv = FakeHypervisors(PAUSED_IOERROR, fail_starts=1)
    out = handle_io_error(io_engine(hv, "h2"), params)
    assert not out.ok and "it is shut off on h1" in out.detail and hv.calls == [("destroy", "h1"), ("start", "h2")]
    out = handle_io_error(io_engine(hv, "h2"), params)  # the retry: shut off by us, not "no longer paused"
    assert out.ok and out.detail.startswith("started on h2") and hv.calls[2:] == [("start", "h2"), ("undefine", "h1")]
