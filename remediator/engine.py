"""The engine: turns events into fsm decisions and decisions into actions, durably.

For every event (a stored alert, an action's result, a timer, an operator's request):
  1. gather the Context the guards need and ask `fsm.decide` (or `fsm.start` for a new subject);
  2. persist the transition and one intent per action in one transaction, *before* anything is done;
  3. perform each action (remediator/actions.py) in the runner's pool, bounded by
     `policy.max_concurrent_actions`; every action looks at the world first, so performing it
     again after a crash is safe (a VM running anywhere is never started again);
  4. record the result on the intent and feed it back as the next event.

Decisions are taken one at a time (one lock); actions run concurrently. A per-VM lock makes sure
that two actions never start the same UUID at once. The engine's loop is the one consumer of
pending alerts and operator requests (the scheduler's tick only wakes it). After a restart
`resume()` re-arms timers, performs again the intents that have no result (they check the world
first), and re-issues the actions of a transition whose intents were never written.

Around it: `world` (what the hosts look like), `hosts` (host conditions, activate, maintenance),
`migrations` (moving running VMs), `runner` (pool, timers, timeouts), and `storm`
(remediator/storm_guard.py: what the remediator saw of each host, and the storm policy of
remediator/storm.py re-evaluated whenever a host's condition or reachability changes).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from remediator import actions, fsm, reconcile, resuming
from remediator.actions import Outcome
from remediator.fsm import ActionKind as A
from remediator.fsm import EventKind as E
from remediator.hostlife import Answer, HostLife
from remediator.fastpath import FastPath
from remediator.migrations import Migrations
from remediator.operator import OperatorRequests
from remediator.edges.power import PowerDevices
from remediator.reprovision_actions import Reprovisions
from remediator.model import (HOST_KINDS, VM_KINDS, Action, Alert, AlertStatus, Event, HostCondition, Incident,
                              Remediation, host_of_subject, host_subject)
from remediator.runner import Runner
from remediator.storm_guard import StormGuard
from remediator.store.base import Store, StoreError
from remediator.world import World

log = logging.getLogger(__name__)



def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def opened_by(alert: Alert) -> str:
    """Which path reported it first: the fast path, the reconcile pass, or the alert path."""
    return {"libvirt_event": "libvirt_event", "reconcile": "reconcile"}.get(alert.labels.get("source", ""), "alert")


class Engine:
    def __init__(self, config, store: Store, hypervisors, fencer, load_source, metrics, *,
                 clock: Callable[[], datetime] = utcnow, events=None, power=None):
        self.config = config
        self.store = store
        self.hv = hypervisors
        self.fencer = fencer
        self.power = power if power is not None else PowerDevices(config.power_devices)  # boot control
        self.gate: Callable[[str], None] = lambda what: None  # leadership.check_dispatch under a lease
        self.load_source = load_source
        self.metrics = metrics
        self.clock = clock
        self.policy = fsm.Policy.from_config(config.policy)
        self.world = World(config, store, hypervisors, load_source, clock,
                           watchers=events)
        self.hosts = HostLife(self)
        self.migrations = Migrations(self)
        self.requests = OperatorRequests(self)
        self.fast_path = FastPath(self)
        self.reprovisions = Reprovisions(self)
        self.storm = StormGuard(self)
        self.runner = Runner(config, store, metrics, clock, perform=lambda a: actions.perform(self, a),
                             on_result=self._feed_back, on_event=self.handle_event)
        self.decide_lock = threading.RLock()  # decisions one at a time (operator requests take it too)
        self._vm_locks: dict[str, threading.Lock] = {}
        self._vm_locks_guard = threading.Lock()
        self.stopping = threading.Event()
        self._loop: threading.Thread | None = None
        self.events = events  # edges.libvirt_events.DomainEvents: the fast path, None when off
        self._events_thread: threading.Thread | None = None

    # ---- the ways in ------------------------------------------------------------------------------

    def handle_pending_alerts(self) -> int:
        """Turn stored, unhandled alerts into incidents or events; returns how many were handled."""
        pending = self.store.pending_alerts()
        self.storm.check()
        for sa in pending:
            self._handle_alert(sa.id, sa.alert, sa.received_at)
        return len(pending)

    def handle_pending_events(self) -> int:
        """Operator requests queued by the API, oldest first; each ends applied, ignored or refused."""
        events = self.store.pending_events()
        for qe in events:
            outcome, reason = self.requests.handle(qe.subject, qe.event)
            self.store.mark_event(qe.id, outcome, reason)
        return len(events)

    def handle_event(self, incident_id: int, event: Event) -> fsm.Decision:
        with self.decide_lock:
            incident = self.store.get_incident(incident_id)
            decision = fsm.decide(incident, event, self.context_for(incident))
            if decision.ignored and not incident.is_open:
                return decision
            intents = self._persist(incident, event, decision)
        self._dispatch(incident_id, intents)
        if decision.closes and incident.kind in HOST_KINDS:
            self.host_changed(incident.host, exclude=incident_id)  # lower-ranked incidents may go on now
        return decision

    def open_incident(self, kind: Remediation, subject: str, host: str, data: Mapping[str, Any],
                      opened_by: str = "operator") -> int | None:
        """An incident the engine opens itself (an operator's maintenance, a reprovision); None when not opened."""
        with self.decide_lock:
            decision = fsm.open_incident(kind, subject, host, self.context_for(None, host, kind=kind),
                                         at=self.clock(), data=data)
            if decision.closes:
                return None
            event = Event(E.ALERT_FIRING, self.clock(), dict(data))
            with self.store.atomic():
                incident = self.store.create_incident(subject, kind, host, None, None, decision.next_state,
                                                      decision.reason, self.clock(),
                                                      data={**data, **decision.data, "opened_by": opened_by})
                intents = self._persist(incident, event, decision, opening=True)
        self.metrics.incident_opened_by(opened_by)
        self._dispatch(incident.id, intents)
        return incident.id

    def operator_confirm_off(self, host: str, by: str = "operator", reason: str = "") -> Answer:
        """An operator made sure `host` is off (the API queues the same request)."""
        return self.requests.confirm_off(host, Event(E.OPERATOR_CONFIRM_OFF, self.clock(), {"by": by, "reason": reason}))

    def activate_host(self, host: str, by: str = "operator", reason: str = "") -> Answer:
        return self.hosts.activate(host, by, reason)

    def set_maintenance(self, host: str, on: bool, by: str = "operator", reason: str = "") -> Answer:
        return self.hosts.maintenance(host, on, by, reason)

    def release_storm(self, by: str = "operator", reason: str = "") -> None:
        """Lift the storm hold for the hosts out now; a host failing beyond them holds again."""
        hold = self.store.storm_hold() or {}
        self.store.set_storm_release({"at": self.clock(), "by": by, "reason": reason,
                                      "hosts": hold.get("unhealthy", [])})
        self.storm.check()

    def tick(self) -> None:
        """One pass of everything due: queued operator requests, pending alerts, timers, timeouts."""
        self.handle_pending_events()
        self.handle_pending_alerts()
        self.runner.run_due()

    def sync_inventory(self) -> reconcile.SyncReport:
        """Scheduler job: refresh the stored definitions and locations of the protected VMs; it asks
        every host, so it also refreshes which hosts the remediator cannot reach (the storm check)."""
        report = reconcile.sync_inventory(self.config, self.store, self.hv, self.clock())
        self.storm.observed_reachability({h.name for h in self.config.hosts}, set(report.unreachable))
        self.metrics.inventory_synced(time.time())
        return report

    def reconcile(self) -> list[reconcile.Finding]:
        """Scheduler job: catch what alerts missed; a VM down with no alert is handled by the loop."""
        findings = reconcile.reconcile(self.config, self.store, self.hv, self.clock())
        if any(f.kind == "vm_down_without_incident" for f in findings):
            self.notify()
        return findings

    def notify(self) -> None:
        """Wake the background loop (the web layer and the tick timer call this)."""
        self.runner.wake.set()

    # ---- lifecycle --------------------------------------------------------------------------------

    def resume(self) -> None:
        """After a (re)start: finish what a previous run left half done, checking the world first."""
        with self.decide_lock:
            for intent in self.store.unfinished_intents():
                resuming.resume_intent(self, intent)
            for incident in self.store.list_incidents(open_only=True, limit=100000):
                resuming.reissue_lost_actions(self, incident)
        self.storm.check()
        self.handle_pending_events()
        self.handle_pending_alerts()

    def start(self) -> None:
        """Sync the inventory, resume, then run the loop: pending alerts and requests on notify, timers
        when due. The first sync comes first so that a host lost before the first timer run still has
        its VMs' definitions to restart them from."""
        self.stopping.clear()
        if not self.runner.wait_idle(30.0):  # a replica leading again: its earlier term's actions end first
            log.warning("actions of an earlier term still running after 30 s; resuming anyway (they call nothing)")
        report = self.sync_inventory()
        log.info("inventory: %d protected VMs (%d updated)%s", report.protected, report.updated,
                 f"; unreachable: {', '.join(report.unreachable)}" if report.unreachable else "")
        self.resume()
        self._loop = threading.Thread(target=self._run_loop, name="engine", daemon=True)
        self._loop.start()
        if self.events is not None:
            self.events.start()
            self._events_thread = threading.Thread(target=self.fast_path.run, name="fast-path", daemon=True)
            self._events_thread.start()

    def _run_loop(self) -> None:
        while not self.stopping.is_set():
            self.runner.wake.wait(timeout=self.runner.seconds_to_next(default=1.0))
            self.runner.wake.clear()
            if self.stopping.is_set():
                break
            try:
                self.tick()
            except StoreError:
                log.exception("engine loop: the store failed; trying again in a second")
                time.sleep(1.0)

    def stop_acting(self) -> None:
        """Step down (the lease is lost) or stop: no loop, no timers, no event watchers. An action still
        running fails its next call (the edges' gate, leadership.check_dispatch) and leaves its intent to the next resume."""
        self.stopping.set()
        self.runner.wake.set()
        if self.events is not None:
            self.events.stop()
        for thread in (self._loop, self._events_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=10)
        self.runner.drop_timers()

    def shutdown(self, wait: bool = True) -> None:
        self.stop_acting()
        self.runner.shutdown(wait)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        return self.runner.wait_idle(timeout)

    def run_timers(self) -> int:
        return self.runner.run_due()

    def pending_timers(self) -> list[tuple[float, int, Event]]:
        return self.runner.pending()

    def fire_timers_now(self) -> int:
        """Make every armed timer due (tests: skip the backoff wait) and run them."""
        self.runner.make_all_due()
        return self.runner.run_due()

    # ---- deciding ---------------------------------------------------------------------------------

    def context_for(self, incident: Incident | None, host: str | None = None, vm_uuid: str | None = None,
                    kind: Remediation | None = None) -> fsm.Context:
        host = incident.host if incident else host
        vm_uuid = incident.vm_uuid if incident else vm_uuid
        kind = incident.kind if incident else kind
        vm = self.store.get_vm(vm_uuid) if vm_uuid else None
        host_incident_open = outranked = False
        if vm_uuid and host:
            host_incident_open = self.store.open_incident_for(host_subject(host)) is not None
        if host and kind in HOST_KINDS:
            outranked = any(o.kind in HOST_KINDS and host_of_subject(o.subject) == host and fsm.outranks(o.kind, kind)
                            for o in self.store.list_incidents(open_only=True, limit=100000))
        state = self.world.host_states().get(host) if host else None
        reprovisioning = bool(host) and self.store.open_incident_for(
            host_subject(host, Remediation.HOST_REPROVISION)) is not None
        return fsm.Context(policy=self.policy, host_condition=state.condition if state else None,
                           storm_hold=self.storm.active(), host_incident_open=host_incident_open,
                           has_definition=bool(vm and vm.xml), outranked=outranked, dry_run=self.config.dry_run,
                           reprovisioning=reprovisioning,
                           host_up_since=state.since if state and state.condition is HostCondition.UP else None)

    def _handle_alert(self, alert_id: int, alert: Alert, received_at: datetime) -> None:
        # One unit of work per alert: claim it (a row lock where the database has one), decide, mark it
        # and write the transition and intents - all or nothing; acting starts only after the commit.
        with self.decide_lock, self.store.atomic():
            if self.store.claim_alert(alert_id) is None:
                return  # handled meanwhile, or another claimant holds it
            decided = self._decide_alert(alert_id, alert, received_at)
        if decided is None:
            return
        incident, intents, opened = decided
        self._dispatch(incident.id, intents)
        if opened and alert.remediation in HOST_KINDS:
            self.host_changed(alert.host, exclude=incident.id)  # a lower-ranked incident of the host waits now

    def _decide_alert(self, alert_id: int, alert: Alert,
                      received_at: datetime) -> tuple[Incident, list[tuple[int, Action]], bool] | None:
        event = Event(E.ALERT_FIRING, self.clock(), {"alert_id": alert_id, "fingerprint": alert.fingerprint})
        incident = self.store.open_incident_for(alert.subject)
        if incident is not None:
            if alert.status is not AlertStatus.FIRING:
                event = replace(event, kind=E.ALERT_RESOLVED)
            outcome = "duplicate" if event.kind == E.ALERT_FIRING else "incident"
            decision = fsm.decide(incident, event, self.context_for(incident))
            self.store.mark_alert(alert_id, outcome, incident.id, f"{event.kind} for open incident {incident.id}")
            return incident, self._persist(incident, event, decision), False
        if alert.status is AlertStatus.FIRING and (earlier := self.fast_path.handled(alert)) is not None:
            self.store.mark_alert(alert_id, "duplicate", earlier.id, f"the crash libvirt's event reported first; "
                                  f"incident {earlier.id} handled it")
            return None
        decision = fsm.start(alert, self.context_for(None, alert.host, alert.uuid, alert.remediation))
        if decision.closes:
            self.store.mark_alert(alert_id, "ignored", None, decision.reason)
            return None
        vm = self.store.get_vm(alert.uuid) if alert.uuid else None
        incident = self.store.create_incident(
            alert.subject, alert.remediation, alert.host, alert.uuid,
            alert.vm or (vm.name if vm else None), decision.next_state, decision.reason, self.clock(),
            data={"alert_starts_at": alert.starts_at.isoformat(), "alertname": alert.alertname,
                  "alert_received_at": received_at.isoformat(), "opened_by": opened_by(alert),
                  **decision.data})
        self.store.mark_alert(alert_id, "incident", incident.id, decision.reason)
        intents = self._persist(incident, event, decision, opening=True)
        self.metrics.incident_opened_by(opened_by(alert))
        return incident, intents, True

    def _persist(self, incident: Incident, event: Event, decision: fsm.Decision,
                 opening: bool = False) -> list[tuple[int, Action]]:
        """The transition and the intent of each action, written together before anything is done."""
        now = self.clock()
        with self.store.atomic():
            updated = self.store.apply_transition(incident.id, now, event, decision, expected_state=incident.state,
                                                  expected_version=incident.version)
            intents = [(self.store.record_intent(updated.id, action, now), action) for action in decision.actions]
        if not decision.ignored:
            self.metrics.transition(incident.kind, None if opening else incident.state, decision.next_state)
        if decision.closes and decision.next_state is fsm.State.RECOVERED:
            started = (incident.data or {}).get("alert_starts_at")
            if started:
                self.metrics.recovered(incident.kind, (now - datetime.fromisoformat(started)).total_seconds())
        if decision.closes or decision.next_state is fsm.State.HELD:
            log.info("incident %s (%s): %s: %s", incident.id, incident.subject, decision.next_state, decision.reason)
        return intents

    # ---- doing ------------------------------------------------------------------------------------

    def _dispatch(self, incident_id: int, intents: Iterable[tuple[int, Action]]) -> None:
        for intent_id, action in intents:
            kind = A(action.kind)
            if kind is A.SCHEDULE_RETRY:
                self.runner.arm(intent_id, incident_id, action, self.clock())
            elif kind is A.RAISE_FAILED:
                incident = self.store.get_incident(incident_id)
                self.metrics.failed(incident.kind)
                log.error("incident %s (%s) gave up: %s", incident_id, incident.subject, action.params.get("reason"))
                self.runner.finish_intent(intent_id, True, "failure raised")
            else:
                self.runner.submit(intent_id, incident_id, action)

    def _feed_back(self, incident_id: int, action: Action, outcome: Outcome) -> None:
        """The result of a step action is the incident's next event; side actions feed nothing."""
        if A(action.kind) not in fsm.STEP_ACTION.values():
            return
        event = Event(outcome.event, self.clock(), {"action": action.kind, "detail": outcome.detail, **outcome.extra})
        with self.decide_lock:
            incident = self.store.get_incident(incident_id)
            decision = fsm.decide(incident, event, self.context_for(incident))
            if decision.ignored and not incident.is_open:
                return
            if outcome.data:  # what the action found (placement, a rebuild's record) beside the fsm's own
                decision = replace(decision, data={**decision.data, **outcome.data})
            intents = self._persist(incident, event, decision)
        self._dispatch(incident_id, intents)
        if decision.closes and incident.kind in HOST_KINDS:
            self.host_changed(incident.host, exclude=incident_id)  # incidents waiting on this host look again
        if incident.kind is Remediation.HOST_REPROVISION and not decision.ignored \
                and decision.next_state != incident.state:
            self.reprovisions.phase_ended(incident, "ok" if outcome.ok else "failed", event.at)
        if decision.next_state is fsm.State.RECOVERED and incident.kind in (Remediation.HOST_DAMAGED,
                                                                           Remediation.HOST_DOWN):
            self.reprovisions.after_recovered(incident)  # reinstalled when the host's policy is automatic

    def vm_lock(self, uuid: str) -> threading.Lock:
        with self._vm_locks_guard:
            return self._vm_locks.setdefault(uuid, threading.Lock())

    def host_changed(self, host: str, exclude: int | None = None) -> None:
        """Tell the open incidents that depend on `host` (its VMs', its lower-ranked ones) that its
        condition or its open incidents changed: they may move on."""
        for incident in self.store.list_incidents(open_only=True, limit=100000):
            if incident.id == exclude or (fsm.State(incident.state), E.HOST_CHANGED) not in fsm.TRANSITIONS:
                continue
            if incident.kind in VM_KINDS:
                relevant = incident.host == host or host in self.store.hosts_defining(incident.vm_uuid or "")
            else:
                relevant = host_of_subject(incident.subject) == host
            if relevant:
                self.handle_event(incident.id, Event(E.HOST_CHANGED, self.clock(), {"host": host}))
