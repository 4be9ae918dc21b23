"""The incident state machine's vocabulary: states, events, actions, and the data a decision is made of.

Pure data, no rules: the rules are the table in remediator/fsm.py, which re-exports these names.
(`failed_hosts` reads the incident's data, as the table's guards do: which hosts failed the VM so far.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Mapping

from remediator.model import Action, Event, HostCondition, Incident, Remediation


class State(StrEnum):
    # A VM is down.
    VM_VERIFYING = "vm_verifying"  # asking libvirt whether it really is not running anywhere
    VM_RESTARTING = "vm_restarting"  # starting it again on its own host
    VM_RELOCATING = "vm_relocating"  # starting it on another host chosen by placement
    VM_REBUILDING = "vm_rebuilding"  # recreating it from its stored XML on a host that did not fail it
    VM_AWAITING_HOST = "vm_awaiting_host"  # its host is unreachable: the host's incident acts first
    # A VM is paused on a storage I/O error.
    VM_IO_HANDLING = "vm_io_handling"  # its policy acts: resume once storage takes writes, or restart elsewhere
    VM_IO_WAITING = "vm_io_waiting"  # policy wait: left paused for an operator, open until it runs or stops
    # A host is down.
    HOST_VERIFYING = "host_verifying"  # is libvirt on it unreachable from the remediator too?
    HOST_RECHECKING = "host_rechecking"  # it answered while its alert fires: checked again until the alert resolves
    HOST_FENCING = "host_fencing"  # fence agent off, then status must say off
    HOST_FENCE_WAITING = "host_fence_waiting"  # fence failed: retrying, or waiting for confirm-off
    HOST_EVACUATING = "host_evacuating"  # its protected VMs are being started elsewhere
    # A host is damaged, overloaded, or in maintenance.
    HOST_DRAINING = "host_draining"  # cordoned or in maintenance, its VMs live-migrating away
    HOST_REBALANCING = "host_rebalancing"  # its lowest-priority VMs live-migrating to lighter hosts
    OUTRANKED = "outranked"  # a higher-ranked incident of the same host acts first (down > damaged > overloaded)
    # A host out of service is reinstalled (remediator/reprovision.py): its phases, in order.
    REPROVISION_BOOT_DEVICE = "reprovision_boot_device"  # next boot: the network, once
    REPROVISION_POWER_CYCLE = "reprovision_power_cycle"  # cycled (or powered on when off)
    REPROVISION_HOOK = "reprovision_hook"  # the provisioning hook asked the installer
    REPROVISION_WAITING = "reprovision_waiting"  # until libvirt answers, checks ok, no stale domains
    REPROVISION_ACTIVATING = "reprovision_activating"  # activated exactly as an operator would
    # Shared.
    HELD = "held"  # storm hold: too many hosts out at once, nothing automatic happens
    FAILED = "failed"  # gave up; open until an operator retries or closes, or the alert resolves
    # Terminal: the incident is closed.
    RECOVERED = "recovered"
    DISMISSED = "dismissed"  # nothing to do (stale alert, VM already running, host in maintenance)
    CLOSED_BY_OPERATOR = "closed_by_operator"


TERMINAL_STATES = frozenset({State.RECOVERED, State.DISMISSED, State.CLOSED_BY_OPERATOR})
# States in which a host-down incident waits for its host to be known off: an operator's confirm-off applies.
WAITING_FOR_OFF = frozenset({State.HOST_VERIFYING, State.HOST_FENCING, State.HOST_FENCE_WAITING, State.HELD})


class EventKind(StrEnum):
    ALERT_FIRING = "alert_firing"  # the subject's alert again (repeat, HA peer, new startsAt)
    ALERT_RESOLVED = "alert_resolved"
    # Verification results (of verify_vm / verify_host).
    VM_RUNNING = "vm_running"  # it runs somewhere reachable (detail: hosts)
    VM_NOT_RUNNING = "vm_not_running"  # its host answers and it runs on no reachable host
    HOST_UNREACHABLE = "host_unreachable"  # libvirt on the (VM's) host does not answer
    HOST_REACHABLE = "host_reachable"
    # Results of every other step action. detail: action (kind), detail (text), and flags below.
    ACTION_OK = "action_ok"
    ACTION_FAILED = "action_failed"  # flags: host_unusable, host_unreachable
    RETRY = "retry"  # a schedule_retry timer fired (detail: state it was set in)
    HOST_CHANGED = "host_changed"  # the condition or the open incidents of the incident's host changed
    STORM_RELEASED = "storm_released"  # the share of hosts out dropped, or an operator released
    OPERATOR_CONFIRM_OFF = "operator_confirm_off"  # an operator made sure the host is off
    OPERATOR_RETRY = "operator_retry"  # start the ladder again
    OPERATOR_CLOSE = "operator_close"


class ActionKind(StrEnum):
    VERIFY_VM = "verify_vm"
    START_VM = "start_vm"  # in place, on its own host
    START_VM_ELSEWHERE = "start_vm_elsewhere"  # placement picks, the origin excluded
    REBUILD_VM = "rebuild_vm"  # stale definitions removed, defined anew from the stored XML (disk from its
    # base image) on a placed host that did not fail it, then started (remediator/rebuild.py); params: exclude
    HANDLE_IO_ERROR = "handle_io_error"  # a VM paused on an I/O error: wait, resume, or restart elsewhere
    VERIFY_HOST = "verify_host"
    FENCE_HOST = "fence_host"
    EVACUATE_HOST = "evacuate_host"
    CORDON_HOST = "cordon_host"
    MIGRATE_AWAY = "migrate_away"
    REBALANCE_HOST = "rebalance_host"
    SCHEDULE_RETRY = "schedule_retry"  # params: after_s, event, state
    RAISE_FAILED = "raise_failed"  # the give-up metric and log
    SET_BOOT_PXE = "set_boot_pxe"  # next boot from the network, once, through the host's power device
    POWER_CYCLE = "power_cycle"  # unless the once-override is already consumed (it booted): never twice
    CALL_HOOK = "call_hook"  # the provisioning hook (HTTP request or command)
    CHECK_READY = "check_ready"  # libvirt answers, every check ok since the cycle, no stale domains
    ACTIVATE_REINSTALLED = "activate_reinstalled"  # hostlife.activate, as an operator's request


# The action whose result moves each working state on. States absent here wait for a timer or
# an operator, and have no result to expect.
STEP_ACTION: Mapping[State, ActionKind] = {
    State.VM_VERIFYING: ActionKind.VERIFY_VM,
    State.VM_RESTARTING: ActionKind.START_VM,
    State.VM_RELOCATING: ActionKind.START_VM_ELSEWHERE,
    State.VM_REBUILDING: ActionKind.REBUILD_VM,
    State.VM_IO_HANDLING: ActionKind.HANDLE_IO_ERROR,
    State.HOST_VERIFYING: ActionKind.VERIFY_HOST,
    State.HOST_FENCING: ActionKind.FENCE_HOST,
    State.HOST_EVACUATING: ActionKind.EVACUATE_HOST,
    State.HOST_DRAINING: ActionKind.MIGRATE_AWAY,
    State.HOST_REBALANCING: ActionKind.REBALANCE_HOST,
    State.REPROVISION_BOOT_DEVICE: ActionKind.SET_BOOT_PXE,
    State.REPROVISION_POWER_CYCLE: ActionKind.POWER_CYCLE,
    State.REPROVISION_HOOK: ActionKind.CALL_HOOK,
    State.REPROVISION_WAITING: ActionKind.CHECK_READY,
    State.REPROVISION_ACTIVATING: ActionKind.ACTIVATE_REINSTALLED,
}

# Host incidents meet by precedence: a higher rank acts, a lower one waits (OUTRANKED) or is not
# opened. Maintenance is an operator's: a host in maintenance opens no alert's incident at all.
RANK: Mapping[Remediation, int] = {
    Remediation.HOST_DOWN: 3, Remediation.HOST_DAMAGED: 2, Remediation.HOST_OVERLOADED: 1,
    Remediation.HOST_MAINTENANCE: 0,
}


def outranks(kind: Remediation, other: Remediation) -> bool:
    return RANK.get(kind, 0) > RANK.get(other, 0)


_RESULT_EVENTS = frozenset({
    EventKind.VM_RUNNING, EventKind.VM_NOT_RUNNING, EventKind.HOST_UNREACHABLE,
    EventKind.HOST_REACHABLE, EventKind.ACTION_OK, EventKind.ACTION_FAILED,
})


# The actions that try the VM on one host: a failure names that host (`tried`; a restart's is its own).
_TRIES_A_HOST = frozenset({ActionKind.START_VM, ActionKind.START_VM_ELSEWHERE, ActionKind.REBUILD_VM})


def failed_hosts(incident: Incident, event: Event) -> list[str]:
    """The hosts that failed the VM so far, in order, with the one this event reports. The rebuild rung
    excludes every one of them; an operator's retry starts the ladder, and the list, over."""
    if event.kind == EventKind.OPERATOR_RETRY:
        return []
    known = list((incident.data or {}).get("failed_hosts") or ())
    action = event.detail.get("action")
    if event.kind == EventKind.ACTION_FAILED and action in _TRIES_A_HOST:
        tried = event.detail.get("tried") or (incident.host if action == ActionKind.START_VM else None)
        if tried and tried not in known:
            known.append(tried)
    return known



