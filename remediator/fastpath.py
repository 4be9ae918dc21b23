"""The fast path: what libvirt tells the remediator before the monitoring stack can.

- A protected VM's crash (libvirt's lifecycle event) is stored as the VM-down alert its rule would
  send, and the engine is woken at once: the same incident, the same ladder, seconds earlier, and
  with Prometheus and Alertmanager down too.
- A host whose connection closed opens its host-down incident early only on positive proof of
  power-off: its libvirt refuses a new connection and its fence device's status says off. The
  incident then verifies and fences as always (an idempotent off).
- The rule's alert that follows joins the fast path's incident as a repeat.

Everything else (damage, overload, a partition, a BMC that says on or does not answer) is the
alert path's, with its `for:` and verification: the fast path only shortens detection.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from remediator.edges.fencing import PowerState, UnknownHost
from remediator.edges.libvirt_events import Crash, HostLost
from remediator.model import Alert, AlertStatus, HostCondition, Incident, Remediation, host_subject
from remediator.store.base import StoreError

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)

FAST_PATH_ALERTNAME = "LibvirtDomainCrashed"
FAST_PATH_HOST_ALERTNAME = "LibvirtHostPoweredOff"
FAST_PATH_JOIN_S = 10.0  # an alert this close to a fast-path incident reports the same fault


class FastPath:
    def __init__(self, engine: "Engine"):
        self.engine = engine

    def run(self) -> None:
        """The fast path's thread: what the watchers queue, in order, until the engine stops."""
        e = self.engine
        while not e.stopping.is_set():
            try:
                crash = e.events.crashes.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(crash, HostLost):
                # Off this thread: the checks take a connect and a fence agent's status.
                threading.Thread(target=self.host_lost, args=(crash.host,), name=f"host-lost {crash.host}",
                                 daemon=True).start()
                continue
            try:
                self.crash_reported(crash)
            except StoreError:
                log.exception("fast path: the crash of %s on %s could not be stored; its alert will come",
                              crash.name, crash.host)

    def crash_reported(self, crash: Crash) -> None:
        """A protected VM's crash, as libvirt's event reported it: stored as the alert its rule would
        send (one way in), and the engine woken at once."""
        e = self.engine
        vm = e.store.get_vm(crash.uuid)
        if e.config.vm(uuid=crash.uuid, name=crash.name) is None and not (vm is not None and vm.protected):
            return
        now = e.clock()
        e.store.record_alerts([Alert(
            fingerprint=f"libvirt-event-{crash.uuid}", status=AlertStatus.FIRING, remediation=Remediation.VM_DOWN,
            alertname=FAST_PATH_ALERTNAME, host=crash.host, starts_at=now, vm=crash.name, uuid=crash.uuid,
            labels={"source": "libvirt_event", "reason": crash.reason},
            annotations={"summary": f"libvirt reported {crash.name} {crash.reason} on {crash.host}"})], now)
        e.notify()

    def _still_fenced_by(self, incident: Incident) -> bool:
        state = self.engine.store.host_states().get(incident.host)
        return state is not None and state.condition is HostCondition.FENCED and state.since >= incident.opened_at

    def host_lost(self, host: str) -> None:
        """The fast path for a host whose connection closed: only positive proof of power-off (its
        libvirt refuses a new connection and its fence device's status says off) opens the host's
        incident now, which then verifies and fences (an idempotent off) as always. Anything else
        (libvirt answers again: a restart; the BMC says on, or does not answer: a partition?) waits
        for the alert path, with its `for:` and verification."""
        e = self.engine
        try:
            if (e.world.condition(host) in (HostCondition.FENCED, HostCondition.MAINTENANCE)
                    or e.store.open_incident_for(host_subject(host)) is not None or e.hv.is_reachable(host)):
                return
            state, run = e.fencer.status(host)
            if state is not PowerState.OFF:
                log.info("fast path: %s lost, its fence device says %s: the alert path decides", host, state)
                return
            now = e.clock()
            e.store.record_alerts([Alert(
                fingerprint=f"libvirt-event-host-{host}", status=AlertStatus.FIRING, remediation=Remediation.HOST_DOWN,
                alertname=FAST_PATH_HOST_ALERTNAME, host=host, starts_at=now,
                labels={"source": "libvirt_event", "proof": "fence device status off"},
                annotations={"summary": f"libvirt's connection to {host} closed and its fence device says off"})],
                now)
            e.notify()
        except (StoreError, UnknownHost, OSError) as err:
            log.warning("fast path: %s lost: %s; the alert path decides", host, err)

    def handled(self, alert: Alert) -> Incident | None:
        """The incident the fast path opened for the fault this (later) alert reports, if any: the
        alert then joins it as a repeat instead of opening a second incident."""
        e = self.engine
        if alert.remediation not in (Remediation.VM_DOWN, Remediation.HOST_DOWN) or (
                alert.labels.get("source") == "libvirt_event"):
            return None
        latest = e.store.latest_incident_for(alert.subject)
        if latest is None or (latest.data or {}).get("opened_by") != "libvirt_event":
            return None
        if alert.remediation is Remediation.HOST_DOWN and not self._still_fenced_by(latest):
            # The fast path's host incident leaves its host fenced until an operator activates it. Once
            # the host is back (or already out again since), a HostDown is a new fault, however soon it
            # comes: joined by time alone, a host cut off 5 s after its activation was never handled
            # (make test). An old outage's alert arriving after the activation opens an incident that
            # finds the host answering: a verification, nothing more.
            return None
        window = timedelta(seconds=FAST_PATH_JOIN_S)
        until = latest.closed_at or e.clock()
        return latest if latest.opened_at - window <= alert.starts_at <= until + window else None
