"""Rows to model objects (the column types already turned times and documents into Python values)."""

from __future__ import annotations

from typing import Any

from remediator.model import Action, Alert, AlertStatus, Event, Incident, ProtectedVM, Remediation
from remediator.store.base import Intent, QueuedEvent, StoredAlert, TransitionRecord


def action_document(action: Action) -> dict[str, Any]:
    return {"kind": str(action.kind), "params": dict(action.params)}


def stored_alert(row: Any, *, new: bool) -> StoredAlert:
    return StoredAlert(
        id=row.id,
        alert=Alert(fingerprint=row.fingerprint, status=AlertStatus(row.status), remediation=Remediation(row.remediation),
                    alertname=row.alertname, host=row.host, starts_at=row.starts_at, ends_at=row.ends_at, vm=row.vm,
                    uuid=row.uuid, labels=row.labels, annotations=row.annotations),
        received_at=row.received_at, new=new, outcome=row.outcome, incident_id=row.incident_id, reason=row.reason)


def incident(row: Any) -> Incident:
    return Incident(id=row.id, subject=row.subject, kind=Remediation(row.kind), state=row.state, host=row.host,
                    opened_at=row.opened_at, updated_at=row.updated_at, vm_uuid=row.vm_uuid, vm_name=row.vm_name,
                    attempts=row.attempts, reason=row.reason, closed_at=row.closed_at, data=row.data,
                    version=row.version)


def transition(row: Any) -> TransitionRecord:
    return TransitionRecord(
        at=row.at, from_state=row.from_state,
        event=Event(kind=row.event_kind, at=row.event_at, detail=row.event_detail),
        to_state=row.to_state, reason=row.reason,
        actions=tuple(Action(kind=a["kind"], params=a["params"]) for a in row.actions))


def queued(row: Any) -> QueuedEvent:
    return QueuedEvent(id=row.id, subject=row.subject, event=Event(kind=row.kind, at=row.at, detail=row.detail),
                       outcome=row.outcome, reason=row.reason)


def intent(row: Any) -> Intent:
    return Intent(id=row.id, incident_id=row.incident_id, action=Action(kind=row.kind, params=row.params), at=row.at,
                  finished_at=row.finished_at, ok=row.ok, detail=row.detail, epoch=row.epoch,
                  result_epoch=row.result_epoch)


def vm(row: Any) -> ProtectedVM:
    return ProtectedVM(uuid=row.uuid, name=row.name, host=row.host, vcpus=row.vcpus, memory_bytes=row.memory_bytes,
                       priority=row.priority, group=row.anti_affinity_group, xml=row.xml, protected=bool(row.protected))