@dataclass(frozen=True)
class Policy:
    """Attempts per step and backoff; `from_config` builds it from config.policy."""

    verify_attempts: int = 3
    restart_attempts: int = 2  # restart in place
    relocate_attempts: int = 2  # start elsewhere, and each evacuation pass
    rebuild_attempts: int = 1
    fence_attempts: int = 5  # automatic fence tries; after these only an operator moves it on
    migrate_attempts: int = 2  # drain and rebalance passes
    backoff_s: float = 2.0  # wait after the first failed try
    backoff_factor: float = 2.0
    backoff_max_s: float = 60.0
    recheck_s: float = 10.0  # how often a VM waiting for its host's incident, or a host that answered
    # while its alert still fires, is looked at again
    reprovision_ready_s: float = 1800.0  # the waiting phase's timeout (config policy.reprovision.ready_s)
    reprovision_poll_s: float = 5.0  # how often readiness is looked at

    @classmethod
    def from_config(cls, policy: Any) -> "Policy":
        """From config.Policy (attempts.*, backoff.*, timings.verify_retry_s)."""
        a, b = policy.attempts, policy.backoff
        return cls(verify_attempts=a.verify, restart_attempts=a.restart_in_place,
                   relocate_attempts=a.restart_elsewhere, rebuild_attempts=a.rebuild, fence_attempts=a.fence,
                   migrate_attempts=a.migrate, backoff_s=b.initial_s, backoff_factor=b.factor,
                   backoff_max_s=b.max_s, recheck_s=policy.timings.verify_retry_s * 5,
                   reprovision_ready_s=policy.reprovision.ready_s, reprovision_poll_s=policy.reprovision.ready_poll_s)

    def attempts_for(self, state: State) -> int:
        return {
            State.VM_VERIFYING: self.verify_attempts, State.HOST_VERIFYING: self.verify_attempts,
            State.VM_RESTARTING: self.restart_attempts, State.VM_RELOCATING: self.relocate_attempts,
            State.HOST_EVACUATING: self.relocate_attempts, State.VM_REBUILDING: self.rebuild_attempts,
            State.HOST_FENCING: self.fence_attempts, State.HOST_FENCE_WAITING: self.fence_attempts,
            State.HOST_DRAINING: self.migrate_attempts, State.HOST_REBALANCING: self.migrate_attempts,
            # A BMC may drop one request; a power cycle is never repeated by a retry (see POWER_CYCLE).
            State.REPROVISION_BOOT_DEVICE: 2, State.REPROVISION_HOOK: 2, State.REPROVISION_ACTIVATING: 3,
        }.get(state, 1)

    def backoff(self, attempt: int) -> float:
        """Wait after the `attempt`-th try failed (1-based)."""
        return min(self.backoff_max_s, self.backoff_s * self.backoff_factor ** max(0, attempt - 1))


