"""Decisions per second for `make bench-scale`: the real engine, in dry run, over the simulated fleet.

One shut-off VM per host has a firing VMDown alert in the store, as the webhook stores it. The
clock starts when the engine takes the pending alerts and stops when every incident is closed:
each one opened (fsm.start, its first intents in one transaction), verified through the libvirt
edge (the VM is looked for on every host that is not fenced: 1,000 lookups), restarted in place
in dry run ("would start"), and closed with its verdict. Retry timers (none expected) are fired at
once. The engine, its world view, the store and the libvirt edge are the product's; only the
hypervisors are the test driver's (bench/fleet.py says why).

Where the time goes (py-spy, 300 hosts): over half in `Hypervisors.find_running`, called twice per
incident, each a lookup on every host in turn. On a real fleet each lookup is a network round trip.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from remediator.model import Alert, AlertStatus, Remediation


def now() -> datetime:
    return datetime.now(timezone.utc)


def alerts_for(down: list) -> list[Alert]:
    """One firing VMDown alert per (host, VMSpec), as parsed from Alertmanager's post."""
    at = now()
    return [Alert(fingerprint=f"d{i:015x}", status=AlertStatus.FIRING, remediation=Remediation.VM_DOWN,
                  alertname="VMDown", host=host, starts_at=at, vm=vm.name, uuid=vm.uuid,
                  labels={"alertname": "VMDown", "remediation": "vm_down", "host": host, "vm": vm.name,
                          "uuid": vm.uuid})
            for i, (host, vm) in enumerate(down)]


def measure(config, store, hypervisors, down: list, timeout_s: float = 900.0) -> dict:
    from remediator.engine import Engine
    from remediator.metrics import Metrics

    if not config.dry_run:
        raise ValueError("the decisions bench runs the engine in dry run only")
    engine = Engine(config, store, hypervisors, fencer=None, load_source=None, metrics=Metrics())
    store.record_alerts(alerts_for(down), now())
    started = time.perf_counter()
    try:
        engine.handle_pending_alerts()
        deadline = time.monotonic() + timeout_s
        while True:
            if not engine.wait_idle(timeout=max(1.0, deadline - time.monotonic())):
                raise RuntimeError("the engine's actions did not finish in time")
            if not engine.pending_timers():
                break
            engine.fire_timers_now()
        elapsed = time.perf_counter() - started
    finally:
        engine.shutdown()
    floor_s = lookup_floor(hypervisors, config, down[:20])
    incidents = store.list_incidents(limit=len(down) * 2)
    closed = [i for i in incidents if not i.is_open]
    verdicts: dict[str, int] = {}
    for incident in closed:
        verdicts[incident.state] = verdicts.get(incident.state, 0) + 1
    return {
        "incidents": len(incidents), "closed": len(closed), "seconds": round(elapsed, 2),
        "decisions_per_s": round(len(closed) / elapsed, 1), "closed_in_state": verdicts,
        "dry_run_verdicts": sum(1 for i in closed if i.reason.startswith("dry run")),
        "floor_lookups_s_per_incident": round(floor_s, 4),
        "floor_decisions_per_s": round(1 / floor_s, 1),
        "ratio_to_floor": round(len(closed) / elapsed * floor_s, 3),
    }


def lookup_floor(hypervisors, config, sample: list) -> float:
    """The never-twice checks alone, in the same run: seconds of the two `find_running` calls over every
    host that an incident makes (verify, then before the start), the mean over `sample`."""
    hosts = [h.name for h in config.hosts]
    started = time.perf_counter()
    for _, vm in sample:
        hypervisors.find_running(vm.uuid, hosts)
    return 2 * (time.perf_counter() - started) / max(len(sample), 1)
