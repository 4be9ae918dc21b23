"""The reprovision flow: a host out of service (damaged and drained, or fenced) reinstalled and back. Pure.

Its phases, as the table below has them:

    boot device ──ok──> power cycle ──ok──> [hook] ──ok──> waiting ──ready──> activating ──ok──> recovered
        │ failed            │ failed          │ failed         │ not ready: poll again        │ failed
        └─ retry, then ─────┴─────────────────┴── failed <─────┘ past policy.reprovision.ready_s ┘

- boot device: the next boot from the network, once (IPMI `chassis bootdev pxe`, Redfish
  `BootSourceOverrideTarget: Pxe` + `BootSourceOverrideEnabled: Once`).
- power cycle: of an on host; an off host (fenced) is powered on. The action first reads the boot
  override back: when the once-override is gone the host already booted from the network, and it
  is not cycled again (a remediator killed after the cycle and before its result was recorded
  resumes here). A failed cycle is never retried: the host stays out with the reason.
- hook (when configured): the provisioning hook asks an installer (Foreman, MAAS, Cobbler, ...).
  With `pxe: false` the flow starts here.
- waiting: until the host's libvirt answers, the exporter reports every check ok in samples taken
  after the cycle, and the host defines no domain the remediator has since started elsewhere.
- activating: `hostlife.activate`, exactly what an operator's activate does.

A phase past its timeout fails the incident (FAILED, the host stays out of service) with the reason;
the action phases' timeouts are action timeouts (policy.reprovision.*_s), the waiting phase's is
measured from its start, recorded in the incident's data with every phase's start (`phases`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Mapping

from remediator.fsm_vocabulary import (_KEEP, ActionKind, Context, Decision, EventKind, State, Transition)
from remediator.model import Alert, Event, Incident, Remediation

A, S, E, T = ActionKind, State, EventKind, Transition
PHASES = (S.REPROVISION_BOOT_DEVICE, S.REPROVISION_POWER_CYCLE, S.REPROVISION_HOOK, S.REPROVISION_WAITING,
          S.REPROVISION_ACTIVATING)


# ---- guards ------------------------------------------------------------------------------------------

def always(i: Incident, e: Event, c: Context) -> bool:
    return True


def has_hook(i: Incident, e: Event, c: Context) -> bool:
    return bool(i.data.get("hook"))


def attempts_left(i: Incident, e: Event, c: Context) -> bool:
    return i.attempts < c.policy.attempts_for(State(i.state))


def ready_timed_out(i: Incident, e: Event, c: Context) -> bool:
    started = phase_started(i.data, S.REPROVISION_WAITING)
    return started is not None and (e.at - started).total_seconds() > c.policy.reprovision_ready_s


def phase_started(data: Mapping[str, Any], phase: State) -> datetime | None:
    at = (data.get("phases") or {}).get(phase.value)
    return datetime.fromisoformat(at) if isinstance(at, str) else at


_STAYS_OUT = "; {host} stays out of service"


def _retry_or_fail(what: str) -> tuple[Transition, ...]:
    return (T(attempts_left, None, (A.SCHEDULE_RETRY,), what + " failed (try {attempts} of {max}): {detail}; retrying",
              _KEEP),
            T(always, S.FAILED, (A.RAISE_FAILED,), what + " failed: {detail}" + _STAYS_OUT))


TRANSITIONS: dict[tuple[State, EventKind], tuple[Transition, ...]] = {
    (S.REPROVISION_BOOT_DEVICE, E.ACTION_OK): (
        T(always, S.REPROVISION_POWER_CYCLE, (A.POWER_CYCLE,), "{detail}: power-cycling {host}"),),
    (S.REPROVISION_BOOT_DEVICE, E.ACTION_FAILED): _retry_or_fail("setting the next boot to the network"),
    (S.REPROVISION_POWER_CYCLE, E.ACTION_OK): (
        T(has_hook, S.REPROVISION_HOOK, (A.CALL_HOOK,), "{detail}; calling the provisioning hook"),
        T(always, S.REPROVISION_WAITING, (A.CHECK_READY,), "{detail}; waiting for the install"),),
    (S.REPROVISION_POWER_CYCLE, E.ACTION_FAILED): (
        T(always, S.FAILED, (A.RAISE_FAILED,), "power cycle failed: {detail}" + _STAYS_OUT),),
    # No timer re-issues a power cycle (every other step's timer re-issues its action, fsm.py).
    (S.REPROVISION_POWER_CYCLE, E.RETRY): (),
    (S.REPROVISION_HOOK, E.ACTION_OK): (
        T(always, S.REPROVISION_WAITING, (A.CHECK_READY,), "provisioning hook: {detail}; waiting for the install"),),
    (S.REPROVISION_HOOK, E.ACTION_FAILED): _retry_or_fail("the provisioning hook"),
    (S.REPROVISION_WAITING, E.ACTION_OK): (
        T(always, S.REPROVISION_ACTIVATING, (A.ACTIVATE_REINSTALLED,),
          "{host} is ready ({detail}): activating it as an operator would"),),
    (S.REPROVISION_WAITING, E.ACTION_FAILED): (
        T(ready_timed_out, S.FAILED, (A.RAISE_FAILED,), "not ready within the waiting phase's timeout: {detail}"
          + _STAYS_OUT),
        T(always, None, (A.SCHEDULE_RETRY,), "not ready yet: {detail}", _KEEP),),
    (S.REPROVISION_ACTIVATING, E.ACTION_OK): (
        T(always, S.RECOVERED, (), "reinstalled and back in service: {detail}"),),
    (S.REPROVISION_ACTIVATING, E.ACTION_FAILED): _retry_or_fail("activation"),
}


def expected_alert(alert: Alert, ctx: Context) -> str | None:
    """Why a host's alert opens nothing, when it is one a reinstall brings (None otherwise): any host
    alert while the host is being reinstalled, and a damage alert that began before the host was last
    activated (its checks passed then; Alertmanager repeats a firing alert until it resolves)."""
    if ctx.reprovisioning and alert.remediation is not Remediation.VM_DOWN:
        return (f"host {alert.host} is being reinstalled (its reprovision incident): its host alerts are expected "
                "and start no action")
    if alert.remediation is Remediation.HOST_DAMAGED and ctx.host_up_since and alert.starts_at < ctx.host_up_since:
        return f"the alert began before {alert.host} was activated (its checks passed then): stale"
    return None


def first_step(data: Mapping[str, Any]) -> tuple[State, tuple[ActionKind, ...], str]:
    """Where a reprovision starts: the boot device when it goes through PXE, else the hook."""
    why = data.get("why") or "reprovision"
    if data.get("pxe"):
        return S.REPROVISION_BOOT_DEVICE, (A.SET_BOOT_PXE,), f"{why}: setting the next boot to the network (once)"
    return S.REPROVISION_HOOK, (A.CALL_HOOK,), f"{why}: calling the provisioning hook"


def with_phase_start(incident: Incident, decision: Decision, at: datetime) -> Decision:
    """The decision, with the moment its phase began recorded in `phases` (a phase's timeout and the
    figures per phase are measured from it); unchanged when the state does not change."""
    if decision.ignored or decision.next_state == incident.state:
        return decision
    phases = {**(incident.data.get("phases") or {}), decision.next_state.value: at.isoformat()}
    return replace(decision, data={**decision.data, "phases": phases})
