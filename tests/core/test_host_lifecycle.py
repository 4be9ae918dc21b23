"""A host's whole life through the engine, on libvirt's test driver: each test is a finding of issue 9
that held before the host condition machine, and the behaviour that replaced it. The lab shows the
same on real hosts (tests/e2e/test_host_lifecycle.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from remediator.serve import ENGINE_JOBS
from remediator.fsm import EventKind as E
from remediator.fsm import State as S
from remediator.model import Alert, AlertStatus, Event, HostCondition, Remediation, host_subject, vm_subject

from .conftest import NOW, domain_xml, vm_uuid
from .test_engine import FOUR, assert_never_twice, deliver, resolved, vm_alert


def host_alert(host, kind=Remediation.HOST_DOWN, at=NOW, labels=None):
    return Alert(fingerprint=f"fp-{host}-{kind}", status=AlertStatus.FIRING, remediation=kind, alertname=str(kind),
                 host=host, starts_at=at, labels=labels or {})


def condition(dc, host):
    state = dc.store.host_states().get(host)
    return state.condition if state else HostCondition.UP


def deliver_waiting(dc, *alerts):
    """Deliver and let the actions finish, without firing timers (an incident waiting for a host
    re-arms its re-check timer for as long as it waits)."""
    dc.store.record_alerts(list(alerts), NOW)
    dc.engine.handle_pending_alerts()
    assert dc.engine.wait_idle(30)


def fences(dc):
    return [c for c in dc.switch.agent_calls() if c.startswith("off")]


def test_damaged_host_whose_drain_failed_then_loses_power_is_fenced_and_evacuated_once(make_dc):
    # Before: the HostDown alert shared the damaged incident's subject and was filed as a duplicate.
    dc = make_dc({"h1": ["g1-p2", "g2-p1"], "h2": [], "h3": []})
    dc.sync()
    for other in ("h2", "h3"):  # no host can take them: the drain fails
        assert dc.engine.set_maintenance(other, True, by="test").ok
    deliver(dc, host_alert("h1", Remediation.HOST_DAMAGED))
    damaged = dc.store.open_incident_for(host_subject("h1", Remediation.HOST_DAMAGED))
    assert damaged.state == S.FAILED and condition(dc, "h1") is HostCondition.CORDONED
    for other in ("h2", "h3"):
        assert dc.engine.set_maintenance(other, False, by="test").ok
    dc.switch.cut.add("h1")  # power loss
    deliver(dc, host_alert("h1", at=NOW + timedelta(seconds=30)))
    [alert] = [a for a in dc.store.recent_alerts() if a.alert.remediation is Remediation.HOST_DOWN]
    assert alert.outcome == "incident"
    down = dc.store.get_incident(alert.incident_id)
    assert down.state == S.RECOVERED and condition(dc, "h1") is HostCondition.FENCED
    assert len(fences(dc)) == 1
    damaged = dc.store.get_incident(damaged.id)
    assert damaged.state == S.DISMISSED and "fenced" in damaged.reason
    assert sorted(dc.running()) == sorted(dc.vms.values()) and "h1" not in str(dc.running())
    assert_never_twice(dc)


def test_activated_host_cut_off_later_is_fenced_again_before_its_vms_start_elsewhere(make_dc):
    # Before: FENCED stuck, so the host_fenced guard evacuated it again without a new fence.
    dc = make_dc({"h1": ["g1-p2", "g2-p1"], "h2": [], "h3": []})
    dc.sync()
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1"))
    assert condition(dc, "h1") is HostCondition.FENCED and len(fences(dc)) == 1
    dc.power_on("h1")
    refused = dc.engine.activate_host("h2", by="alice")
    assert refused.ok and "up already" in refused.reason
    answer = dc.engine.activate_host("h1", by="alice", reason="PSU replaced")
    assert answer.ok, answer.reason
    assert condition(dc, "h1") is HostCondition.UP
    assert {d.name() for d in dc.hv.raw("h1").listAllDomains()} == set()  # both run elsewhere: undefined
    assert all(not i.is_open for i in dc.store.list_incidents())
    # A new protected VM lands on it, then the host is cut off: verified, fenced again, then moved.
    new = dc.hv.raw("h1").defineXML(domain_xml("n1-p5", vm_uuid("n1-p5"), True))
    new.create()
    dc.sync()
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1", at=NOW + timedelta(minutes=5)))
    assert len(fences(dc)) == 2
    down = dc.store.open_incident_for("host:h1") or dc.store.list_incidents()[0]
    assert down.state == S.RECOVERED, down.reason
    running = dc.running()
    assert vm_uuid("n1-p5") in running and running[vm_uuid("n1-p5")] != ["h1"]
    assert_never_twice(dc)


def test_activate_refuses_a_host_that_does_not_answer_or_is_in_maintenance(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": [], "h3": []})
    dc.sync()
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1"))
    answer = dc.engine.activate_host("h1", by="alice")
    assert not answer.ok and "does not answer" in answer.reason and condition(dc, "h1") is HostCondition.FENCED
    assert dc.engine.set_maintenance("h2", True, by="bob").ok
    answer = dc.engine.activate_host("h2", by="alice")
    assert not answer.ok and "maintenance off" in answer.reason


def test_a_down_host_that_answers_again_is_up_and_the_storm_lifts_by_itself(make_dc):
    # Before: verify_host marked hosts DOWN and nothing marked them up: a blip held the storm for good.
    dc = make_dc({"h1": ["a-p1"], "h2": ["b-p1"], "h3": []})
    dc.sync()
    dc.switch.cut.update({"h1", "h2"})
    deliver(dc, host_alert("h1"), host_alert("h2"))
    assert {i.state for i in dc.store.list_incidents()} == {S.HELD}
    assert dc.store.storm_hold()["active"]
    dc.switch.cut.clear()  # the partition heals
    dc.engine.sync_inventory()
    dc.settle()
    assert not dc.store.storm_hold()["active"]
    assert {h: condition(dc, h) for h in ("h1", "h2", "h3")} == dict.fromkeys(("h1", "h2", "h3"), HostCondition.UP)
    assert {i.state for i in dc.store.list_incidents()} == {S.HOST_RECHECKING} and fences(dc) == []
    deliver(dc, resolved(host_alert("h1")), resolved(host_alert("h2")))  # their alerts resolve
    assert {i.state for i in dc.store.list_incidents()} == {S.DISMISSED} and fences(dc) == []
    # A later single-host failure is handled without a hold.
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1", at=NOW + timedelta(minutes=1)))
    assert dc.store.open_incident_for("host:h1") is None and len(fences(dc)) == 1
    assert dc.running()[dc.vms["a-p1"]] in (["h2"], ["h3"])


def test_confirm_off_is_refused_and_sets_nothing_when_the_incident_no_longer_waits(make_dc):
    # Before: confirm-off set FENCED first and looked at the incident afterwards.
    dc = make_dc({"h1": ["g1"], "h2": []})
    dc.sync()
    deliver(dc, host_alert("h1"))  # h1 answers: the incident only watches it (rechecking)
    answer = dc.engine.operator_confirm_off("h1", by="alice")
    assert not answer.ok and "not waiting to be fenced" in answer.reason
    assert condition(dc, "h1") is HostCondition.UP


def test_another_unreachable_host_that_had_the_vm_keeps_it_from_starting(make_dc):
    # Before: only the alert's origin counted as "may still run it".
    dc = make_dc({"h1": ["g1"], "h2": ["g1"], "h3": []}, running=False)  # a copy also defined on h2
    dc.sync()
    dc.switch.cut.add("h2")
    deliver_waiting(dc, vm_alert(dc, "g1", "h1"))
    inc = dc.store.open_incident_for(vm_subject(dc.vms["g1"]))
    assert inc.state == S.VM_AWAITING_HOST and "h2" in inc.reason
    assert dc.running() == {}
    deliver_waiting(dc, host_alert("h2"))  # h2 is fenced: nothing can run there any more
    assert dc.engine.wait_idle(30)
    assert dc.store.get_incident(inc.id).state == S.RECOVERED
    assert dc.running() == {dc.vms["g1"]: ["h1"]}


def test_opening_an_incident_is_one_transaction(make_dc, monkeypatch):
    dc = make_dc({"h1": ["g1"], "h2": []}, running=False)
    dc.sync()
    dc.store.record_alerts([vm_alert(dc, "g1", "h1")], NOW)

    def crash(*args, **kwargs):
        raise RuntimeError("killed between the incident row and its first intents")

    monkeypatch.setattr(dc.store, "record_intent", crash)
    with pytest.raises(RuntimeError):
        dc.engine.handle_pending_alerts()
    assert dc.store.list_incidents() == [] and len(dc.store.pending_alerts()) == 1
    monkeypatch.undo()
    dc.engine.handle_pending_alerts()
    dc.settle()
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED and dc.running() == {dc.vms["g1"]: ["h1"]}


def test_a_storm_release_covers_its_hosts_and_a_failure_beyond_them_holds_again(make_dc):
    # Before: a release lasted until the share dropped, whatever failed next.
    dc = make_dc({"h1": ["a-p1"], "h2": ["b-p1"], "h3": ["c-p1"], "h4": [], "h5": []})
    dc.sync()
    dc.switch.cut.update({"h1", "h2"})
    deliver(dc, host_alert("h1"), host_alert("h2"))
    assert {i.state for i in dc.store.list_incidents()} == {S.HELD}
    dc.engine.release_storm(by="bob")
    dc.settle()
    assert {i.state for i in dc.store.list_incidents()} == {S.RECOVERED}
    dc.switch.cut.add("h3")
    deliver(dc, host_alert("h3", at=NOW + timedelta(minutes=1)))
    held = dc.store.open_incident_for("host:h3")
    assert held is not None and held.state == S.HELD
    assert "not h3" in dc.store.storm_hold()["reason"]
    assert len(fences(dc)) == 2  # h1 and h2; h3 held


def test_dry_run_goes_through_a_host_power_loss_and_changes_nothing(make_dc):
    # Before: the fence "succeeded" without marking the host fenced, so the evacuation refused: FAILED.
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []}, dry_run=True)
    dc.sync()
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED and inc.reason.startswith("dry run: nothing was fenced or started")
    assert "4 would start" in inc.reason and "->" in inc.reason
    assert fences(dc) == [] and dc.running() == {}
    assert condition(dc, "h1") is HostCondition.UP
    assert {vm.host for vm in dc.store.list_vms()} == {"h1"}


def test_retry_and_close_act_on_the_incident_the_operator_named(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []}, running=False)
    dc.sync()
    deliver(dc, vm_alert(dc, "g1", "h1"))
    [first] = dc.store.list_incidents()
    assert not first.is_open
    dc.hv.raw("h1").lookupByUUIDString(dc.vms["g1"]).destroy()
    dc.switch.cut.add("h1")
    deliver_waiting(dc, vm_alert(dc, "g1", "h1", fingerprint="fp-2", starts_at=NOW + timedelta(minutes=1)))
    second = dc.store.open_incident_for(vm_subject(dc.vms["g1"]))
    assert second.id != first.id
    queued = dc.store.enqueue_event(vm_subject(dc.vms["g1"]), Event(E.OPERATOR_CLOSE, NOW, {
        "by": "alice", "incident": first.id}))
    dc.engine.handle_pending_events()
    assert dc.store.get_event(queued).outcome == "refused"
    assert dc.store.get_incident(second.id).is_open


def test_maintenance_drains_by_live_migration_only_and_off_returns_the_host(make_dc):
    # The test driver cannot migrate (the lab shows real ones): the drain fails and restarts nothing.
    dc = make_dc({"h1": ["g1"], "h2": []})
    dc.sync()
    answer = dc.engine.set_maintenance("h1", True, by="alice", reason="BIOS")
    assert answer.ok and condition(dc, "h1") is HostCondition.MAINTENANCE
    dc.settle()
    inc = dc.store.open_incident_for(host_subject("h1", Remediation.HOST_MAINTENANCE))
    assert inc.state == S.FAILED and "not supported" in inc.reason
    assert dc.running() == {dc.vms["g1"]: ["h1"]}  # never restarted elsewhere
    refused = dc.engine.set_maintenance("h2", False, by="alice")
    assert not refused.ok and "not in maintenance" in refused.reason
    assert dc.engine.set_maintenance("h1", False, by="alice").ok
    assert condition(dc, "h1") is HostCondition.UP and not dc.store.get_incident(inc.id).is_open


def test_maintenance_is_refused_for_a_fenced_host(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []})
    dc.sync()
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1"))
    answer = dc.engine.set_maintenance("h1", True, by="alice")
    assert not answer.ok and "maintenance is for hosts that are up" in answer.reason


def test_the_tick_timer_only_wakes_the_engine_the_one_consumer_of_pending_rows():
    # Before: the tick job and the engine loop both consumed pending alerts and events.
    assert ENGINE_JOBS["tick"] == "notify"


def test_dry_run_crash_says_what_it_would_do_and_reconcile_does_not_repeat_it(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []}, running=False, dry_run=True)
    dc.sync()
    deliver(dc, vm_alert(dc, "g1", "h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED and inc.reason.startswith("dry run: nothing was started") and dc.running() == {}
    from remediator.reconcile import reconcile
    # The VM is still down (reason crashed in libvirt's eyes): the reconcile pass opens nothing new.
    findings = reconcile(dc.config, dc.store, dc.hv, NOW, down_reasons=frozenset({0, 1, 2, 3, 5, 6, 8}))
    assert [f for f in findings if f.kind == "vm_down_without_incident"] == []


def test_the_alert_for_a_crash_the_fast_path_handled_joins_its_incident(make_dc):
    from remediator.edges.libvirt_events import Crash

    dc = make_dc({"h1": ["g1"], "h2": []}, running=False)
    dc.sync()
    dc.engine.fast_path.crash_reported(Crash("h1", dc.vms["g1"], "g1", 0.0, "crashed"))  # what the event thread does
    dc.engine.handle_pending_alerts()
    dc.settle()
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED and inc.data["opened_by"] == "libvirt_event"
    # The rule's alert for the same crash comes a second later: a repeat, not a second incident.
    deliver(dc, vm_alert(dc, "g1", "h1", starts_at=inc.opened_at + timedelta(seconds=1)))
    assert [i.id for i in dc.store.list_incidents()] == [inc.id]
    [alert] = [a for a in dc.store.recent_alerts() if a.alert.alertname == "VMDown"]
    assert alert.outcome == "duplicate" and alert.incident_id == inc.id


def test_a_host_cut_off_right_after_its_activation_is_a_new_fault_not_the_fast_path_incidents_repeat(make_dc):
    """The fast path handled h1's power loss (fenced, its VM moved); an operator activated h1; seconds
    later h1 is cut off. That HostDown is well within the join window of the fast path's incident, but
    the host came back in between: a new incident, verified, fenced again, its new VM moved
    (make test found the alert joined to the old incident and h1 never handled)."""
    dc = make_dc({"h1": ["g1"], "h2": [], "h3": []})
    dc.sync()
    dc.switch.cut.add("h1")
    with dc.switch.statedir.joinpath("h1.off").open("w"):
        pass  # the BMC says off: positive proof, so the fast path opens the host's incident
    dc.engine.fast_path.host_lost("h1")
    dc.engine.handle_pending_alerts()
    dc.settle()
    [first] = dc.store.list_incidents()
    assert first.data["opened_by"] == "libvirt_event" and condition(dc, "h1") is HostCondition.FENCED
    dc.power_on("h1")
    assert dc.engine.activate_host("h1", by="alice", reason="PSU replaced").ok
    new = dc.hv.raw("h1").defineXML(domain_xml("n1-p5", vm_uuid("n1-p5"), True))
    new.create()
    dc.sync()
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1", at=first.closed_at + timedelta(seconds=3)))  # inside FAST_PATH_JOIN_S
    second = dc.store.latest_incident_for("host:h1")
    assert second.id != first.id and second.data["opened_by"] == "alert", second
    assert second.state == S.RECOVERED, second.reason
    running = dc.running()
    assert running[vm_uuid("n1-p5")] != ["h1"]
    assert_never_twice(dc)


def test_the_alert_for_a_power_loss_the_fast_path_handled_joins_its_incident_while_the_host_is_fenced(make_dc):
    dc = make_dc({"h1": ["g1"], "h2": []})
    dc.sync()
    dc.switch.cut.add("h1")
    with dc.switch.statedir.joinpath("h1.off").open("w"):
        pass
    dc.engine.fast_path.host_lost("h1")
    dc.engine.handle_pending_alerts()
    dc.settle()
    [first] = dc.store.list_incidents()
    deliver(dc, host_alert("h1", at=first.opened_at + timedelta(seconds=1)))  # the rule's alert, a bit later
    assert [i.id for i in dc.store.list_incidents()] == [first.id]
