"""Operator requests, queued by the API like alerts and carried out by the engine's loop (the one
consumer): activate, maintenance and reprovision of a host, confirm-off, and retry or close of a named incident.
Each ends applied or refused, with the reason the API and the CLI show.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from remediator import fsm
from remediator.fsm import EventKind as E
from remediator.hostfsm import HostEvent
from remediator.hostlife import Answer
from remediator.model import Event, OperatorRequest, host_of_subject, host_subject

if TYPE_CHECKING:
    from remediator.engine import Engine


class OperatorRequests:
    def __init__(self, engine: "Engine"):
        self.engine = engine

    def handle(self, subject: str, event: Event) -> tuple[str, str]:
        """One queued operator request: (outcome, reason)."""
        e = self.engine
        kind, detail, host = event.kind, event.detail, host_of_subject(subject)
        by = detail.get("by", "operator")
        if kind == OperatorRequest.ACTIVATE:
            answer = e.hosts.activate(host, by, detail.get("reason", ""))
        elif kind == OperatorRequest.REPROVISION:
            answer = e.reprovisions.request(host, by, detail.get("reason", ""))
        elif kind == OperatorRequest.MAINTENANCE:
            answer = e.hosts.maintenance(host, bool(detail.get("on")), by, detail.get("reason", ""))
        elif kind == E.OPERATOR_CONFIRM_OFF:
            answer = self.confirm_off(host, event)
        elif kind in (E.OPERATOR_RETRY, E.OPERATOR_CLOSE) and detail.get("incident") is not None:
            answer = self.incident_request(int(detail["incident"]), event)
        else:
            return "ignored", f"unknown request {kind} for {subject}"
        return ("applied" if answer.ok else "refused"), answer.reason

    def confirm_off(self, host: str, event: Event) -> Answer:
        """An operator made sure `host` is off: it counts as fenced, checked under the decide lock so the
        incident cannot have moved on in between."""
        e = self.engine
        with e.decide_lock:
            incident = e.store.open_incident_for(host_subject(host))
            if incident is None or fsm.State(incident.state) not in fsm.WAITING_FOR_OFF:
                where = f"its incident {incident.id} is {incident.state}" if incident else "it has no open incident"
                return Answer(False, f"host {host} is not waiting to be fenced: {where}")
            change = e.hosts.set_condition(
                host, HostEvent.CONFIRMED_OFF, f"an operator ({event.detail.get('by', 'operator')}) confirmed it is off")
            if not change.applies:
                return Answer(False, change.reason)
            e.metrics.fence_outcome("confirmed_by_operator")
            decision = e.handle_event(incident.id, event)
        return Answer(not decision.ignored, decision.reason)

    def incident_request(self, incident_id: int, event: Event) -> Answer:
        """Retry or close the incident the operator named, not whichever is open for its subject."""
        e = self.engine
        with e.decide_lock:
            incident = e.store.get_incident(incident_id)
            if not incident.is_open:
                return Answer(False, f"incident {incident_id} is closed ({incident.state})")
            decision = e.handle_event(incident_id, replace(event, detail={
                **event.detail, "detail": event.detail.get("reason") or f"by {event.detail.get('by', 'operator')}"}))
        return Answer(not decision.ignored, decision.reason)
