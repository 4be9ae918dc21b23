"""The store: the service's memory, behind one interface (SQLite or PostgreSQL, SQLAlchemy Core: sql.py).

Every write method is one transaction, or joins the caller's unit of work (`atomic()`). The engine records an intent before it acts and the
result after, so after `kill -9` `unfinished_intents()` says exactly which actions may be half
done (to be checked against the world, never blindly repeated) and completed ones are not redone.
Invariant enforced by the database itself, not by callers: at most one open incident per subject.
A transition names the state and version it was decided on, and is refused if another got there
first (compare-and-set), so two deciders (threads now, replicas later) cannot both move an incident.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ContextManager, Iterable, Mapping, NamedTuple, Protocol, Sequence

from remediator.model import Action, Alert, Event, HostCondition, Incident, ProtectedVM, Remediation

ALERT_OUTCOMES = ("incident", "ignored", "duplicate")


class StoreError(RuntimeError):
    """The store cannot do what was asked (unreachable, corrupt, or an invariant refused it)."""


class IncidentExists(StoreError):
    """create_incident for a subject that already has an open incident."""

    def __init__(self, subject: str, incident_id: int):
        super().__init__(f"subject {subject} already has open incident {incident_id}")
        self.subject = subject
        self.incident_id = incident_id


class TransitionConflict(StoreError):
    """apply_transition on an incident that is no longer in the state and version the decision was made on."""

    def __init__(self, incident_id: int, expected: tuple[str, int], found: tuple[str, int]):
        super().__init__(f"incident {incident_id} changed under this decision: decided on state {expected[0]} "
                         f"version {expected[1]}, the store has {found[0]} version {found[1]}; nothing was written")
        self.incident_id, self.expected, self.found = incident_id, expected, found


class NotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError's repr-quoting makes messages hard to read
        return str(self.args[0]) if self.args else "not found"


class DecisionLike(Protocol):
    """What apply_transition needs of fsm.Decision (kept structural so the store does not import the core).

    Optional attributes a Decision may carry:
      attempts: int   the attempt counter after this transition (default: unchanged when the state
                      stays, reset to 0 when it changes)
      data: Mapping   merged into Incident.data (e.g. {"placement": ..., "load_source": "libvirt"})
    """

    next_state: str
    actions: tuple[Action, ...]
    reason: str
    closes: bool


@dataclass(frozen=True)
class KnownVM:
    """What the webhook's inventory check needs of a VM row (not its XML)."""

    uuid: str
    name: str
    protected: bool


@dataclass(frozen=True)
class KnownVMs:
    """The inventory's answer for a batch of alerts, read in one query: VMs by lowercase UUID, and by
    name the most recently updated one (as find_vm_by_name answers)."""

    by_uuid: Mapping[str, KnownVM]
    by_name: Mapping[str, KnownVM]

    def find(self, uuid: str | None, name: str | None) -> KnownVM | None:
        """As get_vm(uuid) when there is a UUID, else find_vm_by_name(name)."""
        return self.by_uuid.get(uuid.lower()) if uuid else self.by_name.get(name or "")


@dataclass(frozen=True)
class StoredAlert:
    id: int
    alert: Alert
    received_at: datetime
    new: bool  # False when this (fingerprint, startsAt, status) was already stored: a repeat delivery
    outcome: str | None = None  # None until handled: one of ALERT_OUTCOMES
    incident_id: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class TransitionRecord:
    at: datetime
    from_state: str | None  # None for the transition that opened the incident
    event: Event
    to_state: str
    reason: str
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Intent:
    """An action the engine said it was about to perform, and (once known) how it ended."""

    id: int
    incident_id: int
    action: Action
    at: datetime
    finished_at: datetime | None = None
    ok: bool | None = None
    detail: str = ""
    epoch: int = 0  # the leader epoch that recorded it (0: no lease)
    result_epoch: int | None = None  # the epoch that recorded its result (another than `epoch`: resumed)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True)
class QueuedEvent:
    """An event for a subject that did not come as an alert (an operator's request), waiting for the engine."""

    id: int
    subject: str  # model.host_subject / vm_subject
    event: Event
    outcome: str | None = None  # None until the engine handled it; then e.g. "applied" or "ignored"
    reason: str = ""


