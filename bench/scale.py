"""`make bench-scale`: a simulated fleet of 1,000 hosts and 20,000 VMs through the real placement,
store, webhook and engine. Results in bench/results/scale.json.

1. The fleet (bench/fleet.py: libvirt's test driver, one node file per host, the real libvirt edge)
   and a real inventory sync of it into a SQLite store (timed: inventory_sync_s).
2. Placement of a 50-host evacuation (1,000 VMs) over the other 950 hosts: `placement.place` on the
   hosts as the world sees them, by allocation (no Prometheus) and by measured load, median of
   `--repeat` runs; the slower of the two is `placement_1000_vms_s`. Beside it the same evacuation
   through `World.place`, which first reads every host's capacity through the libvirt edge.
3. Webhook ingest for `--ingest-seconds` on SQLite, then on PostgreSQL (Debian's server, private, on
   loopback, fsync on) (bench/scale_ingest.py: wrk on loopback, the server's CPU per alert, the same
   server's /healthz as the floor), each in two shapes: the webhook in the service's one process, then
   on listen.webhook's `--webhook-processes` processes (the headline keys).
4. Decisions per second: the engine in dry run takes one VMDown incident per host to its verdict
   (bench/scale_decide.py).
5. Failover: three replicas on a private PostgreSQL, the leader killed (bench/failover.py).

`--only PART...` runs some parts alone (`make bench-ingest` is `--only ingest`); the other keys are
null, and such a run writes no file unless `--output` names one, so scale.json always holds a whole run.

The machine's load average is recorded before and after: other work on a shared 2-core machine
makes these figures indicative; a quiet machine gives the reference ones.

    python -m bench.scale [--hosts 1000] [--vms-per-host 20] [--evacuate 50] [--ingest-seconds 60]
                          [--connections 8] [--only placement ingest decisions failover]
                          [--output bench/results/scale.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench import scale_decide, scale_ingest
from bench.fleet import WEBHOOK_TOKEN, Fleet, build_fleet, fleet_config_yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "bench/results/scale.json"
FAILOVER_NOTE = ("p50 of the leader's kill -9 to a standby acting (lease taken, resumed, running), three replicas "
                 "on a private PostgreSQL (bench/failover.py, `make bench-failover`); details.failover has each run")
TARGETS = {"placement_1000_vms_s": "<= 1", "ingest_alerts_per_s": ">= 1000", "ingest_p99_ms": "<= 50",
           "failover_s": "<= lease_s + 2"}


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall seconds of `repeat` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench_placement(fleet: Fleet, config, store, hypervisors, evacuate: int, repeat: int) -> dict:
    from remediator import placement
    from remediator.model import HostCondition
    from remediator.world import World

    down = set(fleet.hosts[:evacuate])
    vms = [v.as_protected(h) for h in fleet.hosts[:evacuate] for v in fleet.vms[h]]
    groups = {v.uuid: v.group for h in fleet.hosts for v in fleet.vms[h]}
    out: dict = {"vms": len(vms), "hosts_evacuated": evacuate, "hosts_left": len(fleet.hosts) - evacuate}
    for label, with_load in (("by_allocation", False), ("by_load", True)):
        caps = fleet.capacities(down, with_load)
        seconds, plan = timed(lambda: placement.place(caps, vms, placement.Overcommit(), group_of=groups,
                                                      exclude=down), repeat)
        out[label] = {"seconds": round(seconds, 3), "placed": len(plan.assignments), "unplaced": len(plan.unplaced)}
    world = World(config, store, hypervisors, None, scale_decide.now)
    for host in down:
        store.set_host_state(host, HostCondition.DOWN, "bench: evacuated", scale_decide.now())
    try:
        seconds, (plan, caps) = timed(lambda: world.place(vms, exclude=down), 1)
    finally:
        for host in down:
            store.set_host_state(host, HostCondition.UP, "bench: back", scale_decide.now())
    out["through_world"] = {"seconds": round(seconds, 3), "placed": len(plan.assignments),
                            "note": "World.place: every host's capacity read through the libvirt edge "
                                    "(test driver, no network), then placement.place"}
    return out


def postgresql_ingest(fleet: Fleet, work: Path, args) -> dict:
    """Ingest on PostgreSQL: a private Debian server (lab/postgres.py), fsync on, as in production (the
    webhook's answer means committed). A missing server or a store that cannot open fails the bench."""
    from lab.postgres import PostgresServer
    from remediator.edges.libvirt import Hypervisors
    from remediator.reconcile import sync_inventory
    from remediator.store import open_store

    with PostgresServer() as server:
        url = server.create_database("bench_scale")
        store = open_store(url)
        config = fleet.config(url, dry_run=True)
        hypervisors = Hypervisors(config.host_uris, connect_timeout=config.libvirt_connect_timeout_s)
        try:
            sync_inventory(config, store, hypervisors, scale_decide.now())
        finally:
            hypervisors.close()
            store.close()
        count = lambda: int(server.sql("SELECT count(*) FROM alerts", "bench_scale").strip())  # noqa: E731
        return both_shapes(fleet, url, count, work / "ingest-postgresql", args)


def sqlite_alert_count(path: Path):
    def count() -> int:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM alerts").fetchone()[0])
    return count


PARTS = ("placement", "ingest", "decisions", "failover")


def both_shapes(fleet: Fleet, url: str, count, stem: Path, args) -> dict:
    """One store, two shapes of the service in turn: the webhook on listen.port, in the service's process
    (the default), then on listen.webhook's `--webhook-processes` processes. The second is the headline
    figure; the first stays beside it, with the ratio between them."""
    shapes = {}
    for first_run, (name, processes) in zip((1, 11), (("one_process", 0), ("processes", args.webhook_processes))):
        path = stem.with_name(f"{stem.name}-{name}.yml")
        path.write_text(fleet_config_yaml(fleet.uris, url, dry_run=True, port=0, threads=args.threads,
                                          webhook_processes=processes))
        shapes[name] = scale_ingest.measure(path, count, stem.parent / "vms.txt", WEBHOOK_TOKEN,
                                            seconds=args.ingest_seconds, connections=args.connections,
                                            first_run=first_run)
    headline, one = shapes["processes"], shapes["one_process"]
    return {**headline, "one_process": one,
            "rate_ratio_to_one_process": round(headline["alerts_per_s"] / max(one["alerts_per_s"], 1e-9), 3)}


def ingest_both(fleet: Fleet, seed: Path, work: Path, args) -> dict:
    """Webhook ingest on SQLite (a copy of the synced seed store), then on PostgreSQL; each in both shapes."""
    ingest_db = work / "ingest.db"
    shutil.copy(seed, ingest_db)
    sqlite = both_shapes(fleet, f"sqlite:///{ingest_db}", sqlite_alert_count(ingest_db), work / "ingest-sqlite", args)
    print(f"ingest sqlite: {json.dumps(sqlite)}", flush=True)
    pg = postgresql_ingest(fleet, work, args)
    print(f"ingest postgresql: {json.dumps(pg)}", flush=True)
    return {"sqlite": sqlite, "postgresql": pg}


def run_parts(args, work: Path) -> tuple[Fleet, dict]:
    """The parts `--only` names (every one by default), each on the one synced fleet; their figures by part."""
    from remediator.edges.libvirt import Hypervisors
    from remediator.reconcile import sync_inventory
    from remediator.store import open_store

    fleet = build_fleet(work / "fleet", args.hosts, args.vms_per_host)
    (work / "vms.txt").write_text("".join(f"{h} {v.name} {v.uuid}\n" for h in fleet.hosts for v in fleet.vms[h]))
    seed = work / "seed.db"
    config = fleet.config(f"sqlite:///{seed}", dry_run=True)
    hypervisors = Hypervisors(config.host_uris, connect_timeout=config.libvirt_connect_timeout_s)
    out: dict = {}
    try:
        if set(args.only) & {"placement", "ingest", "decisions"}:
            store = open_store(config.store.url)
            try:
                sync_s, report = timed(lambda: sync_inventory(config, store, hypervisors, scale_decide.now()), 1)
                out["inventory_sync_s"] = round(sync_s, 2)
                print(f"inventory: {report.protected} protected VMs on {len(fleet.hosts)} hosts in {sync_s:.1f} s",
                      flush=True)
                if "placement" in args.only:
                    out["placement"] = bench_placement(fleet, config, store, hypervisors, args.evacuate, args.repeat)
                    print(f"placement: {json.dumps(out['placement'])}", flush=True)
            finally:
                store.close()
        if "ingest" in args.only:
            out["ingest"] = ingest_both(fleet, seed, work, args)
        if "decisions" in args.only:
            decide_db = work / "decide.db"
            shutil.copy(seed, decide_db)
            store = open_store(f"sqlite:///{decide_db}")
            try:
                out["decisions"] = scale_decide.measure(config, store, hypervisors, fleet.down_vms())
            finally:
                store.close()
            print(f"decisions: {json.dumps(out['decisions'])}", flush=True)
    finally:
        hypervisors.close()
    if "failover" in args.only:
        from bench import failover  # three replicas on a private PostgreSQL, the leader killed (bench/failover.py)

        out["failover"] = failover.measure(args.failover_runs)
        print(f"failover: {json.dumps({k: v for k, v in out['failover'].items() if k != 'runs'})}", flush=True)
    return fleet, out


def summary(parts: dict) -> dict:
    """The issue's keys from the parts that ran (None for a part that did not)."""
    placement, ingest = parts.get("placement"), parts.get("ingest") or {}
    sqlite, pg = ingest.get("sqlite"), ingest.get("postgresql")
    lease = parts.get("failover") or {}
    return {
        "placement_1000_vms_s": max(placement["by_allocation"]["seconds"], placement["by_load"]["seconds"])
        if placement else None,
        "ingest_sqlite_alerts_per_s": sqlite["alerts_per_s"] if sqlite else None,
        "ingest_sqlite_p99_ms": sqlite["p99_ms"] if sqlite else None,
        "ingest_postgresql_alerts_per_s": pg["alerts_per_s"] if pg else None,
        "ingest_postgresql_p99_ms": pg["p99_ms"] if pg else None,
        "decisions_per_s": parts["decisions"]["decisions_per_s"] if "decisions" in parts else None,
        "failover_s": lease.get("failover_s"),
        "lease_s": lease.get("lease_s"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--vms-per-host", type=int, default=20)
    ap.add_argument("--evacuate", type=int, default=50, help="hosts whose VMs the placement run moves")
    ap.add_argument("--repeat", type=int, default=5, help="placement runs (median)")
    ap.add_argument("--ingest-seconds", type=int, default=60)
    ap.add_argument("--connections", type=int, default=8, help="wrk's keep-alive connections (closed loop)")
    ap.add_argument("--threads", type=int, default=8, help="the webhook server's threads (listen.threads)")
    ap.add_argument("--webhook-processes", type=int, default=2,
                    help="listen.webhook.processes of the headline ingest figures (the one-process shape runs too)")
    ap.add_argument("--failover-runs", type=int, default=5, help="leader kills (bench/failover.py)")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                    help="run these parts alone (`make bench-ingest` is --only ingest); the others' keys are null")
    ap.add_argument("--output", default=None,
                    help="where the results go; default bench/results/scale.json for a full run, none (printed "
                         "only) when --only leaves a part out, so a partial run never replaces the full figures")
    args = ap.parse_args(argv)
    output = args.output or (str(DEFAULT_OUTPUT) if set(args.only) == set(PARTS) else None)

    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        fleet, parts = run_parts(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    ingest = parts.get("ingest") or {}
    result = {
        **summary(parts),
        "notes": {
            **({"partial": f"only {', '.join(args.only)} ran (--only); the other keys are null"}
               if set(args.only) != set(PARTS) else {}),
            "failover_s": FAILOVER_NOTE,
            "indicative": "measured on a shared 2-core machine (see load_average); rerun on a quiet machine "
                          "for reference figures",
            "fleet": "libvirt's test driver in process through the real libvirt edge: the product's CPU cost, "
                     "without a real fleet's network round trips (bench/fleet.py)",
            "decisions": "each VMDown incident looks for its VM on every host that is not fenced, twice (verify, "
                         "then never-twice before the start): 2 x hosts libvirt lookups, one host after another; "
                         "most of the time (py-spy)",
            "ingest": "headline keys: listen.webhook with --webhook-processes processes (details.ingest_*); "
                      "details.ingest_*.one_process: the webhook in the service's process, as without listen.webhook "
                      "(the GIL keeps it to about one core). server_cpu_ms_per_alert is over every process of the "
                      "server; wrk runs on the same cores",
        },
        "targets": TARGETS,
        "details": {"inventory_sync_s": parts.get("inventory_sync_s"), "placement": parts.get("placement"),
                    "ingest_sqlite": ingest.get("sqlite"), "ingest_postgresql": ingest.get("postgresql"),
                    "decisions": parts.get("decisions"), "failover": parts.get("failover")},
        "parameters": {"parts": list(args.only), "hosts": args.hosts, "vms": args.hosts * args.vms_per_host,
                       "vms_per_host": args.vms_per_host, "evacuated_hosts": args.evacuate,
                       "placement_repeat": args.repeat, "ingest_seconds": args.ingest_seconds,
                       "wrk_connections": args.connections, "server_threads": args.threads,
                       "webhook_processes": args.webhook_processes,
                       "down_vms_for_decisions": len(fleet.down_vms()), "cpus": os.cpu_count()},
        "load_average": {"start": [round(x, 2) for x in load_before], "end": [round(x, 2) for x in load_after]},
        "started_at": started_at,
    }
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("details", "notes", "targets")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
