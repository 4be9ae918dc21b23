"""The operators' API: read incidents and hosts; maintenance, activate, confirm-off, retry or close.

Writes only store what the operator asked (a host condition, a queued event) and wake the engine;
the engine decides and acts, so an operator's request follows the same path as an alert.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue

from remediator.fsm import TERMINAL_STATES, WAITING_FOR_OFF, EventKind, State
from remediator.model import Event, OperatorRequest, host_subject
from remediator.store.base import NotFound, QueuedEvent
from remediator.web.auth import require
from remediator.web.context import error, plain, services
from remediator.web.views import MAX_LIMIT, hosts_view, vms_view

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(require("operator"))



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
    """Body {"on": true|false, "reason": "..."}: on cordons the host and live-migrates its protected VMs
    away (an incident of kind host_maintenance reports progress); off makes it schedulable again."""
    body, problem = _json_body({"on": bool, "reason": str}, required=("on",))
    if problem:
        return error(400, problem)
    return _host_request(name, OperatorRequest.MAINTENANCE, {"on": body["on"], "reason": body.get("reason", "")})


@bp.post("/hosts/<name>/activate")
def activate(name: str) -> ResponseReturnValue:
    """Return a repaired host to service (a fenced, cordoned or down host whose libvirt answers and
    whose checks pass): its protected VMs that run elsewhere are undefined on it, its host incidents
    closed, and it becomes schedulable. Refused (409) with the reason otherwise."""
    body, problem = _json_body({"reason": str}, required=())
    if problem:
        return error(400, problem)
    return _host_request(name, OperatorRequest.ACTIVATE, {"reason": body.get("reason", "")})


@bp.post("/hosts/<name>/reprovision")
def reprovision(name: str) -> ResponseReturnValue:
    """Reinstall a damaged (cordoned, drained) or fenced host: next boot from the network and a power cycle
    and/or its provisioning hook, then, once it is ready, activate it. Opens an incident of kind
    host_reprovision (200 with its id), or 409 with the reason (its policy says never, it is not out of
    service, it has open incidents, it has no way to be reinstalled)."""
    body, problem = _json_body({"reason": str}, required=())
    if problem:
        return error(400, problem)
    return _host_request(name, OperatorRequest.REPROVISION, {"reason": body.get("reason", "")})


def _host_request(name: str, kind: OperatorRequest, detail: dict[str, Any]) -> ResponseReturnValue:
    """Queue a request about a host for the engine (the one consumer) and wait a while for its answer:
    200 applied, 409 refused with the reason, 202 still queued (the engine will carry it out)."""
    s = services()
    if s.config.host(name) is None:
        return error(404, f"host {name!r} is not in the inventory")
    event_id = s.store.enqueue_event(host_subject(name), Event(kind.value, s.clock(), {"by": g.caller, **detail}))
    s.wake_engine()
    queued = _wait_handled(event_id, s.request_wait_s) if s.engine is not None else None
    if queued is None:
        return jsonify({"host": name, "request": kind.value, "queued_event": event_id}), 202
    if queued.outcome == "refused":
        return error(409, queued.reason, host=name, queued_event=event_id)
    return jsonify({"host": name, "request": kind.value, "outcome": queued.outcome, "reason": queued.reason,
                    "queued_event": event_id})


def _wait_handled(event_id: int, timeout_s: float) -> QueuedEvent | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = services().store.get_event(event_id)
        if queued.outcome is not None:
            return queued
        time.sleep(0.05)
    return None


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
    if incident is None or State(incident.state) not in WAITING_FOR_OFF:
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


@bp.get("/cluster")
def cluster() -> ResponseReturnValue:
    """Which replica answers, which one leads (the lease row, by the database's clock) and at which epoch.
    Any replica answers; operator writes sent to a standby are queued and carried out by the leader."""
    return jsonify(services().cluster())


@bp.get("/storm")
def storm() -> ResponseReturnValue:
    store = services().store
    return jsonify({"hold": plain(store.storm_hold() or {"active": False}),
                    "release": plain(store.storm_release())})


@bp.post("/storm/release")
def storm_release() -> ResponseReturnValue:
    """An operator lifts the storm hold (as Medik8s' maxUnhealthy is overridden by hand)."""
    s = services()
    body, problem = _json_body({"reason": str}, required=())
    if problem:
        return error(400, problem)
    hold = s.store.storm_hold() or {"active": False}
    if not hold.get("active"):
        return error(409, "no storm hold is active")
    # The release covers the hosts out now; a host failing beyond them holds again.
    release = {"at": s.clock(), "by": g.caller, "reason": body.get("reason", ""), "hosts": hold.get("unhealthy", [])}
    s.store.set_storm_release(release)
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
