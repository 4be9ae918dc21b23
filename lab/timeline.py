"""An incident's progress as named moments, read from the remediator's own record of it.

`GET /api/v1/incidents/<id>` answers with the incident, every transition and every action with
its times; this turns that into the moments a person asks about, as epoch seconds:

    detected  the alert that opened the incident was received (stored) by the remediator
    acting    the first action was recorded (the decision is taken: verify, fence or start)
    verified  verification answered (the VM is really down / the host is really unreachable)
    fenced    the host was proven off (fence agent's status off, or an operator's confirm-off)
    placed    the start, rebuild or evacuation was recorded, with placement's choice of hosts
    running   that action succeeded: every VM it was to start runs (the incident is recovered)

Used by the demo's live timeline and by bench/recovery.py; the service never imports it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from remediator.fsm import STEP_ACTION, ActionKind, State

MOMENTS = ("detected", "acting", "verified", "fenced", "placed", "running")

# The fsm's own names (StrEnums compare equal to the API's strings): the step actions that start or move VMs.
_VERIFYING = {State.VM_VERIFYING, State.HOST_VERIFYING}
_RECOVERY_ACTIONS = set(STEP_ACTION.values()) - {ActionKind.VERIFY_VM, ActionKind.VERIFY_HOST, ActionKind.FENCE_HOST}


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def moments(detail: dict[str, Any]) -> dict[str, float]:
    """moment -> epoch seconds, for the moments this incident has reached so far."""
    incident, history, actions = detail["incident"], detail["history"], detail["actions"]
    data = incident.get("data") or {}
    found: dict[str, float | None] = {
        "detected": epoch(data.get("alert_received_at") or incident.get("opened_at")),
        "acting": epoch(actions[0]["at"]) if actions else None,
    }
    verified = verification(history)
    if verified:
        found["verified"] = epoch(verified["at"])
    for t in history:
        if t["to_state"] == "host_evacuating":
            found.setdefault("fenced", epoch(t["at"]))
    recovery = recovery_actions(actions)
    if recovery:
        found["placed"] = epoch(recovery[0]["at"])
        done = [a for a in recovery if a.get("ok")]
        if done:
            found["running"] = epoch(done[-1]["finished_at"])
    return {k: v for k, v in found.items() if v is not None}


def verification(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The transition that ended verification (its event says what libvirt answered), if any yet."""
    return next((t for t in history if t["from_state"] in _VERIFYING and t["to_state"] not in _VERIFYING), None)


def recovery_actions(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The actions that start or move VMs (start, start elsewhere, rebuild, evacuate, migrate), in order."""
    return [a for a in actions if a["action"]["kind"] in _RECOVERY_ACTIONS]
