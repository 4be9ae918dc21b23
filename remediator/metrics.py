"""The service's own metrics, in a registry per app (never prometheus_client's global one).

Counters and histograms are fed by whoever sees the event (the web layer, the engine); what the
store already knows (incidents by state, host conditions) is read fresh at each scrape by a
collector, so it is right after a restart and cannot drift. If the store does not answer, only
those families are missing from that scrape and `remediator_store_up` says 0.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from remediator.fsm import TERMINAL_STATES, State
from remediator.model import HostCondition, Remediation
from remediator.store.base import Store, StoreError

log = logging.getLogger(__name__)

# Recovery takes from ~1 s (restart in place) to minutes (fence retries, evacuations).
_ACTION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
# A bound on remediator_incident_open's series: a storm must not blow up the scrape.
MAX_OPEN_INCIDENT_SERIES = 200
_RECOVERY_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600, 1800)


# Which path reported an incident first (Incident.data["opened_by"]).
OPENED_BY = ("alert", "libvirt_event", "reconcile", "operator", "policy")
# A reprovision's phases run from seconds (boot device) to the length of an install.
_PHASE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.webhook_requests = Counter(
            "remediator_webhook_requests", "Alertmanager webhook requests by HTTP status code", ["code"], registry=r
        )
        self.alerts_received = Counter(
            "remediator_alerts_received",
            "Alerts in webhook payloads: new, repeat (already stored), ignored (outside inventory or not HA)",
            ["result"],
            registry=r,
        )
        self.transitions = Counter(
            "remediator_transitions", "Incident state transitions", ["kind", "from_state", "to_state"], registry=r
        )
        self.action_duration = Histogram(
            "remediator_action_duration_seconds",
            "Time taken by an engine action, by action kind and outcome (ok, failed, timeout)",
            ["action", "outcome"],
            buckets=_ACTION_BUCKETS,
            registry=r,
        )
        self.alert_to_recovery = Histogram(
            "remediator_alert_to_recovery_seconds",
            "From the alert's startsAt to the subject recovered, by remediation kind",
            ["kind"],
            buckets=_RECOVERY_BUCKETS,
            registry=r,
        )
        self.fencing = Counter(
            "remediator_fencing", "Fencing outcomes: off (status confirmed off), failed, confirmed_by_operator",
            ["outcome"], registry=r,
        )
        self.storm_hold = Gauge(
            "remediator_storm_hold", "1 while automatic evacuation is held because too many hosts are out", registry=r
        )
        self.unhealthy_host_share = Gauge(
            "remediator_unhealthy_host_share", "Share of inventory hosts out (down, fenced, cordoned)", registry=r
        )
        self.gave_up = Counter(
            "remediator_incidents_failed", "Incidents the engine gave up on (left open as failed)", ["kind"], registry=r
        )
        self.opened = Counter("remediator_incidents_opened", "Incidents opened, by remediation kind", ["kind"],
                              registry=r)
        self.opened_by = Counter(
            "remediator_incidents_opened_by", "Incidents opened, by the path that reported them first: alert "
            "(Prometheus and Alertmanager), libvirt_event (the fast path), reconcile, operator", ["path"], registry=r)
        self.closed = Counter(
            "remediator_incidents_closed",
            "Incidents closed, by remediation kind and outcome (recovered, dismissed, closed_by_operator)",
            ["kind", "outcome"], registry=r,
        )
        self.inventory_sync = Gauge(
            "remediator_inventory_last_sync_timestamp_seconds",
            "Unix time of the last inventory sync that finished (stored definitions are at most this old)",
            registry=r,
        )
        self.webhook_procs = Gauge(
            "remediator_webhook_processes", "Processes serving listen.webhook's port now (0 when it is not "
            "configured)", registry=r)
        self.leader = Gauge(
            "remediator_leader", "1 on the replica that holds the leader lease and acts on incidents, 0 on a standby",
            ["replica"], registry=r,
        )
        self.leader_epoch = Gauge(
            "remediator_leader_epoch", "The lease's epoch (fencing token) this replica leads at, or last saw",
            ["replica"], registry=r,
        )
        self.reprovision_phase = Histogram(
            "remediator_reprovision_phase_seconds",
            "Time a reprovision spent in each phase (boot_device, power_cycle, hook, waiting, activating), by "
            "how the phase ended (ok, failed)", ["phase", "outcome"], buckets=_PHASE_BUCKETS, registry=r,
        )
        self.power_cycles = Counter(
            "remediator_power_cycles", "Power cycles (or power-ons of an off host) a reprovision asked a power device "
            "for, and those it skipped because the host had already booted from the network", ["result"], registry=r,
        )
        for result in ("cycled", "powered_on", "skipped"):
            self.power_cycles.labels(result=result)
        # Series that exist from the start at 0: a rate over a counter born at its first event misses
        # that event, so the dashboards' first recovery, fence and webhook call would not show.
        for kind in Remediation:
            self.alert_to_recovery.labels(kind=kind.value)
            self.gave_up.labels(kind=kind.value)
            self.opened.labels(kind=kind.value)
            for outcome in TERMINAL_STATES:
                self.closed.labels(kind=kind.value, outcome=outcome.value)
        for path in OPENED_BY:
            self.opened_by.labels(path=path)
        for code in ("200", "400", "401", "413", "503"):
            self.webhook_requests.labels(code=code)
        for outcome in ("off", "failed", "confirmed_by_operator"):
            self.fencing.labels(outcome=outcome)

    # ---- one call per fact, so callers do not need to know label names

    def reprovision_phase_finished(self, phase: str, outcome: str, seconds: float) -> None:
        self.reprovision_phase.labels(phase=phase.removeprefix("reprovision_"), outcome=outcome).observe(seconds)

    def power_cycle(self, result: str) -> None:
        self.power_cycles.labels(result=result).inc()

    def incident_opened_by(self, path: str) -> None:
        self.opened_by.labels(path=path).inc()

    def webhook_request(self, status_code: int) -> None:
        self.webhook_requests.labels(code=str(status_code)).inc()

    def webhook_processes(self, running: int) -> None:
        self.webhook_procs.set(running)

    def alert_received(self, result: str, n: int = 1) -> None:
        if n:
            self.alerts_received.labels(result=result).inc(n)

    def transition(self, kind: str, from_state: str | None, to_state: str) -> None:
        self.transitions.labels(kind=kind, from_state=from_state or "", to_state=to_state).inc()
        if from_state is None:
            self.opened.labels(kind=kind).inc()
        if to_state in TERMINAL_STATES and from_state not in TERMINAL_STATES:
            self.closed.labels(kind=kind, outcome=to_state).inc()

    def action_finished(self, action: str, outcome: str, seconds: float) -> None:
        self.action_duration.labels(action=action, outcome=outcome).observe(seconds)

    def recovered(self, kind: str, seconds_since_alert: float) -> None:
        self.alert_to_recovery.labels(kind=kind).observe(max(seconds_since_alert, 0.0))

    def fence_outcome(self, outcome: str) -> None:
        self.fencing.labels(outcome=outcome).inc()

    def set_storm(self, held: bool, unhealthy_share: float) -> None:
        self.storm_hold.set(1 if held else 0)
        self.unhealthy_host_share.set(unhealthy_share)

    def failed(self, kind: str) -> None:
        self.gave_up.labels(kind=kind).inc()

    def inventory_synced(self, at_unix: float) -> None:
        self.inventory_sync.set(at_unix)

    def set_leader(self, leading: bool, replica: str = "", epoch: int = 0) -> None:
        self.leader.labels(replica=replica).set(1 if leading else 0)
        self.leader_epoch.labels(replica=replica).set(epoch)

    # ---- state read from the store at scrape time

    def watch_store(self, store: Store, host_names: Callable[[], Iterable[str]]) -> None:
        self.registry.register(StoreCollector(store, host_names))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class StoreCollector(Collector):
    """Incidents by state and hosts by condition, fresh from the store each scrape."""

    def __init__(self, store: Store, host_names: Callable[[], Iterable[str]]):
        self.store = store
        self.host_names = host_names

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the store's content; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("remediator_store_up", "1 if the state store answered this scrape")
        try:
            counts = self.store.incident_counts()
            states = self.store.host_states()
            incidents_open = self.store.list_incidents(open_only=True, limit=MAX_OPEN_INCIDENT_SERIES)
        except StoreError as e:
            log.warning("metrics: store did not answer, incident and host metrics left out: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        incidents = GaugeMetricFamily("remediator_incidents_open", "Open incidents by state", labels=["state"])
        # every open state gets a sample, 0 included, so `remediator_incidents_open{state="failed"} > 0` is stable
        for state in sorted({s.value for s in State if s not in TERMINAL_STATES} | set(counts)):
            incidents.add_metric([state], counts.get(state, 0))
        yield incidents
        hosts = GaugeMetricFamily(
            "remediator_hosts", "Inventory hosts by the condition the remediator believes", labels=["condition"]
        )
        by_condition = {c.value: 0 for c in HostCondition}
        per_host = GaugeMetricFamily(
            "remediator_host_condition", "1 for the condition the remediator believes each host is in (a state set)",
            labels=["host", "condition"],
        )
        for name in self.host_names():
            current = (states[name].condition if name in states else HostCondition.UP).value
            by_condition[current] += 1
            for condition in HostCondition:
                per_host.add_metric([name, condition.value], 1 if condition.value == current else 0)
        for condition, n in by_condition.items():
            hosts.add_metric([condition], n)
        yield hosts
        yield per_host
        open_incidents = GaugeMetricFamily(
            "remediator_incident_open", "1 per open incident, with its host, subject, kind and state",
            labels=["host", "subject", "kind", "state"],
        )
        for incident in incidents_open:
            open_incidents.add_metric([incident.host, incident.subject, str(incident.kind), incident.state], 1)
        yield open_incidents
