"""The service's vocabulary: plain, frozen data shared by the pure core and the edges.

Nothing here does I/O. Times are timezone-aware UTC datetimes; sizes are bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Mapping


class Remediation(StrEnum):
    """The `remediation` label of an alert: the contract between rules/ and the remediator."""

    VM_DOWN = "vm_down"
    HOST_DOWN = "host_down"
    HOST_DAMAGED = "host_damaged"
    HOST_OVERLOADED = "host_overloaded"


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    """One alert of an Alertmanager webhook payload, validated."""

    fingerprint: str
    status: AlertStatus
    remediation: Remediation
    alertname: str
    host: str
    starts_at: datetime
    ends_at: datetime | None = None
    vm: str | None = None  # domain name, VM alerts only
    uuid: str | None = None  # domain UUID, VM alerts only
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        """What an incident is about: one open incident per subject."""
        return vm_subject(self.uuid) if self.remediation is Remediation.VM_DOWN else host_subject(self.host)


def vm_subject(uuid: str | None) -> str:
    return f"vm:{uuid}"


def host_subject(name: str) -> str:
    return f"host:{name}"


class HostCondition(StrEnum):
    """What the remediator believes of a host; only UP hosts take VMs."""

    UP = "up"
    DOWN = "down"  # unreachable, not yet fenced
    FENCED = "fenced"  # powered off by us (or confirmed off by an operator); stays out until brought back
    DAMAGED = "damaged"  # cordoned: a damage check failed
    MAINTENANCE = "maintenance"  # an operator took it out


@dataclass(frozen=True)
class HostCapacity:
    """A host as placement sees it: capacity, what is allocated on it, its load."""

    name: str
    cpus: int
    memory_bytes: int
    vcpus_allocated: int = 0
    memory_allocated_bytes: int = 0
    load1: float | None = None  # None when Prometheus gave no figure
    memory_available_bytes: int | None = None
    condition: HostCondition = HostCondition.UP
    labels: Mapping[str, str] = field(default_factory=dict)
    vms: frozenset[str] = frozenset()  # UUIDs of the VMs defined there (for anti-affinity)


@dataclass(frozen=True)
class ProtectedVM:
    """A VM the remediator keeps running, with the last known definition it can recreate it from."""

    uuid: str
    name: str
    host: str | None  # where it last ran (None: not seen on any reachable host)
    vcpus: int
    memory_bytes: int
    priority: int = 0  # higher first
    group: str | None = None  # anti-affinity group: members kept on different hosts
    xml: str = ""  # last known domain XML
    protected: bool = True


@dataclass(frozen=True)
class Action:
    """Something the engine must do for an incident. `kind` is one of fsm.ActionKind."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """Something that happened to an incident: an alert, a verification or action result, a timer, an operator."""

    kind: str  # one of fsm.EventKind
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Incident:
    """One problem with one subject, from first alert to its end."""

    id: int
    subject: str
    kind: Remediation
    state: str  # one of fsm.State
    host: str
    opened_at: datetime
    updated_at: datetime
    vm_uuid: str | None = None
    vm_name: str | None = None
    attempts: int = 0  # attempts of the current step
    reason: str = ""  # why it is in this state (shown to operators)
    closed_at: datetime | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None
