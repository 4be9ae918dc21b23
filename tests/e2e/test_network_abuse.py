"""Issue 9 point 9, short: the whole stack through packet loss and partition flaps on one host's link.

The long run (a minute per loss level, the 50 % case ten times) is `make abuse` (bench/network_abuse.py).
Here each level lasts 10 s: enough for the HostDown alert's 5 s `for:` to fire if the loss made
the host look down, and for the remediator's calls to that host to meet broken connections.
"""
from __future__ import annotations

import pytest

from lab.abuse import VMS, Abuse, define_guests

pytestmark = pytest.mark.lab

LOSS_S = 10.0
SETTLE_S = 6.0


def test_the_service_survives_packet_loss_and_partition_flaps_and_does_not_act_below_50_percent(stack_factory):
    lab, stack, sampler = stack_factory(vms=VMS)
    define_guests(lab, stack)  # two protected guests on h1, one on h2 and one on h3
    abuse = Abuse(lab, stack, sampler, "h1")

    phases = [abuse.loss(5, LOSS_S, SETTLE_S), abuse.loss(20, LOSS_S, SETTLE_S)]
    phases.append(abuse.flaps(3, partition_s=3.0, heal_s=2.0, settle=SETTLE_S))
    phases.append(abuse.loss(50, LOSS_S, SETTLE_S))
    for phase in phases:
        print(f"\n{phase.fault} {phase.level}: {phase.seconds} s, link {phase.link}, incidents "
              f"{[(i['subject'], i['state'], i['actions']) for i in phase.incidents]}")

    for phase in phases:
        assert phase.crashed == [], (phase, stack.log_tail())
        assert phase.duplicates == 0, phase
    for phase in phases[:2]:
        assert phase.acting == [], phase  # 5 % and 20 %: nothing fenced, started or moved
        assert phase.link["dropped"] > 0, phase  # the loss was real
