"""The host condition table, exhaustively: nothing the service sets sticks for good."""

from __future__ import annotations

import itertools

from remediator import hostfsm
from remediator.hostfsm import HostEvent as H
from remediator.model import HostCondition as C


def test_every_condition_reaches_up_by_the_tables_own_events():
    for start in C:
        seen, frontier = {start}, [(start, None)]
        while frontier:
            cond, prior = frontier.pop()
            for event in H:
                change = hostfsm.apply(cond, prior, event)
                if change.applies and change.condition not in seen:
                    seen.add(change.condition)
                    frontier.append((change.condition, change.prior))
        assert C.UP in seen, f"{start} never gets back to up"
        assert start is C.UP or hostfsm.ways_back(start), start


def test_a_down_host_returns_to_what_it_was_and_a_damage_report_while_down_is_remembered():
    down = hostfsm.apply(C.CORDONED, None, H.UNREACHABLE)
    assert (down.condition, down.prior) == (C.DOWN, C.CORDONED)
    assert hostfsm.apply(down.condition, down.prior, H.ANSWERS).condition is C.CORDONED
    blip = hostfsm.apply(C.UP, None, H.UNREACHABLE)
    assert hostfsm.apply(blip.condition, blip.prior, H.ANSWERS).condition is C.UP
    damaged = hostfsm.apply(blip.condition, blip.prior, H.DAMAGED)
    assert (damaged.condition, damaged.prior) == (C.DOWN, C.CORDONED)  # down outranks damaged


def test_events_that_do_not_apply_change_nothing():
    for cond, event in itertools.product(C, H):
        change = hostfsm.apply(cond, None, event)
        if (cond, event) not in hostfsm.TABLE:
            assert not change.applies and not change.changed and change.condition is cond
    assert not hostfsm.apply(C.FENCED, None, H.ANSWERS).applies  # only an operator returns a fenced host
    assert not hostfsm.apply(C.MAINTENANCE, None, H.CONFIRMED_OFF).applies
