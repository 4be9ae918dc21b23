"""How an action ends (the event it feeds back), and the never-twice check every start goes through.

Shared by the actions (remediator/actions.py), the rebuild rung (remediator/rebuild.py) and the
migrations, so that no module that starts a VM has its own idea of "safe to start", nor of what a start
refused by the disk lease means (`locked_outcome`: it runs somewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from typing import TYPE_CHECKING, Any, Mapping

from remediator.edges.libvirt import DiskLocked, DomainError, HostUnreachable
from remediator.fsm import EventKind as E

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How an action ended, as the event it feeds back."""

    event: E
    ok: bool
    detail: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # hosts, host_unreachable, blocked_by, host_unusable
    data: Mapping[str, Any] = field(default_factory=dict)  # for Incident.data (placement, load source, moves)


def before_a_start(e: "Engine", uuid: str, name: str, origin: str) -> tuple[Outcome | None, list[str]]:
    """Never twice: (the outcome when the VM must not be started now, else None; the hosts that
    could not be asked). Already running anywhere is done; an unreachable, unfenced host that had it
    blocks the start. Called under the VM's lock."""
    running, unknown = e.world.find_running(uuid)
    if running:
        return Outcome(E.ACTION_OK, True, f"already running on {', '.join(running)}", {"hosts": running}), unknown
    blockers = e.world.may_still_run_it(uuid, unknown, home=origin)
    if blockers:
        return Outcome(E.ACTION_FAILED, False,
                       f"{', '.join(blockers)} does not answer and is not fenced: it may still run {name}",
                       {"host_unreachable": origin in blockers, "blocked_by": blockers}), unknown
    return None, unknown


@dataclass(frozen=True)
class Placement:
    """Where a VM that may be started goes: `dst` None when no host takes it (`why`)."""

    dst: str | None
    unknown: list[str]  # hosts that could not be asked
    why: str
    note: str  # the load source's note (Prometheus unavailable, ...)
    data: Mapping[str, Any]  # for Incident.data: placement, load source


def refuse_or_place(e: "Engine", vm: Any, origin: str, exclude: set[str]) -> tuple[Outcome | None, Placement]:
    """Under the VM's lock, before any start elsewhere: the never-twice check, then placement away from
    `exclude` and from every host that could not be asked. (the refusal, else None; the placement)"""
    refused, unknown = before_a_start(e, vm.uuid, vm.name, origin)
    if refused:
        return refused, Placement(None, unknown, "", "", {})
    plan, caps = e.world.place([vm], exclude | set(unknown))
    dst = plan.assignments.get(vm.uuid)
    return None, Placement(dst, unknown, plan.unplaced.get(vm.uuid, ""), caps.note,
                           {"placement": {vm.uuid: dst} if dst else {}, "load_source": caps.load_source})


def locked_outcome(e: "Engine", dst: str, uuid: str, err: DiskLocked, *, undefine: bool) -> Outcome:
    """A start refused by the disk lease: the VM runs somewhere. A copy just defined on another host
    (undefine) never ran: it goes. No retry, no rebuild: the FSM ends the incident on disk_locked."""
    if undefine:
        try:
            e.hv.undefine(dst, uuid)
        except (HostUnreachable, DomainError) as undefine_err:
            log.warning("could not undefine the refused copy of %s on %s: %s", uuid, dst, undefine_err)
    return Outcome(E.ACTION_OK, True, f"not started on {dst}, its disk is locked ({err})", {"disk_locked": True})
