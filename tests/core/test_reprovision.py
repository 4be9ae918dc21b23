"""The reprovision table (remediator/reprovision.py): its phases in order, its timeouts, and on random
event sequences the rules it exists for - never a power cycle without the boot device set, never two
cycles in one run, never an activation before the host was found ready, and always a way out."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from remediator import fsm, reprovision_actions
from remediator.edges.power import BootOverride, BootControlError
from remediator.fsm import ActionKind as A
from remediator.fsm import Context, EventKind as E, Policy, State as S
from remediator.model import Event, Incident, Remediation, host_subject

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
POLICY = Policy(backoff_s=1.0, backoff_max_s=4.0, reprovision_ready_s=600.0, reprovision_poll_s=2.0)
KIND = Remediation.HOST_REPROVISION


@dataclass
class Sim:
    incident: Incident
    now: datetime = T0
    ctx: Context = field(default_factory=lambda: Context(policy=POLICY))
    actions: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, pxe: bool = True, hook: bool = False) -> "Sim":
        d = fsm.open_incident(KIND, host_subject("h1", KIND), "h1", Context(policy=POLICY), at=T0,
                              data={"pxe": pxe, "hook": hook, "why": "test"})
        inc = Incident(id=7, subject=host_subject("h1", KIND), kind=KIND, state=d.next_state, host="h1",
                       opened_at=T0, updated_at=T0, attempts=d.attempts, reason=d.reason, data=dict(d.data))
        sim = cls(inc)
        sim.actions += [a.kind for a in d.actions]
        return sim

    def send(self, kind: E, after_s: float = 1.0, **detail) -> fsm.Decision:
        self.now += timedelta(seconds=after_s)
        d = fsm.decide(self.incident, Event(kind, self.now, detail), self.ctx)
        if not d.ignored:
            self.actions += [a.kind for a in d.actions]
            self.incident = replace(self.incident, state=d.next_state, attempts=d.attempts, reason=d.reason,
                                    closed_at=self.now if d.closes else None,
                                    data={**self.incident.data, **d.data})
        return d

    def result(self, ok: bool, after_s: float = 1.0, **detail) -> fsm.Decision:
        step = fsm.STEP_ACTION[S(self.incident.state)]
        return self.send(E.ACTION_OK if ok else E.ACTION_FAILED, after_s, action=step.value, detail="d", **detail)

    @property
    def state(self) -> S:
        return S(self.incident.state)


def test_pxe_flow_goes_through_every_phase_in_order_and_records_when_each_began():
    sim = Sim.open()
    for _ in range(4):
        sim.result(True)
    assert sim.state is S.RECOVERED and sim.incident.closed_at is not None
    assert sim.actions == [A.SET_BOOT_PXE, A.POWER_CYCLE, A.CHECK_READY, A.ACTIVATE_REINSTALLED]
    assert list(sim.incident.data["phases"]) == ["reprovision_boot_device", "reprovision_power_cycle",
                                                 "reprovision_waiting", "reprovision_activating", "recovered"]


def test_hook_follows_the_cycle_and_a_hook_only_flow_starts_with_it():
    sim = Sim.open(hook=True)
    for _ in range(5):
        sim.result(True)
    assert sim.actions == [A.SET_BOOT_PXE, A.POWER_CYCLE, A.CALL_HOOK, A.CHECK_READY, A.ACTIVATE_REINSTALLED]
    hook_only = Sim.open(pxe=False, hook=True)
    assert hook_only.state is S.REPROVISION_HOOK and hook_only.actions == [A.CALL_HOOK]


def test_not_ready_polls_until_the_waiting_phase_times_out_then_fails_and_says_the_host_stays_out():
    sim = Sim.open()
    sim.result(True), sim.result(True)
    assert sim.state is S.REPROVISION_WAITING
    d = sim.result(False, not_ready=True)
    assert sim.state is S.REPROVISION_WAITING and d.actions[0].params["after_s"] == POLICY.reprovision_poll_s
    sim.send(E.RETRY, 2.0, state=S.REPROVISION_WAITING.value)
    d = sim.result(False, after_s=POLICY.reprovision_ready_s, not_ready=True)
    assert sim.state is S.FAILED and "stays out of service" in d.reason
    assert A.RAISE_FAILED in sim.actions and A.ACTIVATE_REINSTALLED not in sim.actions


def test_a_failed_power_cycle_is_not_retried_and_a_boot_device_failure_is_retried_once():
    sim = Sim.open()
    sim.result(False)
    assert sim.state is S.REPROVISION_BOOT_DEVICE and sim.actions[-1] == A.SCHEDULE_RETRY
    sim.send(E.RETRY, state=S.REPROVISION_BOOT_DEVICE.value)
    d = sim.result(False)
    assert sim.state is S.FAILED and "did not" not in d.reason and "stays out" in d.reason
    cycled = Sim.open()
    cycled.result(True)
    cycled.result(False)
    assert cycled.state is S.FAILED and cycled.actions.count(A.POWER_CYCLE) == 1


def test_an_operator_retry_of_a_failed_reprovision_starts_again_at_its_first_phase():
    sim = Sim.open(pxe=False, hook=True)
    sim.result(False), sim.send(E.RETRY, state=S.REPROVISION_HOOK.value), sim.result(False)
    assert sim.state is S.FAILED
    sim.send(E.OPERATOR_RETRY, detail="fixed the installer")
    assert sim.state is S.REPROVISION_HOOK and sim.actions[-1] == A.CALL_HOOK


EVENTS = st.lists(st.tuples(st.sampled_from(["ok", "failed", "not_ready", "retry", "stale", "late"]),
                            st.floats(min_value=0.1, max_value=400.0)), max_size=30)


@settings(max_examples=400, deadline=None)
@given(pxe=st.booleans(), hook=st.booleans(), events=EVENTS)
def test_on_any_event_sequence_no_cycle_without_boot_device_no_second_cycle_no_early_activation(pxe, hook, events):
    if not pxe and not hook:
        hook = True  # the config refuses a host with neither
    sim = Sim.open(pxe=pxe, hook=hook)
    for what, after in events:
        if sim.incident.closed_at is not None:
            break
        step = fsm.STEP_ACTION.get(sim.state)
        if what == "retry":
            sim.send(E.RETRY, after, state=sim.state.value)
        elif what == "stale":
            sim.send(E.ACTION_OK, after, action=A.POWER_CYCLE.value if step is not A.POWER_CYCLE else A.SET_BOOT_PXE.value)
        elif what == "late":
            sim.send(E.RETRY, after, state=S.REPROVISION_BOOT_DEVICE.value if sim.state is not S.REPROVISION_BOOT_DEVICE
                     else S.REPROVISION_WAITING.value)
        elif step is not None:
            sim.result(what == "ok", after, **({"not_ready": True} if what == "not_ready" else {}))
    acts = sim.actions
    assert acts.count(A.POWER_CYCLE) <= 1
    if A.POWER_CYCLE in acts:
        assert pxe and acts.index(A.SET_BOOT_PXE) < acts.index(A.POWER_CYCLE)
    if not pxe:
        assert A.SET_BOOT_PXE not in acts and A.POWER_CYCLE not in acts
    if A.ACTIVATE_REINSTALLED in acts:
        assert A.CHECK_READY in acts and acts.index(A.CHECK_READY) < acts.index(A.ACTIVATE_REINSTALLED)
    if sim.state is S.RECOVERED:
        assert A.ACTIVATE_REINSTALLED in acts  # recovered only through the activation
    # Every state it can be left in has a way out: a result, a retry timer, or (failed) an operator.
    assert sim.state in (S.RECOVERED, S.FAILED) or fsm.STEP_ACTION.get(sim.state) is not None


# ---- the power cycle action checks the world first: never twice -------------------------------------

class FakeBoot:
    kind = "fake"

    def __init__(self, override: BootOverride, fail: bool = False):
        self.override, self.fail, self.cycles = override, fail, 0

    def next_boot(self) -> BootOverride:
        if self.fail:
            raise BootControlError("no answer within 5s")
        return self.override

    def cycle(self) -> str:
        self.cycles += 1
        return "cycle"


def _engine(boot: FakeBoot):
    counted = []
    return SimpleNamespace(power=SimpleNamespace(boot_control=lambda host: boot),
                           metrics=SimpleNamespace(power_cycle=counted.append)), counted


def test_power_cycle_resumed_after_the_host_booted_from_the_network_does_not_cycle_it_again():
    consumed = FakeBoot(BootOverride("none", False))  # the once-override is gone: it booted already
    engine, counted = _engine(consumed)
    outcome = reprovision_actions.power_cycle(engine, {"host": "h1"})
    assert outcome.ok and "not power-cycled again" in outcome.detail and consumed.cycles == 0
    assert counted == ["skipped"]
    pending = FakeBoot(BootOverride("pxe", True))
    engine, counted = _engine(pending)
    assert reprovision_actions.power_cycle(engine, {"host": "h1"}).ok and pending.cycles == 1
    assert counted == ["cycled"]


def test_power_cycle_with_a_device_that_does_not_answer_fails_with_the_reason():
    engine, _ = _engine(FakeBoot(BootOverride("pxe", True), fail=True))
    outcome = reprovision_actions.power_cycle(engine, {"host": "h1"})
    assert not outcome.ok and "no answer" in outcome.detail


def _alert(kind: Remediation, starts_at: datetime):
    from remediator.model import Alert, AlertStatus
    return Alert(fingerprint="f", status=AlertStatus.FIRING, remediation=kind, alertname="A", host="h1",
                 starts_at=starts_at)


def test_host_alerts_during_a_reprovision_are_expected_and_open_nothing():
    ctx = Context(policy=POLICY, reprovisioning=True)
    for kind in (Remediation.HOST_DOWN, Remediation.HOST_DAMAGED, Remediation.HOST_OVERLOADED):
        d = fsm.start(_alert(kind, T0), ctx)
        assert d.closes and "being reinstalled" in d.reason


def test_a_damage_alert_that_began_before_the_activation_is_stale_and_a_later_one_is_not():
    ctx = Context(policy=POLICY, host_up_since=T0)
    stale = fsm.start(_alert(Remediation.HOST_DAMAGED, T0 - timedelta(seconds=30)), ctx)
    assert stale.closes and "stale" in stale.reason
    fresh = fsm.start(_alert(Remediation.HOST_DAMAGED, T0 + timedelta(seconds=30)), ctx)
    assert not fresh.closes and fresh.next_state is S.HOST_DRAINING
