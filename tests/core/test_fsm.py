"""The transition table: the ladders step by step, then safety properties on random event sequences."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator import fsm
from remediator.fsm import ActionKind as A
from remediator.fsm import Context, EventKind as E, Policy, State as S
from remediator.model import ALERT_REMEDIATIONS, Alert, AlertStatus, Event, HostCondition, Incident, Remediation

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
POLICY = Policy(verify_attempts=2, restart_attempts=2, relocate_attempts=2, rebuild_attempts=2, fence_attempts=3,
                migrate_attempts=2, backoff_s=1.0, backoff_max_s=4.0, recheck_s=5.0)
UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def alert(kind: Remediation, status: AlertStatus = AlertStatus.FIRING) -> Alert:
    vm = kind is Remediation.VM_DOWN
    return Alert(fingerprint="f", status=status, remediation=kind, alertname="A", host="h1", starts_at=T0,
                 vm="g1" if vm else None, uuid=UUID if vm else None)


@dataclass
class Sim:
    """Applies decisions the way the store does, so a test reads as a sequence of events."""

    incident: Incident
    ctx: Context = field(default_factory=lambda: Context(policy=POLICY))
    log: list[fsm.Decision] = field(default_factory=list)

    @classmethod
    def open(cls, kind: Remediation, ctx: Context | None = None) -> "Sim":
        ctx = ctx or Context(policy=POLICY)
        d = fsm.start(alert(kind), ctx)
        assert not d.closes
        a = alert(kind)
        inc = Incident(id=1, subject=a.subject, kind=kind, state=d.next_state, host="h1", opened_at=T0,
                       updated_at=T0, vm_uuid=a.uuid, vm_name=a.vm, attempts=d.attempts, reason=d.reason)
        sim = cls(inc, ctx)
        sim.log.append(d)
        return sim

    def send(self, kind: E, **detail) -> fsm.Decision:
        d = fsm.decide(self.incident, Event(kind, T0, detail), self.ctx)
        self.log.append(d)
        if not d.ignored:
            self.incident = replace(self.incident, state=d.next_state, attempts=d.attempts, reason=d.reason,
                                    closed_at=T0 if d.closes else None)
        return d

    def result(self, kind: E, **detail) -> fsm.Decision:
        """The result of the current step action."""
        return self.send(kind, action=fsm.STEP_ACTION[S(self.incident.state)].value, **detail)

    def retry(self) -> fsm.Decision:
        return self.send(E.RETRY, state=self.incident.state)

    @property
    def state(self) -> S:
        return S(self.incident.state)


def kinds(d: fsm.Decision) -> list[str]:
    return [a.kind for a in d.actions]


# ---- VM down ladder ----------------------------------------------------------------------------------

def test_vm_down_verifies_then_restarts_in_place():
    sim = Sim.open(Remediation.VM_DOWN)
    assert sim.state is S.VM_VERIFYING and kinds(sim.log[0]) == [A.VERIFY_VM]
    assert kinds(sim.result(E.VM_NOT_RUNNING)) == [A.START_VM]
    d = sim.result(E.ACTION_OK)
    assert sim.state is S.RECOVERED and d.closes


def test_stale_alert_for_a_running_vm_is_dismissed():
    sim = Sim.open(Remediation.VM_DOWN)
    d = sim.result(E.VM_RUNNING, hosts=["h2"])
    assert d.closes and sim.state is S.DISMISSED and "h2" in d.reason


def test_vm_ladder_escalates_with_backoff_to_relocate_rebuild_then_failed():
    sim = Sim.open(Remediation.VM_DOWN, Context(policy=POLICY, has_definition=True))
    sim.result(E.VM_NOT_RUNNING)
    d = sim.result(E.ACTION_FAILED, detail="qemu exited")
    assert sim.state is S.VM_RESTARTING and kinds(d) == [A.SCHEDULE_RETRY]
    assert d.actions[0].params["after_s"] == 1.0
    assert kinds(sim.retry()) == [A.START_VM] and sim.incident.attempts == 2
    d = sim.result(E.ACTION_FAILED, detail="qemu exited")
    assert sim.state is S.VM_RELOCATING and kinds(d) == [A.START_VM_ELSEWHERE]
    assert d.actions[0].params["exclude"] == ["h1"]
    sim.result(E.ACTION_FAILED, detail="no room")
    assert sim.retry().actions[0].kind == A.START_VM_ELSEWHERE
    d = sim.result(E.ACTION_FAILED, detail="no room")
    assert sim.state is S.VM_REBUILDING and kinds(d) == [A.REBUILD_VM]
    sim.result(E.ACTION_FAILED, detail="x")
    sim.retry()
    d = sim.result(E.ACTION_FAILED, detail="x")
    assert sim.state is S.FAILED and kinds(d) == [A.RAISE_FAILED] and not d.closes
    assert sim.incident.is_open


def test_unusable_host_skips_retries_in_place():
    sim = Sim.open(Remediation.VM_DOWN)
    sim.result(E.VM_NOT_RUNNING)
    d = sim.result(E.ACTION_FAILED, host_unusable=True, detail="host damaged")
    assert sim.state is S.VM_RELOCATING and kinds(d) == [A.START_VM_ELSEWHERE]


def test_vm_on_unreachable_unfenced_host_waits_for_the_host_incident():
    sim = Sim.open(Remediation.VM_DOWN, Context(policy=POLICY, host_condition=HostCondition.DOWN))
    d = sim.result(E.HOST_UNREACHABLE)
    assert sim.state is S.VM_AWAITING_HOST and kinds(d) == [A.SCHEDULE_RETRY]
    assert d.actions[0].params["after_s"] == POLICY.recheck_s
    # Fenced, but the host's incident is still evacuating: still wait.
    sim.ctx = Context(policy=POLICY, host_condition=HostCondition.FENCED, host_incident_open=True)
    sim.retry()
    sim.result(E.HOST_UNREACHABLE)
    assert sim.state is S.VM_AWAITING_HOST
    # The host's incident ended and the VM still is not running: move it ourselves.
    sim.ctx = Context(policy=POLICY, host_condition=HostCondition.FENCED)
    sim.send(E.HOST_CHANGED)
    assert kinds(sim.result(E.HOST_UNREACHABLE)) == [A.START_VM_ELSEWHERE]


def test_maintenance_host_alerts_start_nothing():
    ctx = Context(policy=POLICY, host_condition=HostCondition.MAINTENANCE)
    for kind in Remediation:
        d = fsm.start(alert(kind), ctx)
        assert d.closes and not d.actions and "maintenance" in d.reason


def test_resolved_alert_without_incident_opens_nothing():
    d = fsm.start(alert(Remediation.VM_DOWN, AlertStatus.RESOLVED), Context())
    assert d.closes and not d.actions


# ---- host down ---------------------------------------------------------------------------------------

def test_host_down_fences_then_evacuates():
    sim = Sim.open(Remediation.HOST_DOWN)
    assert kinds(sim.log[0]) == [A.VERIFY_HOST]
    assert kinds(sim.result(E.HOST_UNREACHABLE)) == [A.FENCE_HOST]
    assert kinds(sim.result(E.ACTION_OK)) == [A.EVACUATE_HOST]
    d = sim.result(E.ACTION_OK, detail="4 VMs")
    assert d.closes and sim.state is S.RECOVERED and "stays fenced" in d.reason


def test_reachable_host_is_not_fenced_and_is_checked_again_until_its_alert_resolves():
    sim = Sim.open(Remediation.HOST_DOWN)
    d = sim.result(E.HOST_REACHABLE)
    assert sim.state is S.HOST_RECHECKING and kinds(d) == [A.SCHEDULE_RETRY]
    assert d.actions[0].params["after_s"] == POLICY.recheck_s
    assert kinds(sim.retry()) == [A.VERIFY_HOST] and sim.state is S.HOST_VERIFYING
    # Cut meanwhile (the alert came before the keepalive failed, or the link died later): fenced.
    assert kinds(sim.result(E.HOST_UNREACHABLE)) == [A.FENCE_HOST]


def test_rechecking_host_is_dismissed_when_its_alert_resolves():
    sim = Sim.open(Remediation.HOST_DOWN)
    sim.result(E.HOST_REACHABLE)
    d = sim.send(E.ALERT_RESOLVED)
    assert d.closes and not d.actions and sim.state is S.DISMISSED


def test_alert_resolved_during_a_check_dismisses_on_the_answer_and_firing_again_keeps_watching():
    sim = Sim.open(Remediation.HOST_DOWN)
    d = sim.send(E.ALERT_RESOLVED)  # arrives while verify_host runs: remembered, nothing else
    assert d.ignored and d.data["alert_resolved"] is True
    sim.incident = replace(sim.incident, data={**sim.incident.data, **d.data})
    d = sim.result(E.HOST_REACHABLE)
    assert d.closes and sim.state is S.DISMISSED
    sim = Sim.open(Remediation.HOST_DOWN)
    sim.incident = replace(sim.incident, data={"alert_resolved": True})
    d = sim.send(E.ALERT_FIRING)  # the alert fires again (a new startsAt joins the open incident)
    assert d.data["alert_resolved"] is False
    sim.incident = replace(sim.incident, data={**sim.incident.data, **d.data})
    sim.result(E.HOST_REACHABLE)
    assert sim.state is S.HOST_RECHECKING


def test_failed_fence_waits_retries_then_only_operator_confirm_off_moves_on():
    sim = Sim.open(Remediation.HOST_DOWN)
    sim.result(E.HOST_UNREACHABLE)
    for attempt in (1, 2):
        d = sim.result(E.ACTION_FAILED, detail="BMC unreachable")
        assert sim.state is S.HOST_FENCE_WAITING and kinds(d) == [A.SCHEDULE_RETRY]
        assert "nothing is restarted elsewhere" in d.reason and "BMC unreachable" in d.reason
        assert kinds(sim.retry()) == [A.FENCE_HOST] and sim.incident.attempts == attempt + 1
    d = sim.result(E.ACTION_FAILED, detail="BMC unreachable")
    assert sim.state is S.HOST_FENCE_WAITING and not d.actions and "confirm" in d.reason
    d = sim.send(E.OPERATOR_CONFIRM_OFF)
    assert kinds(d) == [A.EVACUATE_HOST]


def test_fence_result_arriving_after_confirm_off_is_stale():
    sim = Sim.open(Remediation.HOST_DOWN)
    sim.result(E.HOST_UNREACHABLE)
    sim.send(E.OPERATOR_CONFIRM_OFF)
    assert sim.state is S.HOST_EVACUATING
    d = sim.send(E.ACTION_FAILED, action=A.FENCE_HOST.value, detail="late")
    assert d.ignored and sim.state is S.HOST_EVACUATING


def test_storm_holds_before_fencing_and_release_resumes():
    sim = Sim.open(Remediation.HOST_DOWN, Context(policy=POLICY, storm_hold=True))
    d = sim.result(E.HOST_UNREACHABLE)
    assert sim.state is S.HELD and not d.actions and "storm" in d.reason
    assert sim.send(E.STORM_RELEASED).next_state is S.HELD  # still too many out
    sim.ctx = Context(policy=POLICY)
    assert kinds(sim.send(E.STORM_RELEASED)) == [A.VERIFY_HOST]
    assert kinds(sim.result(E.HOST_UNREACHABLE)) == [A.FENCE_HOST]


def test_damaged_host_in_storm_is_cordoned_only():
    d = fsm.start(alert(Remediation.HOST_DAMAGED), Context(storm_hold=True))
    assert d.next_state is S.HELD and kinds(d) == [A.CORDON_HOST]


def test_overload_rebalances():
    sim = Sim.open(Remediation.HOST_OVERLOADED)
    assert kinds(sim.log[0]) == [A.REBALANCE_HOST]
    assert sim.result(E.ACTION_OK).closes


def test_duplicate_alert_changes_nothing():
    sim = Sim.open(Remediation.VM_DOWN)
    d = sim.send(E.ALERT_FIRING)
    assert d.ignored and not d.actions and sim.state is S.VM_VERIFYING


def test_backoff_doubles_and_caps():
    assert [POLICY.backoff(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 4.0]


# ---- properties on random event sequences ------------------------------------------------------------

OPERATOR = {E.OPERATOR_CLOSE, E.OPERATOR_RETRY, E.OPERATOR_CONFIRM_OFF}
# States that may wait with nothing in flight: an operator or a storm release moves them on.
MAY_WAIT = {S.HELD, S.FAILED, S.HOST_FENCE_WAITING, S.OUTRANKED}
MOVES_VMS_OFF_HOST = {A.FENCE_HOST, A.EVACUATE_HOST, A.MIGRATE_AWAY}


@st.composite
def steps(draw):
    """One event with the world (context) it arrives in."""
    # Results and timers drive the ladders; weigh them so that deep states are reached often.
    common = [E.HOST_UNREACHABLE, E.VM_NOT_RUNNING, E.ACTION_OK, E.ACTION_FAILED, E.RETRY]
    kind = draw(st.sampled_from(common) | st.sampled_from(list(E)))
    detail = {}
    if draw(st.integers(0, 9)) < 8:
        detail["action"] = None  # filled with the current step action by the runner
    else:
        detail["action"] = draw(st.sampled_from(list(A))).value
    detail["state_matches"] = draw(st.integers(0, 9)) < 8
    detail["host_unusable"] = draw(st.booleans())
    detail["host_unreachable"] = draw(st.booleans())
    detail["blocked_by"] = draw(st.sampled_from([[], [], ["h1"], ["h2"], ["h1", "h2"]]))
    world = dict(storm=draw(st.booleans()), host_incident_open=draw(st.booleans()), outranked=draw(st.booleans()),
                 has_definition=draw(st.booleans()),
                 condition=draw(st.sampled_from([HostCondition.UP, HostCondition.DOWN, HostCondition.CORDONED,
                                                 HostCondition.MAINTENANCE, HostCondition.FENCED])))
    return kind, detail, world


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(ALERT_REMEDIATIONS)), prefenced=st.booleans(), storm_at_start=st.booleans(),
       events=st.lists(steps(), max_size=40))
def test_random_sequences_keep_the_safety_rules(kind, prefenced, storm_at_start, events):
    policy = POLICY
    fenced = prefenced  # a host-down incident's host is fenced only by proof (or was before)
    first = (HostCondition.FENCED if fenced else HostCondition.DOWN) if kind in (
        Remediation.HOST_DOWN, Remediation.VM_DOWN) else HostCondition.UP
    start_ctx = Context(policy=policy, storm_hold=storm_at_start, host_condition=first)
    d0 = fsm.start(alert(kind), start_ctx)
    assert not d0.closes
    if storm_at_start:
        assert not {a.kind for a in d0.actions} & {A.FENCE_HOST, A.EVACUATE_HOST, A.MIGRATE_AWAY}
    sim = Sim.open(kind, start_ctx)
    closed_at_step = None
    for n, (ek, raw, world) in enumerate(events):
        if kind is Remediation.HOST_DOWN:
            condition = HostCondition.FENCED if fenced else world["condition"]
            if condition is HostCondition.FENCED and not fenced:
                condition = HostCondition.DOWN
        else:
            condition = world["condition"]
        sim.ctx = Context(policy=policy, storm_hold=world["storm"], host_condition=condition,
                          host_incident_open=world["host_incident_open"], has_definition=world["has_definition"],
                          outranked=world["outranked"])
        detail = dict(raw)
        step = fsm.STEP_ACTION.get(sim.state)
        if detail["action"] is None:
            detail["action"] = step.value if step else None
        detail["state"] = sim.state.value if detail.pop("state_matches") else "other"
        before = sim.incident
        d = sim.send(ek, **detail)
        issued = {a.kind for a in d.actions}

        # Valid states and a consistent close.
        assert isinstance(d.next_state, S)
        assert d.closes == (d.next_state in fsm.TERMINAL_STATES and not d.ignored)
        assert all(a.kind in set(A) for a in d.actions)
        for a in d.actions:
            if a.kind == A.SCHEDULE_RETRY:
                assert a.params["after_s"] > 0 and a.params["state"] == d.next_state
        # Closed stays closed.
        if closed_at_step is not None:
            assert d.ignored and sim.incident == before
        if d.closes:
            closed_at_step = n
        # Never evacuate a host before its fence succeeded or an operator confirmed it off.
        if A.EVACUATE_HOST in issued:
            assert kind is Remediation.HOST_DOWN
            assert fenced or ek is E.OPERATOR_CONFIRM_OFF or (
                ek is E.ACTION_OK and before.state == S.HOST_FENCING), (before.state, ek)
        if not d.ignored and (ek is E.OPERATOR_CONFIRM_OFF or (
                ek is E.ACTION_OK and before.state == S.HOST_FENCING)):
            fenced = True
        # Never start a VM elsewhere while its host may still run it.
        if issued & {A.START_VM_ELSEWHERE, A.REBUILD_VM}:
            assert sim.ctx.host_condition is not HostCondition.DOWN or sim.ctx.host_fenced
            if ek is E.HOST_UNREACHABLE or (ek is E.ACTION_FAILED and detail["host_unreachable"]):
                assert sim.ctx.host_fenced and not sim.ctx.host_incident_open
            # ... nor while another host that had it does not answer and is not fenced.
            if ek in (E.HOST_UNREACHABLE, E.ACTION_FAILED):
                assert not set(detail["blocked_by"]) - {"h1"}, (before.state, ek, detail)
        # Storm hold: nothing fenced or moved off a host.
        if sim.ctx.storm_hold and ek not in OPERATOR:
            assert not issued & MOVES_VMS_OFF_HOST, (before.state, ek, issued)
        # Nothing hangs silently: an open state either expects a result, has a timer, or waits by design.
        if not d.ignored and not d.closes and d.next_state not in MAY_WAIT:
            assert issued & ({fsm.STEP_ACTION.get(d.next_state)} | {A.SCHEDULE_RETRY}), (before.state, ek, d)


def test_every_open_state_has_a_way_out():
    """From every non-terminal state some event, with no operator, leads to another state."""
    base = Incident(id=1, subject="s", kind=Remediation.VM_DOWN, state=S.VM_VERIFYING, host="h1",
                    opened_at=T0, updated_at=T0, vm_uuid=UUID)
    contexts = [Context(policy=POLICY), Context(policy=POLICY, host_condition=HostCondition.FENCED),
                Context(policy=POLICY, storm_hold=True)]
    for state in set(S) - fsm.TERMINAL_STATES:
        exits = set()
        for kind in Remediation:
            for attempts in (1, POLICY.fence_attempts + 1):
                inc = replace(base, state=state, kind=kind, attempts=attempts)
                step = fsm.STEP_ACTION.get(state)
                for ek in set(E) - OPERATOR:
                    for ctx in contexts:
                        d = fsm.decide(inc, Event(ek, T0, {"action": step and step.value, "state": state.value}),
                                       ctx)
                        if d.next_state is not state:
                            exits.add(ek)
        assert exits, f"{state} has no way out but an operator"
        for ek in (E.OPERATOR_CLOSE,):
            assert fsm.decide(replace(base, state=state), Event(ek, T0), Context()).closes


@pytest.mark.parametrize("state", sorted(fsm.TERMINAL_STATES))
def test_closed_incidents_ignore_everything(state):
    inc = Incident(id=1, subject="s", kind=Remediation.HOST_DOWN, state=state, host="h1", opened_at=T0,
                   updated_at=T0, closed_at=T0 + timedelta(seconds=1))
    for ek in E:
        d = fsm.decide(inc, Event(ek, T0, {"action": "fence_host"}), Context())
        assert d.ignored and d.next_state is state and not d.actions


def test_table_mentions_only_known_states_events_and_actions():
    for (state, ek), transitions in fsm.TRANSITIONS.items():
        assert state in set(S) and ek in set(E)
        for t in transitions:
            assert t.target is None or t.target in set(S)
            assert all(a in set(A) for a in t.actions)
