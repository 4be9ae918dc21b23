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
    VM_IO_ERROR = "vm_io_error"  # paused on a storage I/O error (libvirt's paused/ioerror)
    HOST_DOWN = "host_down"
    HOST_DAMAGED = "host_damaged"
    HOST_OVERLOADED = "host_overloaded"
    # Not an alert's: an operator's `maintenance on` opens an incident of this kind to drain the host.
    HOST_MAINTENANCE = "host_maintenance"
    # Not an alert's: a damaged or fenced host reinstalled (its policy, or an operator's request).
    HOST_REPROVISION = "host_reprovision"


# What an alert's `remediation` label may say (rules/ -> remediator); the other kinds come from operators.
ALERT_REMEDIATIONS = frozenset({Remediation.VM_DOWN, Remediation.VM_IO_ERROR, Remediation.HOST_DOWN,
                                Remediation.HOST_DAMAGED, Remediation.HOST_OVERLOADED})
VM_KINDS = frozenset({Remediation.VM_DOWN, Remediation.VM_IO_ERROR})
HOST_KINDS = frozenset({Remediation.HOST_DOWN, Remediation.HOST_DAMAGED, Remediation.HOST_OVERLOADED,
                        Remediation.HOST_MAINTENANCE})


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
        if self.remediation is Remediation.VM_IO_ERROR:
            return f"{vm_subject(self.uuid)}:io_error"
        return vm_subject(self.uuid) if self.remediation is Remediation.VM_DOWN else host_subject(self.host,
                                                                                                 self.remediation)


def vm_subject(uuid: str | None) -> str:
    return f"vm:{uuid}"


def host_subject(name: str, kind: Remediation = Remediation.HOST_DOWN) -> str:
    """One open incident per (host, kind): `host:h1` is the host-down incident (the one that fences and
    evacuates), `host:h1:damaged`, `host:h1:overloaded` and `host:h1:maintenance` the others. Kinds meet
    by precedence (fsm.RANK), never as duplicates of each other."""
    if kind is Remediation.HOST_DOWN:
        return f"host:{name}"
    return f"host:{name}:{kind.value.removeprefix('host_')}"


def host_of_subject(subject: str) -> str | None:
    """`host:h1:damaged` -> h1; None for a VM's subject."""
    if not subject.startswith("host:"):
        return None
    return subject[len("host:"):].split(":", 1)[0]


class HostCondition(StrEnum):
    """What the remediator believes of a host; only UP hosts take VMs. Its moves: remediator/hostfsm.py."""

    UP = "up"
    CORDONED = "cordoned"  # a damage check failed: no new VMs, its VMs drained; out until activated
    DOWN = "down"  # unreachable, not proven off; back when it answers, fenced, or activated
    FENCED = "fenced"  # proven off (fence agent status off, or an operator's confirm-off); out until activated
    MAINTENANCE = "maintenance"  # an operator took it out (its VMs drained); back on maintenance off


class OperatorRequest(StrEnum):
    """Operator requests about a host, queued by the API like alerts and carried out by the engine.
    (Requests about an incident are fsm events: confirm-off, retry, close.)"""

    ACTIVATE = "activate_host"
    MAINTENANCE = "maintenance"  # detail: on (bool), reason
    REPROVISION = "reprovision_host"  # detail: reason


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
    shared_storage_ok: bool | None = None  # its shared-storage check (exporter `storage`); None: not known


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
    version: int = 0  # the store's transition count: apply_transition compares it (compare-and-set)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None
