"""The engine: turns events into fsm decisions and decisions into actions, durably.

For every event (a stored alert, an action's result, a timer, an operator's request):
  1. gather the Context the guards need and ask `fsm.decide` (or `fsm.start` for a new subject);
  2. persist the transition, then one intent per action, *before* anything is done;
  3. perform each action through the edges, in a thread pool bounded by
     `policy.max_concurrent_actions`; every action looks at the world first, so performing it
     again after a crash is safe (a VM running anywhere is never started again);
  4. record the result on the intent and feed it back as the next event.

Decisions are taken one at a time (one lock); actions run concurrently. A per-VM lock makes sure
that two actions never start the same UUID at once. After a restart `resume()` re-arms timers and
performs again the intents that have no result (they check the world first), and re-issues the
actions of a transition whose intents were never written.

Storm hold: when more than `policy.storm.max_unhealthy_share` of the hosts are down, fenced or
damaged (or have a host alert pending), the fsm holds fencing and evacuation; when the share
drops, or an operator releases the hold, held incidents get STORM_RELEASED.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from remediator import fsm, placement, reconcile
from remediator.edges.fencing import UnknownHost
from remediator.edges.libvirt import DomainError, HostUnreachable
from remediator.edges.prometheus import PrometheusUnavailable
from remediator.fsm import ActionKind as A
from remediator.fsm import EventKind as E
from remediator.model import (Action, Alert, AlertStatus, Event, HostCapacity, HostCondition, Incident,
                              ProtectedVM, Remediation, host_subject)
from remediator.store.base import (SETTING_HOST_LOAD, SETTING_STORM, SETTING_STORM_RELEASE, SETTING_UNREACHABLE,
                                   Intent, Store, StoreError)

log = logging.getLogger(__name__)

OUT_CONDITIONS = frozenset({HostCondition.DOWN, HostCondition.FENCED, HostCondition.DAMAGED})
_HOST_ALERTS = frozenset({Remediation.HOST_DOWN, Remediation.HOST_DAMAGED})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Outcome:
    """How an action ended, as the event it feeds back."""

    event: E
    ok: bool
    detail: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # hosts, host_unreachable, host_unusable, ...
    data: Mapping[str, Any] = field(default_factory=dict)  # for Incident.data (placement, load source)


@dataclass(frozen=True)
class Capacities:
    hosts: list[HostCapacity]
    load_source: str  # "prometheus" or "libvirt"
    note: str = ""


class Engine:
    def __init__(self, config, store: Store, hypervisors, fencer, load_source, metrics, *,
                 clock: Callable[[], datetime] = utcnow):
        self.config = config
        self.store = store
        self.hv = hypervisors
        self.fencer = fencer
        self.load_source = load_source
        self.metrics = metrics
        self.clock = clock
        self.policy = fsm.Policy.from_config(config.policy)
        self._decide_lock = threading.RLock()
        self._vm_locks: dict[str, threading.Lock] = {}
        self._vm_locks_guard = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, config.policy.max_concurrent_actions),
                                        thread_name_prefix="action")
        self._timers: list[tuple[float, int, int, Event]] = []  # (due monotonic, intent, incident, event)
        self._timers_lock = threading.Lock()
        self._running: dict[int, tuple[float, int, Action]] = {}  # intent -> (started, incident, action)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None
        self._idle = threading.Condition()
        self._in_flight = 0
        self._storm_was_on = bool((store.get_setting(SETTING_STORM) or {}).get("active"))

    # ---- the ways in ------------------------------------------------------------------------------

    def handle_pending_alerts(self) -> int:
        """Turn stored, unhandled alerts into incidents or events; returns how many were handled."""
        pending = self.store.pending_alerts()
        self.check_storm()
        for sa in pending:
            self._handle_alert(sa.id, sa.alert, sa.received_at)
        return len(pending)

    def handle_pending_events(self) -> int:
        """Operator requests queued by the API (confirm-off, retry, close), oldest first."""
        events = self.store.pending_events()
        for qe in events:
            outcome, reason = self._operator_event(qe.subject, qe.event)
            self.store.mark_event(qe.id, outcome, reason)
        return len(events)

    def handle_event(self, incident_id: int, event: Event) -> fsm.Decision:
        with self._decide_lock:
            incident = self.store.get_incident(incident_id)
            decision = fsm.decide(incident, event, self.context_for(incident))
            if decision.ignored and not incident.is_open:
                return decision
            intents = self._persist(incident, event, decision)
        self._dispatch(incident_id, intents)
        return decision

    def operator_confirm_off(self, host: str, by: str = "operator") -> str:
        """An operator made sure `host` is off: it counts as fenced and recovery may go on."""
        outcome, reason = self._operator_event(host_subject(host), Event(E.OPERATOR_CONFIRM_OFF, self.clock(),
                                                                         {"by": by}))
        return reason

    def set_maintenance(self, host: str, on: bool, reason: str = "") -> None:
        """A host in maintenance takes no VMs and its alerts start nothing; off makes it schedulable."""
        now = self.clock()
        current = self._conditions().get(host, HostCondition.UP)
        if on:
            self.store.set_host_state(host, HostCondition.MAINTENANCE, reason or "maintenance on", now)
        elif current is HostCondition.MAINTENANCE:
            self.store.set_host_state(host, HostCondition.UP, reason or "maintenance off", now)
        self.check_storm()

    def release_storm(self, by: str = "operator", reason: str = "") -> None:
        """Lift the storm hold until the share of hosts out drops under the threshold again."""
        self.store.set_setting(SETTING_STORM_RELEASE, {"at": self.clock(), "by": by, "reason": reason})
        self.check_storm()

    def tick(self) -> None:
        """One pass of everything due: queued operator events, pending alerts, timers, timeouts."""
        self.handle_pending_events()
        self.handle_pending_alerts()
        self.run_timers()

    def sync_inventory(self) -> reconcile.SyncReport:
        """Scheduler job: refresh the stored definitions and locations of the protected VMs; it asks
        every host, so it also refreshes which hosts the remediator cannot reach (the storm check)."""
        report = reconcile.sync_inventory(self.config, self.store, self.hv, self.clock())
        self._note_reachability({h.name for h in self.config.hosts}, set(report.unreachable))
        self.metrics.inventory_synced(time.time())
        return report

    def reconcile(self) -> list[reconcile.Finding]:
        """Scheduler job: catch what alerts missed; a VM down with no alert is handled at once."""
        findings = reconcile.reconcile(self.config, self.store, self.hv, self.clock())
        if any(f.kind == "vm_down_without_incident" for f in findings):
            self.handle_pending_alerts()
        return findings

    def notify(self) -> None:
        """Wake the background loop (the web layer calls this after storing alerts or events)."""
        self._wake.set()

    # ---- lifecycle --------------------------------------------------------------------------------

    def resume(self) -> None:
        """After a (re)start: finish what a previous run left half done, checking the world first."""
        with self._decide_lock:
            for intent in self.store.unfinished_intents():
                self._resume_intent(intent)
            for incident in self.store.list_incidents(open_only=True, limit=100000):
                self._reissue_lost_actions(incident)
        self.check_storm()
        self.handle_pending_events()
        self.handle_pending_alerts()

    def start(self) -> None:
        """Sync the inventory, resume, then run a background loop: pending alerts and events on notify,
        timers when due. The first sync comes first so that a host lost before the first timer run
        still has its VMs' definitions to restart them from."""
        report = self.sync_inventory()
        log.info("inventory: %d protected VMs (%d updated)%s", report.protected, report.updated,
                 f"; unreachable: {', '.join(report.unreachable)}" if report.unreachable else "")
        self.resume()
        self._loop = threading.Thread(target=self._run_loop, name="engine", daemon=True)
        self._loop.start()

    def _run_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self._seconds_to_next_timer(default=1.0))
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.tick()
            except StoreError:
                log.exception("engine loop: the store failed; trying again in a second")
                time.sleep(1.0)

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        if self._loop is not None:
            self._loop.join(timeout=10)
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no action is running (tests and the CLI use it); True when idle."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # ---- timers -----------------------------------------------------------------------------------

    def run_timers(self) -> int:
        """Fire due retry timers and time out actions running past their limit; returns timers fired."""
        self.check_timeouts()
        now = time.monotonic()
        due = []
        with self._timers_lock:
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers))
        for _, intent_id, incident_id, event in due:
            if self._finish_intent(intent_id, True, "timer fired"):
                self.handle_event(incident_id, replace(event, at=self.clock()))
        return len(due)

    def pending_timers(self) -> list[tuple[float, int, Event]]:
        """(seconds from now, incident, event) of every armed timer."""
        now = time.monotonic()
        with self._timers_lock:
            return sorted((due - now, inc, ev) for due, _, inc, ev in self._timers)

    def fire_timers_now(self) -> int:
        """Make every armed timer due (tests: skip the backoff wait) and run them."""
        with self._timers_lock:
            self._timers = [(0.0, i, inc, ev) for _, i, inc, ev in self._timers]
            heapq.heapify(self._timers)
        return self.run_timers()

    def _seconds_to_next_timer(self, default: float) -> float:
        with self._timers_lock:
            if not self._timers:
                return default
            return max(0.0, min(default, self._timers[0][0] - time.monotonic()))

    def check_timeouts(self) -> None:
        """An action past its timeout counts as failed; its late result, if any, is dropped."""
        limits = self.config.policy.action_timeouts
        now = time.monotonic()
        for intent_id, (started, incident_id, action) in list(self._running.items()):
            limit = limits.for_action(action.kind)
            if now - started > limit and self._finish_intent(intent_id, False, f"timed out after {limit:g}s"):
                self._running.pop(intent_id, None)
                self.metrics.action_finished(action.kind, "timeout", now - started)
                self.handle_event(incident_id, Event(E.ACTION_FAILED, self.clock(), {
                    "action": action.kind, "detail": f"{action.kind} timed out after {limit:g}s"}))

    # ---- deciding ---------------------------------------------------------------------------------

    def context_for(self, incident: Incident | None, host: str | None = None,
                    vm_uuid: str | None = None) -> fsm.Context:
        host = incident.host if incident else host
        vm_uuid = incident.vm_uuid if incident else vm_uuid
        conditions = self._conditions()
        vm = self.store.get_vm(vm_uuid) if vm_uuid else None
        host_incident_open = False
        if vm_uuid and host:
            host_incident_open = self.store.open_incident_for(host_subject(host)) is not None
        return fsm.Context(policy=self.policy, host_condition=conditions.get(host) if host else None,
                           storm_hold=self.storm_active(), host_incident_open=host_incident_open,
                           has_definition=bool(vm and vm.xml))

    def _handle_alert(self, alert_id: int, alert: Alert, received_at: datetime) -> None:
        with self._decide_lock:
            incident = self.store.open_incident_for(alert.subject)
            if incident is not None:
                kind = E.ALERT_FIRING if alert.status is AlertStatus.FIRING else E.ALERT_RESOLVED
                outcome = "duplicate" if kind is E.ALERT_FIRING else "incident"
                self.store.mark_alert(alert_id, outcome, incident.id, f"{kind} for open incident {incident.id}")
                event = Event(kind, self.clock(), {"alert_id": alert_id, "fingerprint": alert.fingerprint})
                decision = fsm.decide(incident, event, self.context_for(incident))
                intents = self._persist(incident, event, decision)
                incident_id = incident.id
            else:
                decision = fsm.start(alert, self.context_for(None, alert.host, alert.uuid))
                if decision.closes:
                    self.store.mark_alert(alert_id, "ignored", None, decision.reason)
                    return
                vm = self.store.get_vm(alert.uuid) if alert.uuid else None
                incident = self.store.create_incident(
                    alert.subject, alert.remediation, alert.host, alert.uuid, alert.vm or (vm.name if vm else None),
                    decision.next_state, decision.reason, self.clock(),
                    data={"alert_starts_at": alert.starts_at.isoformat(), "alertname": alert.alertname,
                          "alert_received_at": received_at.isoformat()})
                self.store.mark_alert(alert_id, "incident", incident.id, decision.reason)
                event = Event(E.ALERT_FIRING, self.clock(), {"alert_id": alert_id, "fingerprint": alert.fingerprint})
                intents = self._persist(incident, event, decision, opening=True)
                incident_id = incident.id
        self._dispatch(incident_id, intents)

    def _operator_event(self, subject: str, event: Event) -> tuple[str, str]:
        with self._decide_lock:
            if event.kind == E.OPERATOR_CONFIRM_OFF and subject.startswith("host:"):
                host = subject[len("host:"):]
                self.store.set_host_state(host, HostCondition.FENCED,
                                          f"an operator ({event.detail.get('by', 'operator')}) confirmed it is off",
                                          self.clock())
                self.metrics.fence_outcome("confirmed_by_operator")
            incident = self.store.open_incident_for(subject)
            if incident is None:
                return "ignored", f"no open incident for {subject}"
        decision = self.handle_event(incident.id, event)
        # A host confirmed off changes what its VMs' incidents may do.
        if subject.startswith("host:"):
            self._host_changed(subject[len("host:"):])
        return ("ignored" if decision.ignored else "applied"), decision.reason

    def _persist(self, incident: Incident, event: Event, decision: fsm.Decision,
                 opening: bool = False) -> list[tuple[int, Action]]:
        """The transition and the intent of each action, written before anything is done."""
        now = self.clock()
        updated = self.store.apply_transition(incident.id, now, event, decision)
        if not decision.ignored:
            self.metrics.transition(incident.kind, None if opening else incident.state, decision.next_state)
        if decision.closes and decision.next_state is fsm.State.RECOVERED:
            started = (incident.data or {}).get("alert_starts_at")
            if started:
                self.metrics.recovered(incident.kind, (now - datetime.fromisoformat(started)).total_seconds())
        if decision.closes or decision.next_state is fsm.State.HELD:
            log.info("incident %s (%s): %s: %s", incident.id, incident.subject, decision.next_state, decision.reason)
        return [(self.store.record_intent(updated.id, action, now), action) for action in decision.actions]

    # ---- doing ------------------------------------------------------------------------------------

    def _dispatch(self, incident_id: int, intents: Iterable[tuple[int, Action]]) -> None:
        for intent_id, action in intents:
            kind = A(action.kind)
            if kind is A.SCHEDULE_RETRY:
                self._arm_timer(intent_id, incident_id, action, self.clock())
            elif kind is A.RAISE_FAILED:
                incident = self.store.get_incident(incident_id)
                self.metrics.failed(incident.kind)
                log.error("incident %s (%s) gave up: %s", incident_id, incident.subject, action.params.get("reason"))
                self._finish_intent(intent_id, True, "failure raised")
            else:
                with self._idle:
                    self._in_flight += 1
                self._running[intent_id] = (time.monotonic(), incident_id, action)
                self._pool.submit(self._perform, intent_id, incident_id, action)

    def _arm_timer(self, intent_id: int, incident_id: int, action: Action, set_at: datetime) -> None:
        after = float(action.params.get("after_s", 1.0))
        elapsed = (self.clock() - set_at).total_seconds()
        event = Event(action.params.get("event", E.RETRY.value), set_at, {"state": action.params.get("state")})
        with self._timers_lock:
            heapq.heappush(self._timers, (time.monotonic() + max(0.0, after - elapsed), intent_id, incident_id, event))
        self._wake.set()

    def _perform(self, intent_id: int, incident_id: int, action: Action) -> None:
        started = time.monotonic()
        try:
            outcome = self.perform(incident_id, action)
        except (HostUnreachable, DomainError, StoreError, UnknownHost, OSError, ValueError) as err:
            # Expected kinds of failure from the edges; anything else is a bug and must show as one.
            outcome = Outcome(E.ACTION_FAILED, False, f"{type(err).__name__}: {err}",
                              {"host_unreachable": isinstance(err, HostUnreachable)})
        except Exception:
            # Not a fallback: an unexpected error is a bug, logged with its traceback and recorded as the
            # action's failure; swallowed silently by the pool it would leave the incident hanging.
            log.exception("action %s of incident %s crashed (a bug)", action.kind, incident_id)
            outcome = Outcome(E.ACTION_FAILED, False, f"{action.kind} crashed: see the service log")
        finally:
            self._running.pop(intent_id, None)
        try:
            if not self._finish_intent(intent_id, outcome.ok, outcome.detail):
                return  # already timed out: its failure was fed back then
            self.metrics.action_finished(action.kind, "ok" if outcome.ok else "failed", time.monotonic() - started)
            self._feed_back(incident_id, action, outcome)
        except StoreError:
            log.exception("action %s of incident %s: its result could not be fed back", action.kind, incident_id)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _feed_back(self, incident_id: int, action: Action, outcome: Outcome) -> None:
        """The result of a step action is the incident's next event; side actions feed nothing."""
        if A(action.kind) not in fsm.STEP_ACTION.values():
            return
        event = Event(outcome.event, self.clock(), {"action": action.kind, "detail": outcome.detail, **outcome.extra})
        with self._decide_lock:
            incident = self.store.get_incident(incident_id)
            decision = fsm.decide(incident, event, self.context_for(incident))
            if decision.ignored and not incident.is_open:
                return
            if outcome.data:
                decision = replace(decision, data=outcome.data)
            intents = self._persist(incident, event, decision)
        self._dispatch(incident_id, intents)
        if decision.closes and incident.kind is Remediation.HOST_DOWN:
            self._host_changed(incident.host)  # VM incidents waiting on this host may look again now

    def _finish_intent(self, intent_id: int, ok: bool, detail: str) -> bool:
        """Record the result; False when it already had one (timed out, or finished by another run)."""
        try:
            self.store.record_result(intent_id, ok, detail, self.clock())
            return True
        except StoreError as err:
            log.warning("intent %s: result not recorded (%s)", intent_id, err)
            return False

    def perform(self, incident_id: int, action: Action) -> Outcome:
        """Do one action; each looks at the world first so that doing it again is harmless."""
        p = action.params
        kind = A(action.kind)
        if kind is A.VERIFY_VM:
            return self.verify_vm(p["uuid"], p["host"])
        if kind is A.VERIFY_HOST:
            return self.verify_host(p["host"])
        if kind is A.START_VM:
            return self.start_vm(p["uuid"], p["host"])
        if kind is A.START_VM_ELSEWHERE:
            return self.start_vm_elsewhere(p["uuid"], p["host"], tuple(p.get("exclude", ())), from_stored=False)
        if kind is A.REBUILD_VM:
            return self.start_vm_elsewhere(p["uuid"], p["host"], tuple(p.get("exclude", ())), from_stored=True)
        if kind is A.FENCE_HOST:
            return self.fence_host(p["host"])
        if kind is A.EVACUATE_HOST:
            return self.evacuate_host(p["host"])
        if kind is A.CORDON_HOST:
            self.store.set_host_state(p["host"], HostCondition.DAMAGED, "cordoned: damage alert", self.clock())
            return Outcome(E.ACTION_OK, True, "cordoned")
        if kind is A.UNCORDON_HOST:
            self.store.set_host_state(p["host"], HostCondition.UP, "uncordoned", self.clock())
            return Outcome(E.ACTION_OK, True, "uncordoned")
        if kind is A.MIGRATE_AWAY:
            return self.migrate_away(p["host"])
        if kind is A.REBALANCE_HOST:
            return self.rebalance_host(p["host"])
        raise ValueError(f"the engine does not perform {kind} here")

    # ---- the actions ------------------------------------------------------------------------------

    def verify_vm(self, uuid: str, host: str) -> Outcome:
        running, unknown = self._find_running(uuid)
        if running:
            return Outcome(E.VM_RUNNING, True, f"running on {', '.join(running)}", {"hosts": running})
        if self._conditions().get(host) is HostCondition.FENCED:
            return Outcome(E.HOST_UNREACHABLE, True, f"its host {host} is fenced (off)", {"host_unreachable": True})
        if host in unknown:
            return Outcome(E.HOST_UNREACHABLE, True, f"its host {host} does not answer", {"host_unreachable": True})
        note = f" ({', '.join(unknown)} could not be asked)" if unknown else ""
        return Outcome(E.VM_NOT_RUNNING, True, f"not running on any reachable host{note}")

    def verify_host(self, host: str) -> Outcome:
        answers = self._probe_hosts()
        if answers[host] if host in answers else self.hv.is_reachable(host):
            return Outcome(E.HOST_REACHABLE, True, f"libvirt on {host} answers")
        if self._conditions().get(host) not in (HostCondition.FENCED, HostCondition.MAINTENANCE):
            self.store.set_host_state(host, HostCondition.DOWN, "libvirt unreachable from the remediator",
                                      self.clock())
            self.check_storm()
        return Outcome(E.HOST_UNREACHABLE, True, f"libvirt on {host} unreachable from the remediator")

    def start_vm(self, uuid: str, host: str) -> Outcome:
        with self._vm_lock(uuid):
            running, unknown = self._find_running(uuid)
            if running:
                return Outcome(E.ACTION_OK, True, f"already running on {', '.join(running)}", {"hosts": running})
            if host in unknown:
                return Outcome(E.ACTION_FAILED, False, f"{host} does not answer", {"host_unreachable": True})
            condition = self._conditions().get(host, HostCondition.UP)
            if condition is not HostCondition.UP:
                return Outcome(E.ACTION_FAILED, False, f"{host} is {condition}", {"host_unusable": True})
            if self.config.dry_run:
                return Outcome(E.ACTION_OK, True, f"dry run: would start {uuid} on {host}", {"hosts": [host]})
            self.hv.start(host, uuid)
        self._remember_host(uuid, host)
        return Outcome(E.ACTION_OK, True, f"started on {host}", {"hosts": [host]})

    def start_vm_elsewhere(self, uuid: str, origin: str, exclude: tuple[str, ...], *, from_stored: bool) -> Outcome:
        """Start (or, from_stored, define anew and start) the VM on a placed host, never twice."""
        vm = self.store.get_vm(uuid)
        if vm is None or not vm.xml:
            return Outcome(E.ACTION_FAILED, False, f"no stored definition of {uuid}")
        with self._vm_lock(uuid):
            running, unknown = self._find_running(uuid)
            if running:
                return Outcome(E.ACTION_OK, True, f"already running on {', '.join(running)}", {"hosts": running})
            conditions = self._conditions()
            if origin in unknown and conditions.get(origin) is not HostCondition.FENCED:
                return Outcome(E.ACTION_FAILED, False, f"{origin} does not answer and is not fenced: it may "
                               f"still run the VM", {"host_unreachable": True})
            caps = self.capacities()
            plan = placement.place(caps.hosts, [vm], self._overcommit(), group_of=self._groups(),
                                   exclude=set(exclude) | set(unknown))
            dst = plan.assignments.get(uuid)
            data = {"placement": {uuid: dst} if dst else {}, "load_source": caps.load_source}
            if dst is None:
                return Outcome(E.ACTION_FAILED, False, plan.unplaced[uuid] + caps.note, data=data)
            xml = vm.xml
            if not from_stored and origin not in unknown:
                try:  # the freshest definition, while its host answers and still has it
                    xml = self.hv.domain_xml(origin, uuid)
                except DomainError as err:
                    log.info("%s: no definition on %s (%s): using the stored one", vm.name, origin, err)
            if self.config.dry_run:
                return Outcome(E.ACTION_OK, True, f"dry run: would start {vm.name} on {dst}", {"hosts": [dst]},
                               data)
            self.hv.define_and_start(dst, xml)
        self._remember_host(uuid, dst)
        note = self._undefine_stale_copy(origin, uuid, unknown)
        return Outcome(E.ACTION_OK, True, f"started on {dst}{note}{caps.note}", {"hosts": [dst]}, data)

    def fence_host(self, host: str) -> Outcome:
        if self.config.dry_run:
            return Outcome(E.ACTION_OK, True, f"dry run: would fence {host}")
        result = self.fencer.off(host)
        if result.ok:
            self.store.set_host_state(host, HostCondition.FENCED, f"fenced: {result.detail}", self.clock())
            self.metrics.fence_outcome("off")
            self._host_changed(host)
            return Outcome(E.ACTION_OK, True, result.detail)
        self.metrics.fence_outcome("failed")
        return Outcome(E.ACTION_FAILED, False, result.detail)

    def evacuate_host(self, host: str) -> Outcome:
        """Start the host's protected VMs elsewhere, highest priority first, in parallel, each once."""
        if self._conditions().get(host) is not HostCondition.FENCED:
            return Outcome(E.ACTION_FAILED, False, f"{host} is not fenced: refusing to start its VMs elsewhere")
        vms = placement.placement_order(v for v in self.store.list_vms() if v.host == host and v.protected)
        to_place, already = [], []
        for vm in vms:
            running, _ = self._find_running(vm.uuid)
            (already if running else to_place).append(vm)
        caps = self.capacities()
        plan = placement.place(caps.hosts, to_place, self._overcommit(), group_of=self._groups(), exclude={host})
        data = {"placement": dict(plan.assignments), "unplaced": dict(plan.unplaced), "load_source": caps.load_source}
        by_uuid = {vm.uuid: vm for vm in to_place}
        workers = max(1, self.config.policy.max_concurrent_actions)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evacuate") as pool:
            futures = {uuid: pool.submit(self._start_placed, by_uuid[uuid], dst)
                       for uuid, dst in plan.assignments.items()}
        failures = {}
        for uuid, fut in futures.items():
            try:
                fut.result()
            except (HostUnreachable, DomainError) as err:
                failures[uuid] = str(err)
        started = len(futures) - len(failures)
        parts = [f"{started} started", f"{len(already)} already running"]
        if plan.unplaced:
            parts.append(f"{len(plan.unplaced)} unplaced: " + "; ".join(plan.unplaced.values()))
        if failures:
            parts.append(f"{len(failures)} failed: " + "; ".join(failures.values()))
        detail = ", ".join(parts) + caps.note
        ok = not plan.unplaced and not failures
        return Outcome(E.ACTION_OK if ok else E.ACTION_FAILED, ok, detail, data=data)

    def _start_placed(self, vm: ProtectedVM, dst: str) -> None:
        with self._vm_lock(vm.uuid):
            running, _ = self._find_running(vm.uuid)
            if running:
                return
            if self.config.dry_run:
                return
            self.hv.define_and_start(dst, vm.xml)
        self._remember_host(vm.uuid, dst)

    def migrate_away(self, host: str) -> Outcome:
        """Live-migrate every VM running on a damaged host to placed hosts (highest priority first)."""
        protected, vms = self._running_on(host)
        caps = self.capacities()
        plan = placement.place(caps.hosts, vms, self._overcommit(), group_of=self._groups(), exclude={host})
        return self._migrate(host, [(uuid, dst) for uuid, dst in plan.assignments.items()], plan.unplaced,
                             caps, protected)

    def rebalance_host(self, host: str) -> Outcome:
        """Live-migrate the lowest-priority VMs off an overloaded host until under the threshold."""
        protected, vms = self._running_on(host)
        caps = self.capacities()
        threshold = self.config.policy.overload.load_per_cpu
        plan = placement.rebalance(caps.hosts, host, vms, threshold, self._overcommit(), group_of=self._groups())
        unplaced = {} if plan.load_after <= threshold else {"": plan.reason}
        return self._migrate(host, [(m.uuid, m.dst) for m in plan.moves], unplaced, caps, protected)

    def _running_on(self, host: str) -> tuple[dict[str, ProtectedVM], list[ProtectedVM]]:
        """The VMs alive on `host` as placement sees them (sizes from libvirt, priority from the inventory)."""
        known = {vm.uuid: vm for vm in self.store.list_vms()}
        vms = []
        for d in self.hv.domains(host):
            if d.alive:
                base = known.get(d.uuid) or ProtectedVM(d.uuid, d.name, host, d.vcpus, d.memory_bytes, protected=False)
                vms.append(replace(base, vcpus=d.vcpus, memory_bytes=d.memory_bytes))
        return {vm.uuid: vm for vm in vms}, vms

    def _migrate(self, host: str, moves: list[tuple[str, str]], unplaced: Mapping[str, str], caps: Capacities,
                 protected: Mapping[str, ProtectedVM]) -> Outcome:
        failures = []
        for uuid, dst in moves:  # one at a time: live migrations compete for the same links
            if self.config.dry_run:
                continue
            with self._vm_lock(uuid):
                try:
                    self.hv.migrate_live(host, dst, uuid)
                except (HostUnreachable, DomainError) as err:
                    failures.append(str(err))
                    continue
            self._remember_host(uuid, dst)
        data = {"moves": {protected[u].name: d for u, d in moves}, "load_source": caps.load_source}
        detail = f"{len(moves) - len(failures)} migrated" + "".join(f"; {why}" for why in unplaced.values())
        if failures:
            detail += f"; {len(failures)} failed: " + "; ".join(failures)
        ok = not failures and not unplaced
        return Outcome(E.ACTION_OK if ok else E.ACTION_FAILED, ok, detail + caps.note, data=data)

    # ---- the world as placement sees it ----------------------------------------------------------

    def capacities(self) -> Capacities:
        """Every host's capacity, allocation (libvirt, now) and load (Prometheus, one query)."""
        names = [h.name for h in self.config.hosts]
        load, source, note = {}, "prometheus", ""
        if self.load_source is not None:
            try:
                load = self.load_source.host_load(names)
            except PrometheusUnavailable as err:
                source, note = "libvirt", f" (Prometheus unavailable: {err}; placed by libvirt allocation)"
        else:
            source = "libvirt"
        conditions = self._conditions()
        hosts = []
        for name in names:
            condition = conditions.get(name, HostCondition.UP)
            hl = load.get(name)
            domains, cpus, memory = [], 0, 0
            if condition is HostCondition.UP:  # only UP hosts take VMs: ask no other
                try:
                    domains = self.hv.domains(name)
                    if hl and hl.cpus and hl.memory_bytes:
                        cpus, memory = hl.cpus, hl.memory_bytes
                    else:
                        cpus, memory = self.hv.capacity(name)
                except HostUnreachable:
                    condition = HostCondition.DOWN
            alive = [d for d in domains if d.alive]
            hosts.append(HostCapacity(
                name=name, cpus=cpus, memory_bytes=memory,
                vcpus_allocated=sum(d.vcpus for d in alive), memory_allocated_bytes=sum(d.memory_bytes for d in alive),
                load1=hl.load1 if hl else None, memory_available_bytes=hl.memory_available_bytes if hl else None,
                condition=condition, vms=frozenset(d.uuid for d in domains)))
        self.store.set_setting(SETTING_HOST_LOAD, {
            **{h.name: {"load1": h.load1, "memory_available_bytes": h.memory_available_bytes} for h in hosts},
            "at": self.clock(), "source": source})
        return Capacities(hosts, source, note)

    def _overcommit(self) -> placement.Overcommit:
        o = self.config.policy.overcommit
        return placement.Overcommit(cpu=o.cpu, memory=o.memory)

    def _groups(self) -> dict[str, str | None]:
        return {vm.uuid: vm.group for vm in self.store.list_vms()}

    def _conditions(self) -> dict[str, HostCondition]:
        return {name: HostCondition(state.condition) for name, state in self.store.host_states().items()}

    def _remember_host(self, uuid: str, host: str) -> None:
        vm = self.store.get_vm(uuid)
        if vm is not None and vm.host != host:
            self.store.upsert_vm(replace(vm, host=host), self.clock())

    def _undefine_stale_copy(self, origin: str, uuid: str, unknown: Iterable[str]) -> str:
        """The copy left defined on a reachable origin must never start again: undefine it."""
        if origin in set(unknown):
            return f"; the copy on {origin} is undefined when that host is back (reconcile)"
        try:
            self.hv.undefine(origin, uuid)
        except (HostUnreachable, DomainError) as err:
            return f"; the stale copy on {origin} could not be undefined ({err})"
        return f"; undefined the stale copy on {origin}"

    def _probe_hosts(self) -> dict[str, bool]:
        """Ask every host that is not fenced or in maintenance whether libvirt answers, in parallel.

        Done before any fence: a second host that died with the first may not have its alert in
        yet (each host's alert is its own Alertmanager group), and the storm check must count it
        before the first host's VMs are moved onto hosts that may be failing too."""
        conditions = self._conditions()
        names = [h.name for h in self.config.hosts
                 if conditions.get(h.name) not in (HostCondition.FENCED, HostCondition.MAINTENANCE)]
        with ThreadPoolExecutor(max_workers=min(32, max(1, len(names))), thread_name_prefix="probe") as pool:
            answers = dict(zip(names, pool.map(self.hv.is_reachable, names)))
        self._note_reachability(set(names), {n for n, ok in answers.items() if not ok})
        return answers

    def _note_reachability(self, asked: set[str], unreachable: set[str]) -> None:
        """Remember which of the hosts just asked did not answer (first seen), for check_storm."""
        before = self.store.get_setting(SETTING_UNREACHABLE) or {}
        now = {h: at for h, at in before.items() if h not in asked}
        now.update({h: before.get(h, self.clock()) for h in unreachable})
        if now != before:
            self.store.set_setting(SETTING_UNREACHABLE, now)
            self.check_storm()

    def _find_running(self, uuid: str) -> tuple[list[str], list[str]]:
        """(hosts running it, hosts that could not be asked), over every host but the fenced ones:
        those are proven off, and asking a partitioned one costs a connect timeout per question."""
        conditions = self._conditions()
        return self.hv.find_running(uuid, [h.name for h in self.config.hosts
                                           if conditions.get(h.name) is not HostCondition.FENCED])

    def _vm_lock(self, uuid: str) -> threading.Lock:
        with self._vm_locks_guard:
            return self._vm_locks.setdefault(uuid, threading.Lock())

    def _host_changed(self, host: str) -> None:
        """Tell the incidents of the host's VMs that its condition changed (they may move on)."""
        for incident in self.store.list_incidents(open_only=True, limit=100000):
            if incident.kind is Remediation.VM_DOWN and incident.host == host:
                self.handle_event(incident.id, Event(E.HOST_CHANGED, self.clock(), {"host": host}))

    # ---- storm ------------------------------------------------------------------------------------

    def storm_active(self) -> bool:
        return bool((self.store.get_setting(SETTING_STORM) or {}).get("active"))

    def check_storm(self) -> bool:
        """Hold when more than the configured share of hosts are out; release held incidents when not.

        Out: down, fenced or damaged in the store, with an open host incident, with a host alert
        still waiting in the store, or unreachable when the remediator last asked it (so that two
        hosts failing together are held together, whatever order their alerts arrive in)."""
        names = [h.name for h in self.config.hosts]
        conditions = self._conditions()
        out = {n for n in names if conditions.get(n) in OUT_CONDITIONS}
        out |= {n for n in (self.store.get_setting(SETTING_UNREACHABLE) or {})
                if conditions.get(n) is not HostCondition.MAINTENANCE} & set(names)
        out |= {sa.alert.host for sa in self.store.pending_alerts()
                if sa.alert.remediation in _HOST_ALERTS and sa.alert.status is AlertStatus.FIRING} & set(names)
        for incident in self.store.list_incidents(open_only=True, limit=100000):
            if incident.kind in _HOST_ALERTS:
                out.add(incident.host)
        share = len(out) / len(names) if names else 0.0
        threshold = self.config.policy.storm.max_unhealthy_share
        over = share > threshold
        released = self.store.get_setting(SETTING_STORM_RELEASE)
        if not over and released:
            self.store.set_setting(SETTING_STORM_RELEASE, None)  # a release lasts until the share drops
            released = None
        active = over and not released
        reason = (f"{len(out)} of {len(names)} hosts out ({', '.join(sorted(out))}): share {share:.2f} > "
                  f"{threshold:.2f}" if over else f"share of hosts out {share:.2f} <= {threshold:.2f}")
        if released and over:
            reason += f"; released by {released.get('by')}"
        previous = self.store.get_setting(SETTING_STORM) or {}
        if bool(previous.get("active")) != active or previous.get("unhealthy") != sorted(out):
            self.store.set_setting(SETTING_STORM, {"active": active, "reason": reason, "unhealthy": sorted(out),
                                                   "since": self.clock() if bool(previous.get("active")) != active
                                                   else previous.get("since", self.clock())})
            if active:
                log.warning("storm hold: %s; no automatic fencing or evacuation", reason)
        self.metrics.set_storm(active, share)
        if self._storm_was_on and not active:
            log.warning("storm hold lifted: %s", reason)
            self._storm_was_on = False
            for incident in self.store.list_incidents(open_only=True, limit=100000):
                if incident.state == fsm.State.HELD:
                    self.handle_event(incident.id, Event(E.STORM_RELEASED, self.clock(), {"reason": reason}))
        self._storm_was_on = active
        return active

    # ---- resuming ---------------------------------------------------------------------------------

    def _resume_intent(self, intent: Intent) -> None:
        incident = self.store.get_incident(intent.incident_id)
        kind = A(intent.action.kind)
        if not incident.is_open:
            self._finish_intent(intent.id, False, "incident closed before this action ran")
            return
        if kind is A.SCHEDULE_RETRY:
            self._arm_timer(intent.id, incident.id, intent.action, intent.at)
            return
        if kind is not fsm.STEP_ACTION.get(fsm.State(incident.state)) and kind is not A.CORDON_HOST:
            self._finish_intent(intent.id, False, f"superseded: the incident moved on to {incident.state}")
            return
        log.info("resuming %s of incident %s (intent %s): it checks the world first", kind, incident.id, intent.id)
        self._dispatch(incident.id, [(intent.id, intent.action)])

    def _reissue_lost_actions(self, incident: Incident) -> None:
        """A crash between writing a transition and its intents leaves actions never recorded."""
        history = self.store.history(incident.id)
        if not history or not history[-1].actions:
            return
        last = history[-1]
        recorded = [i for i in self.store.intents(incident.id) if i.at >= last.at]
        if recorded:
            return
        log.info("incident %s: re-issuing the actions of its last transition (never recorded)", incident.id)
        now = self.clock()
        self._dispatch(incident.id, [(self.store.record_intent(incident.id, a, now), a) for a in last.actions])
