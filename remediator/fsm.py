"""The incident state machine: (state, event) -> guard -> (next state, actions), as data.

This module is the specification of what the remediator does; it performs nothing. The engine
feeds it events (an alert, a verification or action result, a timer, an operator's call) and
executes the actions of the Decision it returns, recording intent before and result after.

Reading guide:
- `start(alert, ctx)` opens an incident for the first firing alert of a subject.
- `TRANSITIONS[(state, event)]` lists candidate transitions; the first whose guard passes wins.
- Each working state has one *step action* (`STEP_ACTION`): only that action's result moves the
  state on. A result of any other action (for instance a fence that finished after an operator
  already confirmed the host off) is stale and ignored, as is a retry timer set in another state.
- A (state, event) pair that is not in the table changes nothing: the Decision says so.
- Closed incidents stay closed: every event on them is ignored.

The safety rules the tests check on random event sequences:
- A host-down incident starts or defines VMs elsewhere (`evacuate_host`) only after its fence
  succeeded (the agent's status said off) or an operator confirmed the host off.
- A VM whose host cannot be reached is never started elsewhere while that host is not fenced,
  nor while the host's own incident is still open (that incident evacuates it).
- Storm hold: no fencing and no evacuation while more than the configured share of hosts is out.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Mapping

from remediator import reprovision
from remediator.fsm_vocabulary import (RANK, STEP_ACTION, TERMINAL_STATES, WAITING_FOR_OFF, ActionKind,  # noqa: F401
                                       Context, Decision, EventKind, Guard, Policy, State, Transition,
                                       _FIRST, _KEEP, _NEXT, _RESULT_EVENTS, failed_hosts, outranks)
from remediator.fsm_guards import (  # noqa: F401 (the table's vocabulary)
    always, dry_run, storm_hold, host_in_maintenance, host_fenced, host_fenced_and_no_host_incident,
    attempts_left, blocked_by_other_hosts, host_may_still_run_it, only_fenced_host_unreachable,
    outranked, attempts_left_and_host_usable, has_definition, disk_locked, host_local_disk,
    left_waiting, is_vm, is_host_down, is_host_damaged, is_overload, is_maintenance,
    lower_kind_and_host_fenced, lower_kind_outranked, alert_resolved, ALERT_RESOLVED_KEY)
from remediator.model import Action, Alert, AlertStatus, Event, HostCondition, Incident, Remediation


A, S, E = ActionKind, State, EventKind
T = Transition
REPROVISION = Remediation.HOST_REPROVISION
RETRY = A.SCHEDULE_RETRY


def _retry_or(then: tuple[Transition, ...], what: str) -> tuple[Transition, ...]:
    """Retry the current step with backoff while attempts are left, otherwise the escalation `then`."""
    return (T(attempts_left, None, (RETRY,), what + " failed (try {attempts} of {max}): {detail}; retrying",
              _KEEP),) + then


_GIVE_UP = T(always, S.FAILED, (A.RAISE_FAILED,), "gave up after {attempts} tries: {detail}")
_EVACUATE = T(always, S.HOST_EVACUATING, (A.EVACUATE_HOST,),
              "host is off: starting its protected VMs on other hosts")
_HOLD = T(storm_hold, S.HELD, (), "storm hold: too many hosts out at once; nothing automatic until it clears")
_DISK_LOCKED = T(disk_locked, S.DISMISSED, (),
                 "{detail}: its disk is in use by another QEMU, so it runs somewhere; not started twice")
_AWAIT_HOST = T(host_may_still_run_it, S.VM_AWAITING_HOST, (RETRY,),
                "{detail}: a host that may still run it is unreachable and not fenced; its incident acts first")

TRANSITIONS: dict[tuple[State, EventKind], tuple[Transition, ...]] = {
    # ---- VM down: verify -> restart in place -> start elsewhere -> rebuild -> failed ---------------
    (S.VM_VERIFYING, E.VM_RUNNING): (
        T(always, S.DISMISSED, (), "the VM runs on {where}: nothing to do"),),
    (S.VM_VERIFYING, E.VM_NOT_RUNNING): (
        T(host_in_maintenance, S.DISMISSED, (), "host {host} is in maintenance: no action"),
        T(always, S.VM_RESTARTING, (A.START_VM,), "confirmed not running: restarting it on {host}"),),
    (S.VM_VERIFYING, E.HOST_UNREACHABLE): (
        T(only_fenced_host_unreachable, S.VM_RELOCATING, (A.START_VM_ELSEWHERE,),
          "its host {host} is fenced: starting it on another host"),
        T(always, S.VM_AWAITING_HOST, (RETRY,),
          "{detail}: the unreachable host's incident acts first"),),
    (S.VM_VERIFYING, E.ACTION_FAILED): _retry_or((_GIVE_UP,), "verification"),
    (S.VM_RESTARTING, E.ACTION_OK): (
        _DISK_LOCKED,
        T(dry_run, S.RECOVERED, (), "dry run: nothing was started; it would have: {detail}"),
        T(always, S.RECOVERED, (), "running again on {host}"),),
    (S.VM_RESTARTING, E.ACTION_FAILED): (
        _AWAIT_HOST,
        T(attempts_left_and_host_usable, None, (RETRY,),
          "restart in place failed (try {attempts} of {max}): {detail}; retrying", _KEEP),
        T(always, S.VM_RELOCATING, (A.START_VM_ELSEWHERE,),
          "restart in place failed: {detail}; starting it on another host"),),
    (S.VM_RELOCATING, E.ACTION_OK): (
        _DISK_LOCKED,
        T(dry_run, S.RECOVERED, (), "dry run: nothing was started; it would have: {detail}"),
        T(always, S.RECOVERED, (), "running on {where}"),),
    (S.VM_RELOCATING, E.ACTION_FAILED): (_AWAIT_HOST, T(
        host_local_disk, S.VM_REBUILDING, (A.REBUILD_VM,),
        "{detail}: rebuilding it on another host from its base image")) + _retry_or((
        T(has_definition, S.VM_REBUILDING, (A.REBUILD_VM,),
          "start elsewhere failed: {detail}; rebuilding it from its stored definition"),
        _GIVE_UP,), "start elsewhere"),
    (S.VM_REBUILDING, E.ACTION_OK): (
        _DISK_LOCKED,
        T(dry_run, S.RECOVERED, (), "dry run: nothing was started; it would have: {detail}"),
        T(always, S.RECOVERED, (), "rebuilt and running on {where}: {detail}"),),
    (S.VM_REBUILDING, E.ACTION_FAILED): (_AWAIT_HOST,) + _retry_or((_GIVE_UP,), "rebuild"),
    (S.VM_AWAITING_HOST, E.RETRY): (
        T(always, S.VM_VERIFYING, (A.VERIFY_VM,), "looking at it again"),),
    (S.VM_AWAITING_HOST, E.HOST_CHANGED): (
        T(always, S.VM_VERIFYING, (A.VERIFY_VM,), "its host changed: looking at it again"),),

    # ---- VM paused on a storage I/O error: its policy (wait, resume, restart elsewhere) -------------
    # No retry limit: storage comes back when it comes back. The step's result ends it (the handler sees
    # the VM no longer paused); a waiting one ends when its alert resolves; an operator can close either.
    (S.VM_IO_HANDLING, E.ACTION_OK): (
        T(dry_run, S.RECOVERED, (), "dry run: nothing was done; it would have: {detail}"),
        T(left_waiting, S.VM_IO_WAITING, (), "{detail}"),
        T(always, S.RECOVERED, (), "{detail}"),),
    (S.VM_IO_HANDLING, E.ACTION_FAILED): (
        T(always, None, (RETRY,), "{detail} (try {attempts}); trying again", _KEEP),),
    (S.VM_IO_WAITING, E.ALERT_RESOLVED): (
        T(always, S.RECOVERED, (), "no longer paused on an I/O error (an operator resumed or stopped it)"),),

    # ---- host down: verify -> fence (status must say off) or operator confirm-off -> evacuate -------
    # A host that answers is not down, but its alert may have come before a cut link failed the
    # keepalive, or the link may be cut later while the alert still fires: so the incident stays
    # open and checks again on a timer (policy.recheck_s) until the alert resolves. A dismissal that forgot a still-firing alert would never check it again.
    (S.HOST_VERIFYING, E.HOST_REACHABLE): (
        T(alert_resolved, S.DISMISSED, (), "libvirt on {host} answers the remediator and the alert resolved: not down"),
        T(always, S.HOST_RECHECKING, (RETRY,),
          "libvirt on {host} answers the remediator: not down; checking again while the alert fires"),),
    (S.HOST_RECHECKING, E.RETRY): (
        T(always, S.HOST_VERIFYING, (A.VERIFY_HOST,), "the alert still fires: checking {host} again"),),
    (S.HOST_RECHECKING, E.ALERT_RESOLVED): (
        T(always, S.DISMISSED, (), "alert resolved; libvirt on {host} answered the remediator: not down"),),
    (S.HOST_VERIFYING, E.HOST_UNREACHABLE): (
        _HOLD,
        T(host_in_maintenance, S.DISMISSED, (), "host {host} is in maintenance: no action"),
        T(host_fenced, S.HOST_EVACUATING, (A.EVACUATE_HOST,),
          "host is already fenced: starting its protected VMs on other hosts"),
        T(always, S.HOST_FENCING, (A.FENCE_HOST,), "libvirt on {host} unreachable: fencing it"),),
    (S.HOST_VERIFYING, E.ACTION_FAILED): _retry_or((_GIVE_UP,), "verification"),
    (S.HOST_VERIFYING, E.OPERATOR_CONFIRM_OFF): (_HOLD, _EVACUATE),
    (S.HOST_FENCING, E.ACTION_OK): (_HOLD, _EVACUATE),
    (S.HOST_FENCING, E.ACTION_FAILED): (
        T(attempts_left, S.HOST_FENCE_WAITING, (RETRY,),
          "fencing failed (try {attempts} of {max}): {detail}; nothing is restarted elsewhere; "
          "retrying, or an operator who made sure the host is off can confirm-off", _KEEP),
        T(always, S.HOST_FENCE_WAITING, (),
          "fencing failed {attempts} times: {detail}; nothing is restarted elsewhere until an "
          "operator who made sure the host is off confirms it (confirm-off)", _KEEP),),
    (S.HOST_FENCING, E.OPERATOR_CONFIRM_OFF): (_HOLD, _EVACUATE),
    (S.HOST_FENCE_WAITING, E.RETRY): (
        T(storm_hold, S.HELD, (), "storm hold: too many hosts out at once; fencing paused"),
        T(always, S.HOST_FENCING, (A.FENCE_HOST,), "fencing {host} again", _NEXT),),
    (S.HOST_FENCE_WAITING, E.OPERATOR_CONFIRM_OFF): (_HOLD, _EVACUATE),
    (S.HOST_FENCE_WAITING, E.ALERT_RESOLVED): (
        T(always, S.HOST_VERIFYING, (A.VERIFY_HOST,), "alert resolved: checking the host again"),),
    (S.HOST_EVACUATING, E.ACTION_OK): (
        T(dry_run, S.RECOVERED, (),
          "dry run: nothing was fenced or started; it would have fenced {host} and: {detail}"),
        T(always, S.RECOVERED, (),
          "its protected VMs run elsewhere ({detail}); {host} stays fenced until an operator activates it"),),
    (S.HOST_EVACUATING, E.ACTION_FAILED): _retry_or((_GIVE_UP,), "evacuation"),

    # ---- host damaged or in maintenance: cordon, live-migrate its VMs away -------------------------
    (S.HOST_DRAINING, E.ACTION_OK): (
        T(is_maintenance, S.RECOVERED, (), "drained ({detail}); {host} stays in maintenance until maintenance off"),
        T(always, S.RECOVERED, (), "drained ({detail}); {host} stays cordoned until an operator activates it"),),
    (S.HOST_DRAINING, E.ACTION_FAILED): _retry_or((_GIVE_UP,), "migrating away"),

    # ---- host overloaded: live-migrate lowest-priority VMs until under the threshold ---------------
    (S.HOST_REBALANCING, E.ACTION_OK): (T(always, S.RECOVERED, (), "under the threshold: {detail}"),),
    (S.HOST_REBALANCING, E.ACTION_FAILED): _retry_or((_GIVE_UP,), "rebalancing"),

    # ---- storm hold ---------------------------------------------------------------------------------
    (S.HELD, E.STORM_RELEASED): (
        T(storm_hold, None, (), "storm hold still on: the share of hosts out is still too high", _KEEP),
        T(lower_kind_outranked, S.OUTRANKED, (), "storm hold released; a higher-ranked incident of {host} acts first"),
        T(is_host_damaged, S.HOST_DRAINING, (A.CORDON_HOST, A.MIGRATE_AWAY),
          "storm hold released: migrating VMs away"),
        T(is_overload, S.HOST_REBALANCING, (A.REBALANCE_HOST,), "storm hold released: rebalancing"),
        T(always, S.HOST_VERIFYING, (A.VERIFY_HOST,), "storm hold released: checking the host again"),),
    (S.HELD, E.ALERT_RESOLVED): (
        T(is_host_down, S.HOST_VERIFYING, (A.VERIFY_HOST,), "alert resolved: checking the host again"),),

    # ---- failed: open until the alert resolves or an operator acts ----------------------------------
    (S.FAILED, E.ALERT_RESOLVED): (
        T(is_overload, S.RECOVERED, (), "alert resolved: no longer overloaded"),
        T(is_host_damaged, S.FAILED, (), "alert resolved; {host} stays cordoned until an operator activates it",
          _KEEP),
        T(is_vm, S.VM_VERIFYING, (A.VERIFY_VM,), "alert resolved: checking the VM again"),
        T(is_host_down, S.HOST_VERIFYING, (A.VERIFY_HOST,), "alert resolved: checking the host again"),),
}

_FENCED_ENDS_IT = T(host_fenced, S.DISMISSED, (), "{host} is fenced: its host-down incident moved its VMs")
for _state in (S.HOST_DRAINING, S.HOST_REBALANCING, S.FAILED):
    TRANSITIONS[(_state, E.HOST_CHANGED)] = (
        T(lower_kind_and_host_fenced, S.DISMISSED, (), _FENCED_ENDS_IT.reason),
        T(lower_kind_outranked, S.OUTRANKED, (), "a higher-ranked incident of {host} acts first"),)
TRANSITIONS[(S.HELD, E.HOST_CHANGED)] = (T(lower_kind_and_host_fenced, S.DISMISSED, (), _FENCED_ENDS_IT.reason),)
TRANSITIONS[(S.OUTRANKED, E.HOST_CHANGED)] = (
    _FENCED_ENDS_IT,
    T(outranked, None, (), "still outranked", _KEEP),
    _HOLD,
    T(is_host_damaged, S.HOST_DRAINING, (A.CORDON_HOST, A.MIGRATE_AWAY),
      "the higher-ranked incident of {host} ended and the host answers: draining it again"),
    T(is_overload, S.HOST_REBALANCING, (A.REBALANCE_HOST,), "the higher-ranked incident ended: rebalancing"),
    T(is_maintenance, S.HOST_DRAINING, (A.MIGRATE_AWAY,), "the higher-ranked incident ended: draining"),)
TRANSITIONS[(S.OUTRANKED, E.ALERT_RESOLVED)] = (
    T(is_overload, S.RECOVERED, (), "alert resolved: no longer overloaded"),)

TRANSITIONS.update(reprovision.TRANSITIONS)  # the reprovision flow's phases: its own table

# For every state that retries its step with a timer, the timer re-issues the step action; the
# steps that fence or move VMs off a host first look at the storm hold again.
_HOLD_BEFORE_RETRY = frozenset({S.HOST_FENCING, S.HOST_EVACUATING, S.HOST_DRAINING})
_MOVES_A_VM = frozenset({S.VM_RELOCATING, S.VM_REBUILDING})
for _state, _action in STEP_ACTION.items():
    _again = T(always, None, (_action,), "trying again", _NEXT)
    _first = _HOLD if _state in _HOLD_BEFORE_RETRY else _AWAIT_HOST if _state in _MOVES_A_VM else None
    TRANSITIONS.setdefault((_state, E.RETRY), (_first, _again) if _first else (_again,))

_OPERATOR_CLOSE = (T(always, S.CLOSED_BY_OPERATOR, (), "closed by an operator: {detail}"),)
_FIRST_STEP: Mapping[Remediation, tuple[State, tuple[ActionKind, ...], str]] = {
    Remediation.VM_DOWN: (S.VM_VERIFYING, (A.VERIFY_VM,), "VM down alert: checking it with libvirt"),
    Remediation.VM_IO_ERROR: (S.VM_IO_HANDLING, (A.HANDLE_IO_ERROR,),
                              "paused on a storage I/O error: acting by its policy"),
    Remediation.HOST_DOWN: (S.HOST_VERIFYING, (A.VERIFY_HOST,), "host down alert: checking libvirt on it"),
    Remediation.HOST_DAMAGED: (S.HOST_DRAINING, (A.CORDON_HOST, A.MIGRATE_AWAY),
                               "host damaged: cordoning it and migrating its VMs away"),
    Remediation.HOST_OVERLOADED: (S.HOST_REBALANCING, (A.REBALANCE_HOST,),
                                  "host overloaded: migrating lowest-priority VMs to lighter hosts"),
    Remediation.HOST_MAINTENANCE: (S.HOST_DRAINING, (A.MIGRATE_AWAY,),
                                   "maintenance: migrating its protected VMs to hosts chosen by placement"),
}


def start(alert: Alert, ctx: Context) -> Decision:
    """The first alert of a subject with no open incident. `closes` means: open no incident."""
    if alert.status is not AlertStatus.FIRING:
        return Decision(S.DISMISSED, (), "resolved alert with no open incident", closes=True)
    if ctx.host_in_maintenance:
        return Decision(S.DISMISSED, (), f"host {alert.host} is in maintenance: its alerts start no action",
                        closes=True)
    if (why := reprovision.expected_alert(alert, ctx)) is not None:
        return Decision(S.DISMISSED, (), why, closes=True)
    data: dict[str, Any] = {}
    if alert.remediation is Remediation.HOST_OVERLOADED:
        # The rule's own figure is the one source of truth: rules/ says what overloaded means.
        data["overload"] = {"resource": alert.labels.get("reason", "load"),
                            "threshold": float(alert.labels.get("threshold", "nan"))}
    return open_incident(alert.remediation, alert.subject, alert.host, ctx, at=alert.starts_at,
                         vm_uuid=alert.uuid, vm_name=alert.vm, data=data)


def open_incident(kind: Remediation, subject: str, host: str, ctx: Context, *, at: datetime,
                  vm_uuid: str | None = None, vm_name: str | None = None,
                  data: Mapping[str, Any] | None = None) -> Decision:
    """The opening decision of a new incident of `kind` (from an alert, or an operator's maintenance)."""
    state, kinds, reason = reprovision.first_step(data or {}) if kind is REPROVISION else _FIRST_STEP[kind]
    if kind is REPROVISION:
        data = {**(data or {}), "phases": {state.value: at.isoformat()}}
    condition = ctx.host_condition
    if kind is Remediation.HOST_DAMAGED and condition is HostCondition.FENCED:
        return Decision(S.DISMISSED, (), f"host {host} is fenced (off): nothing to drain", closes=True)
    if kind is Remediation.HOST_OVERLOADED and (ctx.outranked or condition not in (None, HostCondition.UP)):
        return Decision(S.DISMISSED, (), f"host {host} is {condition or 'up'} with a higher-ranked incident "
                        f"or out of service: no rebalancing", closes=True)
    if kind is Remediation.HOST_DAMAGED and (ctx.outranked or condition is HostCondition.DOWN):
        # Never dropped: it waits for the host-down incident, and drains if the host comes back.
        state, kinds, reason = S.OUTRANKED, (), f"host {host} is down or has a host-down incident: that acts first"
    elif ctx.storm_hold and kind is Remediation.HOST_DAMAGED:
        # Cordoning takes nothing from anyone; moving VMs in a storm could make it worse.
        state, kinds, reason = S.HELD, (A.CORDON_HOST,), "host damaged, storm hold: cordoned, nothing moved"
    elif ctx.storm_hold and kind is Remediation.HOST_OVERLOADED:
        state, kinds, reason = S.HELD, (), "host overloaded, storm hold: nothing moved"
    draft = Incident(id=0, subject=subject, kind=kind, state=state, host=host, opened_at=at, updated_at=at,
                     vm_uuid=vm_uuid, vm_name=vm_name, data=dict(data or {}))
    actions = tuple(_action(k, draft, state, 1, ctx, "") for k in kinds)
    return Decision(state, actions, reason, attempts=1 if state in STEP_ACTION else 0, data=dict(data or {}))


def first_state(kind: Remediation) -> State:
    return _FIRST_STEP[kind][0]


def decide(incident: Incident, event: Event, ctx: Context) -> Decision:
    """What to do with `event` for `incident`: the first transition whose guard passes."""
    state = State(incident.state)
    kind = EventKind(event.kind)

    def ignore(why: str) -> Decision:
        return Decision(state, (), why, attempts=incident.attempts, ignored=True)

    def _phase(d: Decision) -> Decision:
        return reprovision.with_phase_start(incident, d, event.at) if incident.kind is REPROVISION else d

    if not incident.is_open or state in TERMINAL_STATES:
        return ignore(f"incident is closed ({state}): {kind} ignored")
    if kind is E.OPERATOR_CLOSE:
        return _apply(_OPERATOR_CLOSE[0], incident, event, ctx)
    if kind is E.OPERATOR_RETRY and state in (S.FAILED, S.HOST_FENCE_WAITING, S.VM_AWAITING_HOST):
        target, kinds, _ = (reprovision.first_step(incident.data) if incident.kind is REPROVISION
                            else _FIRST_STEP[incident.kind])
        return _phase(_apply(T(always, target, kinds, "an operator asked to start over"), incident, event, ctx))
    if kind is E.ALERT_FIRING:
        return _alert_status(ignore("alert repeated: already handled by this incident"), False)
    if kind is E.ALERT_RESOLVED:
        return _alert_status(_decide_by_table(incident, event, ctx, ignore, _phase), True)
    return _decide_by_table(incident, event, ctx, ignore, _phase)


def _alert_status(decision: Decision, resolved: bool) -> Decision:
    """Whether the incident's alert is resolved, kept in its data for the guards (`alert_resolved`)."""
    return replace(decision, data={**decision.data, ALERT_RESOLVED_KEY: resolved})


def _decide_by_table(incident: Incident, event: Event, ctx: Context, ignore, _phase) -> Decision:
    state, kind = State(incident.state), EventKind(event.kind)
    if kind in _RESULT_EVENTS and event.detail.get("action") != STEP_ACTION.get(state):
        return ignore(f"stale result of {event.detail.get('action')} ignored in {state}")
    if kind is E.RETRY and event.detail.get("state") != state:
        return ignore(f"stale timer set in {event.detail.get('state')} ignored in {state}")
    for transition in TRANSITIONS.get((state, kind), ()):
        if transition.guard(incident, event, ctx):
            return _phase(_apply(transition, incident, event, ctx))
    return ignore(f"{kind} changes nothing in {state}")


def _apply(t: Transition, incident: Incident, event: Event, ctx: Context) -> Decision:
    state = State(incident.state)
    target = t.target or state
    attempts = {_FIRST: 1 if target in STEP_ACTION else 0, _NEXT: incident.attempts + 1,
                _KEEP: incident.attempts}[t.attempts]
    limit = ctx.policy.attempts_for(state)
    detail = event.detail.get("detail") or event.detail.get("reason") or ""
    where = ", ".join(event.detail.get("hosts") or ()) or event.detail.get("host") or incident.host
    reason = t.reason.format(attempts=incident.attempts, max=limit, detail=detail, host=incident.host,
                             where=where)
    data: dict[str, Any] = {}
    failed = failed_hosts(incident, event)
    if failed != list((incident.data or {}).get("failed_hosts") or ()):
        data["failed_hosts"] = failed
        incident = replace(incident, data={**(incident.data or {}), **data})
    actions = tuple(_action(k, incident, target, incident.attempts, ctx, reason) for k in t.actions)
    return Decision(target, actions, reason, t.closes, attempts, data=data)


def _action(kind: ActionKind, incident: Incident, state: State, attempts: int, ctx: Context,
            reason: str) -> Action:
    """An action with the parameters the engine needs, so an intent can be resumed from the store alone."""
    params: dict[str, Any] = {"host": incident.host}
    if incident.vm_uuid:
        params["uuid"] = incident.vm_uuid
    if kind is A.SCHEDULE_RETRY:
        after = (ctx.policy.recheck_s if state in (S.VM_AWAITING_HOST, S.HOST_RECHECKING) else ctx.policy.reprovision_poll_s
                 if state is S.REPROVISION_WAITING else ctx.policy.backoff(max(1, attempts)))
        params = {"after_s": after, "event": E.RETRY.value, "state": state.value}
    elif kind is A.START_VM_ELSEWHERE:
        params["exclude"] = [incident.host]  # relocation: the placed host may be tried again
    elif kind is A.REBUILD_VM:
        params["exclude"] = sorted({incident.host, *((incident.data or {}).get("failed_hosts") or ())})
    elif kind is A.RAISE_FAILED:
        params["reason"] = reason
    elif incident.kind is REPROVISION:
        params["incident"] = incident.id  # its phases' start times, in the incident's data
    elif kind is A.REBALANCE_HOST:
        params.update(incident.data.get("overload") or {})
    elif kind is A.MIGRATE_AWAY:
        # A damaged host still answers: a VM whose live migration fails is destroyed there and started
        # elsewhere. In maintenance, the operator's host stays as it is: a failed move is reported.
        params["cold_fallback"] = incident.kind is Remediation.HOST_DAMAGED
    return Action(kind.value, params)
