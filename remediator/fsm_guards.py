"""The incident table's guards: named so that the table in remediator/fsm.py reads as the specification.

Pure predicates over (incident, event, context); fsm.py imports them all.
"""

from __future__ import annotations

from remediator.fsm_vocabulary import Context, State
from remediator.model import Event, HostCondition, Incident, Remediation

# Where `decide` keeps whether the incident's alert is resolved (and did not fire again since).
ALERT_RESOLVED_KEY = "alert_resolved"


def always(i: Incident, e: Event, c: Context) -> bool:
    return True


def dry_run(i: Incident, e: Event, c: Context) -> bool:
    return c.dry_run


def storm_hold(i: Incident, e: Event, c: Context) -> bool:
    return c.storm_hold


def host_in_maintenance(i: Incident, e: Event, c: Context) -> bool:
    return c.host_in_maintenance


def host_fenced(i: Incident, e: Event, c: Context) -> bool:
    return c.host_fenced


def host_fenced_and_no_host_incident(i: Incident, e: Event, c: Context) -> bool:
    return c.host_fenced and not c.host_incident_open


def attempts_left(i: Incident, e: Event, c: Context) -> bool:
    return i.attempts < c.policy.attempts_for(State(i.state))


def blocked_by_other_hosts(i: Incident, e: Event, c: Context) -> bool:
    """Another host where the VM is or was defined does not answer and is not fenced (`blocked_by`,
    found by the action): it may run the VM there."""
    return bool(set(e.detail.get("blocked_by") or ()) - {i.host})


def host_may_still_run_it(i: Incident, e: Event, c: Context) -> bool:
    """The VM's host was found unreachable or is believed down, and it is not fenced (or its own
    incident is still evacuating it), or another host that had it does not answer: starting the VM
    elsewhere could make it run twice."""
    if blocked_by_other_hosts(i, e, c):
        return True
    unreachable = bool(e.detail.get("host_unreachable")) or c.host_condition is HostCondition.DOWN
    return unreachable and not host_fenced_and_no_host_incident(i, e, c)


def only_fenced_host_unreachable(i: Incident, e: Event, c: Context) -> bool:
    return host_fenced_and_no_host_incident(i, e, c) and not blocked_by_other_hosts(i, e, c)


def alert_resolved(i: Incident, e: Event, c: Context) -> bool:
    """The incident's alert resolved (and did not fire again since): recorded by `decide`."""
    return bool((i.data or {}).get(ALERT_RESOLVED_KEY))


def outranked(i: Incident, e: Event, c: Context) -> bool:
    return c.outranked


def attempts_left_and_host_usable(i: Incident, e: Event, c: Context) -> bool:
    return attempts_left(i, e, c) and not e.detail.get("host_unusable") and not e.detail.get("host_unreachable")


def has_definition(i: Incident, e: Event, c: Context) -> bool:
    return c.has_definition


def disk_locked(i: Incident, e: Event, c: Context) -> bool:
    """The start was refused because its disk is leased or locked by another QEMU: it runs somewhere."""
    return bool(e.detail.get("disk_locked"))


def host_local_disk(i: Incident, e: Event, c: Context) -> bool:
    """It cannot start elsewhere with its disk (host-local): only a rebuild from its base image can."""
    return bool(e.detail.get("host_local")) and c.has_definition


def left_waiting(i: Incident, e: Event, c: Context) -> bool:
    return bool(e.detail.get("waiting"))


def is_vm(i: Incident, e: Event, c: Context) -> bool:
    return i.kind is Remediation.VM_DOWN


def is_host_down(i: Incident, e: Event, c: Context) -> bool:
    return i.kind is Remediation.HOST_DOWN


def is_host_damaged(i: Incident, e: Event, c: Context) -> bool:
    return i.kind is Remediation.HOST_DAMAGED


def is_overload(i: Incident, e: Event, c: Context) -> bool:
    return i.kind is Remediation.HOST_OVERLOADED


def is_maintenance(i: Incident, e: Event, c: Context) -> bool:
    return i.kind is Remediation.HOST_MAINTENANCE


# A host incident of lower rank waits while a higher one acts, and ends when its host is fenced
# (the host-down incident evacuated it); when the higher one ends otherwise, it goes on.
_LOWER_HOST_KINDS = (Remediation.HOST_DAMAGED, Remediation.HOST_OVERLOADED, Remediation.HOST_MAINTENANCE)


def lower_kind_and_host_fenced(i: Incident, e: Event, c: Context) -> bool:
    return i.kind in _LOWER_HOST_KINDS and c.host_fenced


def lower_kind_outranked(i: Incident, e: Event, c: Context) -> bool:
    return i.kind in _LOWER_HOST_KINDS and c.outranked