@dataclass(frozen=True)
class Context:
    """What the guards need to know of the world, gathered by the engine before each decision."""

    policy: Policy = field(default_factory=Policy)
    host_condition: HostCondition | None = None  # of the incident's host (for a VM: its last host)
    storm_hold: bool = False
    host_incident_open: bool = False  # a VM's host has its own open host-down incident
    has_definition: bool = False  # a stored XML exists to rebuild the VM from
    outranked: bool = False  # a host incident of higher rank is open for the same host
    dry_run: bool = False  # the engine decides and records, and performs nothing
    reprovisioning: bool = False  # the host has an open reprovision incident: its host alerts are expected
    host_up_since: Any = None  # datetime the host last became up (activated), None when never out

    @property
    def host_fenced(self) -> bool:
        return self.host_condition is HostCondition.FENCED

    @property
    def host_in_maintenance(self) -> bool:
        return self.host_condition is HostCondition.MAINTENANCE


@dataclass(frozen=True)
class Decision:
    next_state: State
    actions: tuple[Action, ...]
    reason: str
    closes: bool = False
    attempts: int = 0  # tries of the step of next_state so far, counting actions issued now
    ignored: bool = False  # the event changes nothing (stale, duplicate, unexpected, closed)
    data: Mapping[str, Any] = field(default_factory=dict)  # merged into Incident.data by the store


Guard = Callable[[Incident, Event, Context], bool]
_FIRST, _NEXT, _KEEP = "first", "next", "keep"  # how a transition sets Decision.attempts


@dataclass(frozen=True)
class Transition:
    guard: Guard
    target: State | None  # None: stay
    actions: tuple[ActionKind, ...]
    reason: str  # formatted with: attempts, max, detail, host, where
    attempts: str = _FIRST

    @property
    def closes(self) -> bool:
        return self.target in TERMINAL_STATES
