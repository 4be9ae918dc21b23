"""A host's life in the engine: its condition moved through `hostfsm`, an operator's activation and
maintenance. The rules are in hostfsm (pure); this module does the checks and I/O around them.

- `set_condition` is the only writer of host conditions. In dry run it says what it would set and
  writes nothing, so a dry run changes no state a real run depends on.
- `activate` returns a repaired host to service (oVirt's "Activate"): only once its libvirt answers
  and its checks pass; before it is schedulable, every protected VM that runs elsewhere is undefined
  on it (or kept shut off with autostart off), its host incidents are closed, its condition is up.
- `maintenance` takes a host out and drains it (an incident of kind host_maintenance live-migrates
  its protected VMs), or returns it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from remediator import hostfsm
from remediator.edges.libvirt import DomainError, HostUnreachable
from remediator.edges.prometheus import PrometheusUnavailable
from remediator.fsm import EventKind as E
from remediator.hostfsm import HostEvent
from remediator.model import HOST_KINDS, Event, HostCondition, Remediation, host_of_subject, host_subject

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """How an operator's request about a host ended: applied, or refused with the reason."""

    ok: bool
    reason: str


class HostLife:
    def __init__(self, engine: "Engine"):
        self.engine = engine

    def set_condition(self, host: str, event: HostEvent, reason: str) -> hostfsm.Change:
        e = self.engine
        state = e.world.host_states().get(host)
        change = hostfsm.apply(state.condition if state else HostCondition.UP, state.prior if state else None,
                               event)
        if not change.applies or not change.changed:
            return change
        if e.config.dry_run:
            log.info("dry run: host %s would be %s (%s); left as it is", host, change.condition, reason)
            return change
        e.store.set_host_state(host, change.condition, reason, e.clock(), change.prior)
        log.info("host %s: %s (%s)", host, change.reason, reason)
        e.storm.check()
        e.host_changed(host)
        return change

    # ---- activate --------------------------------------------------------------------------------

    def activate(self, host: str, by: str, reason: str = "") -> Answer:
        e = self.engine
        condition = e.world.condition(host)
        if condition is HostCondition.UP:
            return Answer(True, f"{host} is up already")
        if HostEvent.ACTIVATED not in hostfsm.ways_back(condition):
            return Answer(False, f"{host} is {condition}: " + (
                "end its maintenance instead (maintenance off)" if condition is HostCondition.MAINTENANCE
                else "it cannot be activated"))
        if not e.hv.is_reachable(host):
            return Answer(False, f"libvirt on {host} does not answer: power it on and repair it first")
        failing = self._failing_checks(host)
        if failing:
            return Answer(False, f"{host} fails its checks ({failing}): repair it first")
        try:
            cleaned = self._clean_protected_vms(host)
        except (HostUnreachable, DomainError) as err:
            return Answer(False, f"could not clean up the VMs defined on {host}: {err}")
        why = f"activated by {by}" + (f": {reason}" if reason else "")
        if e.config.dry_run:
            return Answer(True, f"dry run: would activate {host}; {cleaned}")
        self._close_host_incidents(host, why, by)
        e.world.note_reachability({host}, set())
        self.set_condition(host, HostEvent.ACTIVATED, why)
        return Answer(True, f"{host} is up ({why}); {cleaned}")

    def _failing_checks(self, host: str) -> str:
        """The host's failing damage checks as Prometheus has them ('' when none, or no data)."""
        source = self.engine.load_source
        if source is None:
            return ""
        try:
            checks = source.host_checks(host)
        except PrometheusUnavailable as err:
            log.warning("activate %s: checks not known (%s); libvirt answers, going on", host, err)
            return ""
        return ", ".join(sorted(name for name, ok in checks.items() if not ok))

    def _clean_protected_vms(self, host: str) -> str:
        """Undefine every protected VM that runs elsewhere; keep the others shut off, autostart off."""
        e = self.engine
        undefined, kept = [], []
        for domain in e.hv.domains(host):
            vm = e.store.get_vm(domain.uuid)
            if vm is None or not vm.protected:
                continue
            running, _ = e.world.find_running(domain.uuid)
            elsewhere = [h for h in running if h != host]
            if e.config.dry_run:
                (undefined if elsewhere else kept).append(vm.name)
                continue
            with e.vm_lock(domain.uuid):
                if elsewhere:
                    if domain.alive:
                        log.error("activate %s: %s runs here and on %s: destroying this copy", host, vm.name,
                                  ", ".join(elsewhere))
                        e.hv.destroy(host, domain.uuid)
                    e.hv.undefine(host, domain.uuid)
                    e.store.note_vm_location(domain.uuid, host, False, e.clock())
                    undefined.append(vm.name)
                else:
                    e.hv.set_autostart(host, domain.uuid, False)
                    kept.append(vm.name)
        return (f"undefined {len(undefined)} protected VM(s) that run elsewhere ({', '.join(undefined) or '-'}); "
                f"kept {len(kept)} (autostart off, none started: {', '.join(kept) or '-'})")

    def _close_host_incidents(self, host: str, why: str, by: str, only: Remediation | None = None) -> None:
        e = self.engine
        for incident in e.store.list_incidents(open_only=True, limit=100000):
            if (incident.kind in HOST_KINDS and host_of_subject(incident.subject) == host
                    and only in (None, incident.kind)):
                e.handle_event(incident.id, Event(E.OPERATOR_CLOSE, e.clock(), {"by": by, "detail": why}))

    # ---- maintenance -----------------------------------------------------------------------------

    def maintenance(self, host: str, on: bool, by: str, reason: str = "") -> Answer:
        e = self.engine
        why = f"maintenance {'on' if on else 'off'} by {by}" + (f": {reason}" if reason else "")
        condition = e.world.condition(host)
        event = HostEvent.MAINTENANCE_ON if on else HostEvent.MAINTENANCE_OFF
        if on and condition is HostCondition.MAINTENANCE:
            return Answer(True, f"{host} is in maintenance already")
        if hostfsm.apply(condition, None, event).condition is condition:
            return Answer(False, f"{host} is {condition}: " + (
                "maintenance is for hosts that are up or cordoned; a down or fenced host has an incident to finish"
                if on else "it is not in maintenance"))
        if e.config.dry_run:
            return Answer(True, f"dry run: would set {host} {event}")
        # Maintenance takes over a damaged or overloaded host's moves; off ends the drain.
        self._close_host_incidents(host, why, by, only=None if on else Remediation.HOST_MAINTENANCE)
        self.set_condition(host, event, why)
        if on:
            incident = e.open_incident(Remediation.HOST_MAINTENANCE, host_subject(host, Remediation.HOST_MAINTENANCE),
                                       host, {"by": by, "reason": reason})
            return Answer(True, f"{host} is in maintenance; incident {incident} drains it")
        return Answer(True, f"{host} is up ({why})")
