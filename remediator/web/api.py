"""The operators' API: read incidents and hosts; take a host out, confirm it is off, retry or close.

Writes only store what the operator asked (a host condition, a queued event) and wake the engine;
the engine decides and acts, so an operator's request follows the same path as an alert.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue

from remediator.fsm import TERMINAL_STATES, EventKind, State
from remediator.model import Event, HostCondition, host_subject
from remediator.store.base import SETTING_STORM, SETTING_STORM_RELEASE, NotFound
from remediator.web.auth import require
from remediator.web.context import error, plain, services
from remediator.web.views import MAX_LIMIT, hosts_view, vms_view

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(require("operator"))

# States in which a host's incident waits for the host to be known off before anything is restarted elsewhere.
_WAITING_FOR_OFF = frozenset({State.HOST_VERIFYING, State.HOST_FENCING, State.HOST_FENCE_WAITING, State.HELD})


@bp.get("/incidents")
def incidents() -> ResponseReturnValue:
    open_only = request.args.get("open", "false").lower() in ("1", "true", "yes")
    try:
        limit = int(request.args.get("limit", "100"))
    except ValueError:
        return error(400, f"limit: expected an integer, got {request.args.get('limit')!r}")
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, f"limit: must be 1..{MAX_LIMIT}, got {limit}")
    return jsonify({"incidents": [plain(i) for i in services().store.list_incidents(open_only, limit)]})


@bp.get("/incidents/<int:incident_id>")
def incident(incident_id: int) -> ResponseReturnValue:
    store = services().store
    try:
        found = store.get_incident(incident_id)
    except NotFound:
        return error(404, f"incident {incident_id} not found")
    return jsonify(
        {
            "incident": plain(found),
            "history": [plain(t) for t in store.history(incident_id)],
            "actions": [plain(i) for i in store.intents(incident_id)],
        }
    )


@bp.get("/hosts")
def hosts() -> ResponseReturnValue:
    s = services()
    return jsonify(hosts_view(s.config, s.store))


@bp.get("/vms")
def vms() -> ResponseReturnValue:
    s = services()
    return jsonify({"vms": vms_view(s.config, s.store)})


@bp.post("/hosts/<name>/maintenance")
def maintenance(name: str) -> ResponseReturnValue:
    """Body {"on": true|false, "reason": "..."}: a host in maintenance gets no VMs and its alerts start no action."""
    s = services()
    if s.config.host(name) is None:
        return error(404, f"host {name!r} is not in the inventory")
    body, problem = _json_body({"on": bool, "reason": str}, required=("on",))
    if problem:
        return error(400, problem)
    current = s.store.host_states().get(name)
    condition = current.condition if current else HostCondition.UP
    reason = body.get("reason") or ""
    now = s.clock()
    if body["on"]:
        if condition is HostCondition.MAINTENANCE:
            return jsonify({"host": name, "condition": condition.value, "changed": False})
        if condition is not HostCondition.UP:
            # a down or fenced host has an incident to finish; maintenance would hide it
            return error(409, f"host {name} is {condition.value} ({current.reason}); maintenance is for hosts that are up")
        s.store.set_host_state(name, HostCondition.MAINTENANCE, f"maintenance by {g.caller}: {reason}".rstrip(": "), now)
    else:
        if condition is not HostCondition.MAINTENANCE:
            return error(409, f"host {name} is not in maintenance (it is {condition.value})")
        s.store.set_host_state(name, HostCondition.UP, f"maintenance ended by {g.caller}: {reason}".rstrip(": "), now)
    s.store.enqueue_event(host_subject(name), Event(EventKind.HOST_CHANGED.value, now, {"by": g.caller, "reason": reason}))
    s.wake_engine()
    return jsonify({"host": name, "condition": (HostCondition.MAINTENANCE if body["on"] else HostCondition.UP).value,
                    "changed": True})


@bp.post("/hosts/<name>/confirm-off")
def confirm_off(name: str) -> ResponseReturnValue:
    """An operator made sure the host is powered off (Pacemaker's manual fence confirmation, oVirt's
    "confirm host has been rebooted"): its incident may go on to restart its VMs elsewhere."""
    s = services()
    if s.config.host(name) is None:
        return error(404, f"host {name!r} is not in the inventory")
    body, problem = _json_body({"reason": str}, required=())
    if problem:
        return error(400, problem)
    incident = s.store.open_incident_for(host_subject(name))
    if incident is None or State(incident.state) not in _WAITING_FOR_OFF:
        where = f"its incident {incident.id} is {incident.state}" if incident else "it has no open incident"
        return error(409, f"host {name} is not waiting to be fenced: {where}")
    event_id = s.store.enqueue_event(
        host_subject(name),
        Event(EventKind.OPERATOR_CONFIRM_OFF.value, s.clock(), {"by": g.caller, "reason": body.get("reason", "")}),
    )
    s.wake_engine()
    return jsonify({"host": name, "incident": incident.id, "queued_event": event_id}), 202


@bp.post("/incidents/<int:incident_id>/retry")
def retry(incident_id: int) -> ResponseReturnValue:
    return _operator_event(incident_id, EventKind.OPERATOR_RETRY)


@bp.post("/incidents/<int:incident_id>/close")
def close(incident_id: int) -> ResponseReturnValue:
    return _operator_event(incident_id, EventKind.OPERATOR_CLOSE)


@bp.get("/storm")
def storm() -> ResponseReturnValue:
    store = services().store
    return jsonify({"hold": plain(store.get_setting(SETTING_STORM) or {"active": False}),
                    "release": plain(store.get_setting(SETTING_STORM_RELEASE))})


@bp.post("/storm/release")
def storm_release() -> ResponseReturnValue:
    """An operator lifts the storm hold (as Medik8s' maxUnhealthy is overridden by hand)."""
    s = services()
    body, problem = _json_body({"reason": str}, required=())
    if problem:
        return error(400, problem)
    hold = s.store.get_setting(SETTING_STORM) or {"active": False}
    if not hold.get("active"):
        return error(409, "no storm hold is active")
    release = {"at": s.clock(), "by": g.caller, "reason": body.get("reason", "")}
    s.store.set_setting(SETTING_STORM_RELEASE, release)
    s.wake_engine()
    return jsonify({"release": plain(release)}), 202


def _operator_event(incident_id: int, kind: EventKind) -> ResponseReturnValue:
    s = services()
    body, problem = _json_body({"reason": str}, required=())
    if problem:
        return error(400, problem)
    try:
        incident = s.store.get_incident(incident_id)
    except NotFound:
        return error(404, f"incident {incident_id} not found")
    if not incident.is_open or State(incident.state) in TERMINAL_STATES:
        return error(409, f"incident {incident_id} is closed ({incident.state})")
    event_id = s.store.enqueue_event(
        incident.subject,
        Event(kind.value, s.clock(), {"by": g.caller, "reason": body.get("reason", ""), "incident": incident_id}),
    )
    s.wake_engine()
    return jsonify({"incident": incident_id, "queued_event": event_id}), 202


def _json_body(fields: dict[str, type], required: tuple[str, ...]) -> tuple[dict[str, Any], str | None]:
    """A small JSON object body with typed fields; an empty body is {} (for requests with no options)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:
            return {}, f"body: malformed JSON ({e})"
    if not isinstance(data, dict):
        return {}, "body: expected a JSON object"
    for key in data:
        if key not in fields:
            return {}, f"{key}: unknown field (expected: {', '.join(fields)})"
    for key, kind in fields.items():
        if key not in data:
            if key in required:
                return {}, f"{key}: missing"
            continue
        if not isinstance(data[key], kind) or (kind is not bool and isinstance(data[key], bool)):
            return {}, f"{key}: expected {kind.__name__}, got {type(data[key]).__name__}"
    return data, None