class HostState(NamedTuple):
    condition: HostCondition
    reason: str
    since: datetime
    prior: HostCondition | None = None  # what a down host was before (hostfsm): it returns to that


class Store(abc.ABC):
    # ---- alerts

    @abc.abstractmethod
    def record_alerts(
        self, alerts: Sequence[Alert], received_at: datetime, ignore_reasons: Sequence[str | None] | None = None
    ) -> list[StoredAlert]:
        """Store every alert in one transaction; idempotent on (fingerprint, starts_at, status).

        `ignore_reasons[i]`, when not None, records alert i as handled with outcome "ignored" and that reason
        in the same transaction (e.g. unknown host), so it never reaches pending_alerts(). Repeats keep their
        first outcome and come back with new=False.
        """

    @abc.abstractmethod
    def pending_alerts(self) -> list[StoredAlert]:
        """Alerts not yet handled by the engine, oldest first."""

    @abc.abstractmethod
    def claim_alert(self, alert_id: int) -> StoredAlert | None:
        """Inside a unit of work: the alert if it is still unhandled and nobody else holds it, locked until the
        unit of work ends (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the unit of work holds the write lock)."""

    @abc.abstractmethod
    def claim_pending_alerts(self, limit: int = 100) -> list[StoredAlert]:
        """Inside a unit of work: up to `limit` unhandled alerts no other unit of work holds, oldest first, locked."""

    @abc.abstractmethod
    def mark_alert(self, alert_id: int, outcome: str, incident_id: int | None, reason: str) -> None: ...

    @abc.abstractmethod
    def recent_alerts(self, limit: int = 100) -> list[StoredAlert]:
        """The last `limit` stored alerts, newest first (for operators)."""

    # ---- incidents

    @abc.abstractmethod
    def open_incident_for(self, subject: str) -> Incident | None: ...

    @abc.abstractmethod
    def latest_incident_for(self, subject: str) -> Incident | None:
        """The subject's newest incident, open or closed."""

    @abc.abstractmethod
    def get_incident(self, incident_id: int) -> Incident:
        """Raises NotFound."""

    @abc.abstractmethod
    def list_incidents(self, open_only: bool = False, limit: int = 100) -> list[Incident]:
        """Open incidents first, then the most recent closed ones; newest first within each."""

    @abc.abstractmethod
    def create_incident(
        self,
        subject: str,
        kind: Remediation,
        host: str,
        vm_uuid: str | None,
        vm_name: str | None,
        state: str,
        reason: str,
        at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> Incident:
        """Raises IncidentExists when the subject already has an open incident."""

    @abc.abstractmethod
    def apply_transition(self, incident_id: int, at: datetime, event: Event, decision: DecisionLike, *,
                         expected_state: str, expected_version: int) -> Incident:
        """Set state/attempts/reason (closed_at when decision.closes), bump the version and append to the
        history, atomically - only if the incident is still in `expected_state` at `expected_version`
        (the Incident the decision was made on).

        Raises NotFound, StoreError when the incident is already closed, TransitionConflict when it moved."""

    @abc.abstractmethod
    def history(self, incident_id: int) -> list[TransitionRecord]:
        """Every transition of the incident, in order."""

    @abc.abstractmethod
    def incident_counts(self) -> dict[str, int]:
        """Open incidents by state."""

    # ---- queued events: one durable way in for operator requests, like alerts

    @abc.abstractmethod
    def enqueue_event(self, subject: str, event: Event) -> int:
        """Queue an event (e.g. fsm.EventKind.OPERATOR_CONFIRM_OFF for host:h1) for the engine."""

    @abc.abstractmethod
    def get_event(self, event_id: int) -> QueuedEvent:
        """Raises NotFound."""

    @abc.abstractmethod
    def pending_events(self) -> list[QueuedEvent]:
        """Queued events not yet handled, oldest first."""

    @abc.abstractmethod
    def mark_event(self, event_id: int, outcome: str, reason: str) -> None: ...

    # ---- intents

    @abc.abstractmethod
    def record_intent(self, incident_id: int, action: Action, at: datetime, epoch: int = 0) -> int: ...

    @abc.abstractmethod
    def record_result(self, intent_id: int, ok: bool, detail: str, at: datetime, epoch: int = 0) -> None:
        """Raises StoreError if the intent already has a result (a completed action is never redone)."""

    @abc.abstractmethod
    def unfinished_intents(self) -> list[Intent]:
        """Intents without a result, oldest first: what a restart must check and resume."""

    @abc.abstractmethod
    def intents(self, incident_id: int) -> list[Intent]:
        """Every intent of an incident, in order, with results."""

    # ---- inventory

    @abc.abstractmethod
    def upsert_vm(self, vm: ProtectedVM, at: datetime | None = None) -> None: ...

    @abc.abstractmethod
    def get_vm(self, uuid: str) -> ProtectedVM | None: ...

    @abc.abstractmethod
    def find_vm_by_name(self, name: str) -> ProtectedVM | None: ...

    @abc.abstractmethod
    def known_vms(self, uuids: Iterable[str], names: Iterable[str]) -> KnownVMs:
        """The VMs with any of these UUIDs or names, in one query (the webhook checks a batch at once)."""

    @abc.abstractmethod
    def list_vms(self) -> list[ProtectedVM]: ...

    @abc.abstractmethod
    def set_host_state(self, name: str, condition: HostCondition, reason: str, at: datetime,
                       prior: HostCondition | None = None) -> None:
        """`since` changes only when the condition changes; the reason and prior are always updated."""

    @abc.abstractmethod
    def host_states(self) -> dict[str, HostState]: ...

    @abc.abstractmethod
    def set_host_domains(self, host: str, uuids: Iterable[str], at: datetime) -> None:
        """What a reachable host defines now (the inventory sync): replaces what was known of it."""

    @abc.abstractmethod
    def note_vm_location(self, uuid: str, host: str, defined: bool, at: datetime) -> None:
        """The engine defined (or undefined) the VM on `host`."""

    @abc.abstractmethod
    def hosts_defining(self, uuid: str) -> list[str]:
        """Hosts where the VM is or was last seen defined: where it may run while they cannot be asked."""

    # ---- what the remediator observed of each host (rows in host_status)

    @abc.abstractmethod
    def note_reachability(self, asked: Iterable[str], unreachable: Iterable[str], at: datetime) -> bool:
        """Of the hosts just asked, which did not answer (kept since when first seen); True when that changed."""

    @abc.abstractmethod
    def unreachable_hosts(self) -> dict[str, datetime]:
        """Hosts the remediator itself could not reach when it last asked them, and since when."""

    @abc.abstractmethod
    def set_host_loads(self, loads: Mapping[str, tuple[float | None, int | None]], at: datetime, source: str) -> None:
        """Each host's (load1, memory_available_bytes) as the last placement saw it, and where it came from."""

    @abc.abstractmethod
    def host_loads(self) -> dict[str, Any]:
        """{host: {"load1", "memory_available_bytes"}, "at": datetime, "source": "prometheus"|"libvirt"} or {}."""

    # ---- the storm hold (one row)

    @abc.abstractmethod
    def storm_hold(self) -> dict[str, Any] | None:
        """{"active": bool, "reason": str, "since": datetime, "unhealthy": [host, ...]}, or None if never set."""

    @abc.abstractmethod
    def set_storm_hold(self, active: bool, reason: str, unhealthy: Sequence[str], since: datetime) -> None: ...

    @abc.abstractmethod
    def storm_release(self) -> dict[str, Any] | None:
        """An operator's release of the hold: {"at", "by", "reason", "hosts"}, or None."""

    @abc.abstractmethod
    def set_storm_release(self, release: Mapping[str, Any] | None) -> None:
        """Record an operator's release ({"at", "by", "reason", "hosts"}); None drops it."""

    # ---- small durable settings

    @abc.abstractmethod
    def get_setting(self, key: str) -> Any | None: ...

    @abc.abstractmethod
    def set_setting(self, key: str, value: Any) -> None:
        """`value` must be JSON-serialisable; None deletes the key."""

    # ---- lifecycle

    @abc.abstractmethod
    def atomic(self) -> ContextManager[None]:
        """A unit of work: the calls made inside it (by this thread) commit together or not at all."""

    @abc.abstractmethod
    def autocommit(self) -> ContextManager[None]:
        """Calls (by this thread) whose every write is one statement, each committed as it runs: the
        durability of a unit of work without its BEGIN and COMMIT. Refused inside a unit of work."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StoreError unless the store answers a trivial query (for /readyz)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
