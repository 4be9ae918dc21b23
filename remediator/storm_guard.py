"""What the remediator saw of each host's reachability, and the storm hold it decides.

A host that answers again is down no longer (its condition goes back through hostlife); every change
of reachability or condition re-evaluates the storm policy (remediator/storm.py, pure), which holds
every automatic fence and evacuation while more than the configured share of hosts are out, and
releases the held incidents when it lifts. Split from the engine along this seam: it only reads the
world and store and feeds events back through the engine.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from remediator import fsm, storm
from remediator.fsm import EventKind as E
from remediator.hostfsm import HostEvent
from remediator.model import AlertStatus, Event, HostCondition, Remediation

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)

OUT_CONDITIONS = frozenset({HostCondition.DOWN, HostCondition.FENCED, HostCondition.CORDONED})
_HOST_ALERTS = frozenset({Remediation.HOST_DOWN, Remediation.HOST_DAMAGED})


class StormGuard:
    def __init__(self, engine: "Engine"):
        self.engine = engine

    def probe_hosts(self) -> dict[str, bool]:
        """Ask every host that is not fenced or in maintenance, before any fence: a second host that
        died with the first may not have its alert in yet (each host's alert is its own Alertmanager
        group), and the storm check must count it before the first host's VMs move."""
        e = self.engine
        answers = e.world.probe_hosts()
        self.observed_reachability(set(answers), {n for n, ok in answers.items() if not ok})
        return answers

    def observed_reachability(self, asked: set[str], unreachable: set[str]) -> None:
        """What the remediator just saw: a down host that answers again is down no longer."""
        e = self.engine
        changed = e.world.note_reachability(asked, unreachable)
        conditions = e.world.conditions()
        for host in sorted(asked - unreachable):
            if conditions.get(host) is HostCondition.DOWN:
                e.hosts.set_condition(host, HostEvent.ANSWERS, "libvirt answers the remediator again")
        if changed:
            self.check()

    def active(self) -> bool:
        e = self.engine
        return bool((e.store.storm_hold() or {}).get("active"))

    def check(self) -> bool:
        """Hold when more than the configured share of hosts are out; release held incidents when not.

        Out: down, fenced or cordoned, unreachable when the remediator last asked it, or with a host
        alert still waiting in the store (so that two hosts failing together are held together,
        whatever order their alerts arrive in)."""
        e = self.engine
        with e.decide_lock:
            names = [h.name for h in e.config.hosts]
            conditions = e.world.conditions()
            out = {n for n in names if conditions.get(n) in OUT_CONDITIONS}
            out |= {n for n in e.world.unreachable() if conditions.get(n) is not HostCondition.MAINTENANCE}
            out |= {sa.alert.host for sa in e.store.pending_alerts()
                    if sa.alert.remediation in _HOST_ALERTS and sa.alert.status is AlertStatus.FIRING}
            release = e.store.storm_release()
            verdict = storm.evaluate(names, out, e.config.policy.storm.max_unhealthy_share, release)
            if release is not None and not verdict.release_stands:
                e.store.set_storm_release(None)
            previous = e.store.storm_hold() or {}
            was_on = bool(previous.get("active"))
            if was_on != verdict.active or previous.get("unhealthy") != list(verdict.out):
                e.store.set_storm_hold(verdict.active, verdict.reason, list(verdict.out),
                                       since=e.clock() if was_on != verdict.active
                                       else previous.get("since", e.clock()))
                if verdict.active and not was_on:
                    log.warning("storm hold: %s; no automatic fencing or evacuation", verdict.reason)
            e.metrics.set_storm(verdict.active, verdict.share)
            if was_on and not verdict.active:
                log.warning("storm hold lifted: %s", verdict.reason)
                for incident in e.store.list_incidents(open_only=True, limit=100000):
                    if incident.state == fsm.State.HELD:
                        e.handle_event(incident.id, Event(E.STORM_RELEASED, e.clock(),
                                                          {"reason": verdict.reason}))
            return verdict.active
