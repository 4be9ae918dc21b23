"""The host condition state machine: what a host is, and what moves it, as a table. Pure.

Incidents say what is happening to a host now; a host's condition says what the remediator believes
of it between incidents, and decides whether placement may use it (only UP hosts take VMs):

    up          schedulable
    cordoned    a damage check failed: takes no new VMs, its VMs are drained (until activated)
    down        the remediator cannot reach its libvirt and it is not proven off (until it answers,
                is fenced, or is activated)
    fenced      proven off: a fence agent's status said off, or an operator confirmed it (until
                activated: the operator has made sure it is repaired and its old VMs will not start)
    maintenance an operator took it out; its VMs are drained (until maintenance off)

Every condition but `up` has an event that leaves it, so nothing the service sets sticks for good
(`test_hostfsm.py` checks that every condition reaches `up`). A host that goes down remembers what
it was (`prior`): a cordoned host that blinks on the network comes back cordoned, not schedulable.

The engine calls `apply(condition, prior, event)` and records the result; the result says when an
event does not apply (for instance an operator's confirm-off for a host in maintenance).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Mapping

from remediator.model import HostCondition

C = HostCondition


class HostEvent(StrEnum):
    UNREACHABLE = "unreachable"  # the remediator's own verification could not reach its libvirt
    ANSWERS = "answers"  # its libvirt answers the remediator again
    FENCED = "fenced"  # a fence agent turned it off and its status says off
    CONFIRMED_OFF = "confirmed_off"  # an operator made sure it is off
    DAMAGED = "damaged"  # a damage incident cordons it
    ACTIVATED = "activated"  # an operator returned it to service (its libvirt answers, its checks pass)
    MAINTENANCE_ON = "maintenance_on"
    MAINTENANCE_OFF = "maintenance_off"


PRIOR = "prior"  # target: back to the condition the host had before it went down

# (condition, event) -> next condition. Pairs not listed do not apply: the condition stays.
TABLE: Mapping[tuple[HostCondition, HostEvent], HostCondition | str] = {
    (C.UP, HostEvent.UNREACHABLE): C.DOWN,
    (C.UP, HostEvent.FENCED): C.FENCED,
    (C.UP, HostEvent.CONFIRMED_OFF): C.FENCED,
    (C.UP, HostEvent.DAMAGED): C.CORDONED,
    (C.UP, HostEvent.MAINTENANCE_ON): C.MAINTENANCE,

    (C.CORDONED, HostEvent.UNREACHABLE): C.DOWN,
    (C.CORDONED, HostEvent.FENCED): C.FENCED,
    (C.CORDONED, HostEvent.CONFIRMED_OFF): C.FENCED,
    (C.CORDONED, HostEvent.ACTIVATED): C.UP,
    (C.CORDONED, HostEvent.MAINTENANCE_ON): C.MAINTENANCE,

    (C.DOWN, HostEvent.ANSWERS): PRIOR,
    (C.DOWN, HostEvent.FENCED): C.FENCED,
    (C.DOWN, HostEvent.CONFIRMED_OFF): C.FENCED,
    (C.DOWN, HostEvent.DAMAGED): C.DOWN,  # down outranks damaged; it comes back cordoned (prior)
    (C.DOWN, HostEvent.ACTIVATED): C.UP,

    (C.FENCED, HostEvent.ACTIVATED): C.UP,

    (C.MAINTENANCE, HostEvent.MAINTENANCE_OFF): C.UP,
}


@dataclass(frozen=True)
class Change:
    condition: HostCondition
    prior: HostCondition | None  # what a down host returns to when it answers
    applies: bool  # False: the event does not apply to this condition, nothing changed
    changed: bool  # the condition (or the memory of a down host's prior condition) changed
    reason: str


def apply(condition: HostCondition, prior: HostCondition | None, event: HostEvent) -> Change:
    """The host's condition after `event`; `prior` is only meaningful for a down host."""
    target = TABLE.get((condition, event))
    if target is None:
        return Change(condition, prior, False, False, f"{event} does not apply to a host that is {condition}")
    if target == PRIOR:
        target = prior or C.UP
    new_prior = prior
    if target is C.DOWN:
        # Going down remembers what it was; a damage report while down is remembered the same way.
        new_prior = C.CORDONED if event is HostEvent.DAMAGED else (prior if condition is C.DOWN else condition)
    elif target is not C.DOWN:
        new_prior = None
    changed = target is not condition or new_prior != prior
    return Change(HostCondition(target), new_prior, True, changed, f"{condition} -> {target} on {event}")


def ways_back(condition: HostCondition) -> list[HostEvent]:
    """Events that leave `condition` (for the docs, the API's refusals, and the 'no sticky state' test)."""
    return [event for (cond, event), target in TABLE.items() if cond is condition and target != cond]
