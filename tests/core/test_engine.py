"""The engine over the real libvirt edge (test driver), the real SQLite store and the real fencing edge."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

from remediator import actions
from remediator.fsm import ActionKind as A
from remediator.fsm import State as S
from remediator.model import Alert, AlertStatus, HostCondition, Remediation, vm_subject
from remediator.reconcile import reconcile

from .conftest import NOW

FOUR = ["a-p40", "b-p30", "c-p20", "d-p10"]


def vm_alert(dc, name, host, fingerprint="fp-vm", starts_at=NOW):
    return Alert(fingerprint=fingerprint, status=AlertStatus.FIRING, remediation=Remediation.VM_DOWN,
                 alertname="VMDown", host=host, starts_at=starts_at, vm=name, uuid=dc.vms[name])


def host_alert(host, kind=Remediation.HOST_DOWN):
    return Alert(fingerprint=f"fp-{host}", status=AlertStatus.FIRING, remediation=kind, alertname="HostDown",
                 host=host, starts_at=NOW)


def deliver(dc, *alerts):
    dc.store.record_alerts(list(alerts), NOW)
    dc.engine.handle_pending_alerts()
    dc.settle()


def kinds_done(dc, incident_id):
    return [(i.action.kind, i.ok) for i in dc.store.intents(incident_id) if i.action.kind != A.SCHEDULE_RETRY]


def assert_never_twice(dc):
    twice = {u: hosts for u, hosts in dc.running().items() if len(hosts) > 1}
    assert not twice, f"running twice: {twice}"


# ---- VM down -----------------------------------------------------------------------------------------

def test_crashed_vm_restarts_in_place(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": [], "h3": []}, running=False)
    assert dc.sync().protected == 1
    deliver(dc, vm_alert(dc, "g1", "h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED and not inc.is_open
    assert dc.running() == {dc.vms["g1"]: ["h1"]}
    assert kinds_done(dc, inc.id) == [(A.VERIFY_VM, True), (A.START_VM, True)]
    assert [(t.from_state, t.to_state) for t in dc.store.history(inc.id)] == [
        (S.VM_VERIFYING, S.VM_VERIFYING), (S.VM_VERIFYING, S.VM_RESTARTING), (S.VM_RESTARTING, S.RECOVERED)]
    assert dc.store.unfinished_intents() == []


def test_restart_in_place_failing_moves_it_to_the_least_loaded_other_host(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": ["x1", "x2"], "h3": ["y1"]}, running=False)
    dc.sync()
    for name, host in (("x1", "h2"), ("x2", "h2"), ("y1", "h3")):
        dc.hv.start(host, dc.vms[name])
    # Restart in place fails for real: the domain is no longer defined on h1.
    dc.hv.undefine("h1", dc.vms["g1"])
    deliver(dc, vm_alert(dc, "g1", "h1"))
    [inc] = [i for i in dc.store.list_incidents() if i.subject == vm_subject(dc.vms["g1"])]
    assert inc.state == S.RECOVERED, inc.reason
    assert dc.running()[dc.vms["g1"]] == ["h3"]  # h3 runs one vCPU, h2 two
    done = kinds_done(dc, inc.id)
    assert done.count((A.START_VM, False)) == 2 and done[-1] == (A.START_VM_ELSEWHERE, True)
    # Prometheus did not answer: placement fell back to libvirt and the incident says so.
    assert inc.data["load_source"] == "libvirt"
    assert dc.store.get_vm(dc.vms["g1"]).host == "h3"


def test_alert_for_a_vm_that_runs_is_dismissed_without_action(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []})
    dc.sync()
    deliver(dc, vm_alert(dc, "g1", "h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.DISMISSED and kinds_done(dc, inc.id) == [(A.VERIFY_VM, True)]


def test_same_alert_three_times_is_one_incident_and_one_recovery(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []}, running=False)
    dc.sync()
    a = vm_alert(dc, "g1", "h1")
    for _ in range(3):
        dc.store.record_alerts([a], NOW)  # the store keeps one (fingerprint, startsAt)
    dc.store.record_alerts([replace(a, fingerprint="fp-peer")], NOW)  # an HA peer's copy
    dc.engine.handle_pending_alerts()
    dc.settle()
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED
    assert [k for k, _ in kinds_done(dc, inc.id)].count(A.START_VM) == 1


def test_maintenance_host_alert_starts_nothing(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []}, running=False)
    dc.sync()
    dc.engine.set_maintenance("h1", True)
    deliver(dc, vm_alert(dc, "g1", "h1"))
    # Only the maintenance drain's own incident (nothing runs there to drain); the VM's alert is ignored.
    [inc] = dc.store.list_incidents()
    assert inc.kind is Remediation.HOST_MAINTENANCE and inc.state == S.RECOVERED, inc.reason
    assert dc.running() == {}


# ---- host down ---------------------------------------------------------------------------------------

def test_host_power_loss_fences_then_starts_its_vms_elsewhere_spread_once(make_dc):
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []})
    dc.sync()
    dc.switch.cut.add("h1")  # power loss: libvirt on h1 no longer answers
    deliver(dc, host_alert("h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED, inc.reason
    assert [k for k, _ in kinds_done(dc, inc.id)] == [A.VERIFY_HOST, A.FENCE_HOST, A.EVACUATE_HOST]
    assert dc.switch.agent_calls() == ["off h1", "status h1"]
    assert dc.store.host_states()["h1"].condition is HostCondition.FENCED
    running = dc.running()
    assert sorted(running) == sorted(dc.vms[n] for n in FOUR)
    per_host = [hosts[0] for hosts in running.values()]
    assert sorted(per_host.count(h) for h in ("h2", "h3")) == [2, 2]
    assert_never_twice(dc)
    assert "4 started" in [i for i in dc.store.intents(inc.id) if i.action.kind == A.EVACUATE_HOST][0].detail


def test_vm_alert_from_a_dead_host_waits_for_the_host_incident(make_dc):
    dc = make_dc({"h1": ["g1", "g2"], "h2": [], "h3": []})
    dc.sync()
    dc.switch.cut.add("h1")
    deliver(dc, vm_alert(dc, "g1", "h1"), host_alert("h1"))
    by_subject = {i.subject: i for i in dc.store.list_incidents()}
    assert by_subject["host:h1"].state == S.RECOVERED
    vm_inc = by_subject[vm_subject(dc.vms["g1"])]
    assert vm_inc.state == S.DISMISSED, vm_inc.reason
    states = [t.to_state for t in dc.store.history(vm_inc.id)]
    assert S.VM_AWAITING_HOST in states and S.VM_RELOCATING not in states
    assert sorted(dc.running()) == sorted(dc.vms.values())
    assert_never_twice(dc)


def resolved(alert):
    return replace(alert, status=AlertStatus.RESOLVED, ends_at=alert.starts_at + timedelta(seconds=30))


def test_reachable_host_is_not_fenced_and_is_dismissed_when_its_alert_resolves(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []})
    dc.sync()
    deliver(dc, host_alert("h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.HOST_RECHECKING and dc.switch.agent_calls() == []
    deliver(dc, resolved(host_alert("h1")))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.DISMISSED and dc.switch.agent_calls() == []


def test_vetoed_host_down_whose_alert_still_fires_is_checked_again_and_fenced_once_cut(make_dc):
    # Before: a host that answered dismissed its incident, and the same still-firing alert (repeats
    # are idempotent) never started another check: a cut that came later was never acted on.
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []})
    dc.sync()
    deliver(dc, host_alert("h1"))
    assert dc.store.open_incident_for("host:h1").state == S.HOST_RECHECKING
    dc.switch.cut.add("h1")
    [(after_s, _, timer)] = dc.engine.pending_timers()
    assert timer.detail["state"] == S.HOST_RECHECKING and after_s <= dc.engine.policy.recheck_s
    dc.engine.fire_timers_now()
    dc.settle()
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED, inc.reason
    assert dc.switch.agent_calls() == ["off h1", "status h1"]
    assert_never_twice(dc)


def test_dead_bmc_waits_and_confirm_off_lets_recovery_go_on_once(make_dc):
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []}, dead_bmc=("h1",),
                 policy="  attempts: {fence: 2}\n")
    dc.sync()
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.HOST_FENCE_WAITING and inc.is_open
    assert "nothing is restarted elsewhere" in inc.reason and "confirm" in inc.reason
    assert dc.running() == {}  # h2, h3 run nothing; h1's VMs are unknown (cut off)
    assert [c.split()[0] for c in dc.switch.agent_calls()] == ["off", "status"] * 2
    dc.engine.operator_confirm_off("h1", by="alice")
    dc.settle()
    inc = dc.store.get_incident(inc.id)
    assert inc.state == S.RECOVERED, inc.reason
    assert sorted(dc.running()) == sorted(dc.vms.values())
    assert_never_twice(dc)
    assert "alice" in dc.store.host_states()["h1"].reason


def test_storm_two_of_three_hosts_down_holds_everything(make_dc):
    dc = make_dc({"h1": ["a-p1"], "h2": ["b-p1"], "h3": []})
    dc.sync()
    dc.switch.cut.update({"h1", "h2"})
    deliver(dc, host_alert("h1"), host_alert("h2"))
    incidents = dc.store.list_incidents()
    assert {i.state for i in incidents} == {S.HELD}
    assert dc.switch.agent_calls() == []  # nothing fenced
    assert dc.running() == {}  # nothing evacuated to h3
    storm = dc.store.storm_hold()
    assert storm["active"] and storm["unhealthy"] == ["h1", "h2"]
    assert dc.metrics.storm_hold._value.get() == 1
    # An operator releases the hold: the held incidents go on (verify, fence, evacuate).
    dc.engine.release_storm(by="bob")
    dc.settle()
    assert {dc.store.get_incident(i.id).state for i in incidents} == {S.RECOVERED}
    assert sorted(dc.running()) == sorted(dc.vms.values()) and all(h == ["h3"] for h in dc.running().values())


def test_two_hosts_lost_together_are_held_even_when_only_one_alert_has_come(make_dc):
    # Each host's alert is its own Alertmanager group: the second may come a moment later. The
    # remediator asks every host before it fences, and counts the one it cannot reach.
    dc = make_dc({"h1": ["a-p1"], "h2": ["b-p1"], "h3": []})
    dc.sync()
    dc.switch.cut.update({"h1", "h2"})
    deliver(dc, host_alert("h1"))
    assert [i.state for i in dc.store.list_incidents()] == [S.HELD]
    assert dc.switch.agent_calls() == [] and dc.running() == {}
    assert dc.store.storm_hold()["unhealthy"] == ["h1", "h2"]
    # h2 answers again (its blip is over): the next inventory sync sees it, the share drops, h1 goes on.
    dc.switch.cut.discard("h2")
    dc.engine.sync_inventory()
    dc.settle()
    assert [i.state for i in dc.store.list_incidents()] == [S.RECOVERED]
    assert dc.running() == {dc.vms["a-p1"]: ["h3"], dc.vms["b-p1"]: ["h2"]}


def test_damaged_host_is_cordoned_and_its_vms_migrate_away(make_dc):
    dc = make_dc({"h1": ["g1", "g2"], "h2": [], "h3": []})
    dc.sync()
    deliver(dc, host_alert("h1", Remediation.HOST_DAMAGED))
    [inc] = dc.store.list_incidents()
    # The test driver cannot migrate (the lab shows real live migrations): the damaged host still
    # answers, so each VM is destroyed there and started once on another host; h1 stays cordoned.
    dc.settle()
    inc = dc.store.get_incident(inc.id)
    drains = [i for i in dc.store.intents(inc.id) if i.action.kind == A.MIGRATE_AWAY]
    told = f"{inc.reason}\ndrains: {[(i.ok, i.detail) for i in drains]}"
    assert dc.store.host_states()["h1"].condition is HostCondition.CORDONED
    assert inc.state == S.RECOVERED and "not supported" in inc.reason, told
    # A drain that failed part-way (on a loaded machine: CI once saw one VM's cold restart fail) is
    # retried, and the retry moves only what is still there: each VM restarted cold exactly once.
    cold = [name for i in drains for name in ("g1", "g2") if f"{name} destroyed on h1" in (i.detail or "")]
    assert sorted(cold) == ["g1", "g2"], told
    assert all(i.ok for i in drains[-1:]) and all(not i.ok for i in drains[:-1]), told
    running = dc.running()
    assert sorted(running) == sorted(dc.vms[n] for n in ("g1", "g2")) and all(h != ["h1"] for h in running.values())
    assert_never_twice(dc)
    assert [k for k, _ in kinds_done(dc, inc.id)] == [A.CORDON_HOST] + [A.MIGRATE_AWAY] * len(drains), told


# ---- durability --------------------------------------------------------------------------------------

def test_restart_in_the_middle_of_an_evacuation_completes_it_without_repeating(make_dc):
    """What `kill -9` leaves: the fence done and recorded, the evacuation's intent written, two of four
    VMs already started elsewhere, no result. A new engine on the same store finishes the job."""
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []})
    dc.sync()
    dc.switch.cut.add("h1")
    # Run the first engine up to the fence, then stop it as a crash would (no evacuation run).
    dc.store.record_alerts([host_alert("h1")], NOW)
    dc.engine._dispatch = _crash_on(dc.engine, A.EVACUATE_HOST, dc.engine._dispatch)
    dc.engine.handle_pending_alerts()
    dc.engine.wait_idle(30)
    [inc] = dc.store.list_incidents()
    assert inc.state == S.HOST_EVACUATING
    [unfinished] = dc.store.unfinished_intents()
    assert unfinished.action.kind == A.EVACUATE_HOST
    # The dead process had started two of the four (highest priority first) on h2.
    for name in FOUR[:2]:
        dc.hv.define_and_start("h2", dc.store.get_vm(dc.vms[name]).xml)
    dc.engine.shutdown()
    dc.engine = dc.new_engine()
    dc.engine.resume()
    dc.settle()
    inc = dc.store.get_incident(inc.id)
    assert inc.state == S.RECOVERED, inc.reason
    assert sorted(dc.running()) == sorted(dc.vms.values())
    assert_never_twice(dc)
    assert dc.switch.agent_calls() == ["off h1", "status h1"]  # the completed fence was not repeated
    evac = [i for i in dc.store.intents(inc.id) if i.action.kind == A.EVACUATE_HOST]
    assert len(evac) == 1 and evac[0].ok and "2 started, 2 already running" in evac[0].detail


def _crash_on(engine, kind, dispatch):
    """Crash stand-in: intents of `kind` are written but never performed, as when the process dies."""
    def crashing(incident_id, intents):
        intents = list(intents)
        dispatch(incident_id, [(i, a) for i, a in intents if a.kind != kind])
    return crashing


def test_resume_rearms_a_retry_timer_from_the_store(make_dc):
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []}, dead_bmc=("h1",), policy="  attempts: {fence: 3}\n")
    dc.sync()
    dc.switch.cut.add("h1")
    dc.store.record_alerts([host_alert("h1")], NOW)
    dc.engine.handle_pending_alerts()
    dc.engine.wait_idle(30)
    assert [i.action.kind for i in dc.store.unfinished_intents()] == [A.SCHEDULE_RETRY]
    dc.engine.shutdown()
    dc.engine = dc.new_engine()
    dc.engine.resume()
    assert len(dc.engine.pending_timers()) == 1
    dc.settle()
    assert len(dc.switch.agent_calls()) == 6  # three fence tries in all, none lost to the restart


# ---- reconcile and inventory -------------------------------------------------------------------------

def test_inventory_keeps_definition_priority_and_group(make_dc):
    dc = make_dc({"h1": ["a-p40"], "h2": []})
    report = dc.sync()
    vm = dc.store.get_vm(dc.vms["a-p40"])
    assert report.protected == 1 and vm.priority == 40 and vm.host == "h1" and "<domain" in vm.xml


def test_inventory_keeps_a_vm_on_its_unreachable_host_when_it_is_only_defined_elsewhere(make_dc):
    # A remediator killed between define and start on h2 leaves a shut-off copy there; after a restart,
    # the sync must not record h2 as the VM's home while h1 (which may still run it) does not answer.
    dc = make_dc({"h1": ["a-p1"], "h2": [], "h3": []})
    dc.sync()
    uuid = dc.vms["a-p1"]
    dc.switch.cut.add("h1")
    dc.engine.hv.define("h2", dc.store.get_vm(uuid).xml)
    dc.sync()
    assert dc.store.get_vm(uuid).host == "h1"
    # The host's evacuation then finds it and starts it once (h2's defined copy is reused or replaced).
    deliver(dc, host_alert("h1"))
    assert dc.running() == {uuid: [dc.running()[uuid][0]]} and dc.running()[uuid][0] in ("h2", "h3")


def test_reconcile_reports_a_lost_alert_and_the_engine_recovers_it(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []})
    dc.sync()
    dc.hv.destroy("h1", dc.vms["g1"])  # test driver: shut off, reason "destroyed" (not a crash)
    assert reconcile(dc.config, dc.store, dc.hv, NOW) == []  # an asked-for shutdown is left alone
    findings = reconcile(dc.config, dc.store, dc.hv, NOW, down_reasons=frozenset({2}))
    assert [f.kind for f in findings] == ["vm_down_without_incident"]
    dc.engine.handle_pending_alerts()
    dc.settle()
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED and dc.running() == {dc.vms["g1"]: ["h1"]}
    # While the incident is open or the VM runs, reconcile stays quiet.
    assert reconcile(dc.config, dc.store, dc.hv, NOW, down_reasons=frozenset({2})) == []


def test_reconcile_undefines_the_stale_copy_on_a_host_that_came_back(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": [], "h3": []})
    dc.sync()
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1"))
    [host] = dc.running()[dc.vms["g1"]]
    # h1 comes back powered on: its copy is defined, shut off.
    dc.hv.raw("h1").lookupByUUIDString(dc.vms["g1"]).destroy()
    dc.switch.cut.clear()
    (dc.switch.statedir / "h1.off").unlink()
    findings = reconcile(dc.config, dc.store, dc.hv, NOW)
    assert [(f.kind, f.host) for f in findings] == [("stale_copy_undefined", "h1")]
    assert [d.uuid for d in dc.hv.domains("h1")] == []
    assert dc.running() == {dc.vms["g1"]: [host]}


def test_action_timeout_fails_the_step_and_drops_the_late_result(make_dc, monkeypatch):
    dc = make_dc({"h1": ["g1"], "h2": []}, running=False, policy="  action_timeouts: {verify_s: 0.01}\n")
    dc.sync()
    dc.store.record_alerts([vm_alert(dc, "g1", "h1")], NOW)
    engine = dc.engine
    # Hold the verification until the timeout has fired.
    gate = threading.Event()
    real = actions.PERFORM[A.VERIFY_VM]
    monkeypatch.setitem(actions.PERFORM, A.VERIFY_VM, lambda e, p: (gate.wait(5), real(e, p))[1])
    engine.handle_pending_alerts()
    time.sleep(0.05)
    engine.runner.check_timeouts()
    gate.set()
    engine.wait_idle(10)
    [inc] = dc.store.list_incidents()
    [verify] = [i for i in dc.store.intents(inc.id) if i.action.kind == A.VERIFY_VM][:1]
    assert verify.ok is False and "timed out" in verify.detail
    assert inc.attempts == 1 and inc.state == S.VM_VERIFYING  # retry armed, late result ignored
