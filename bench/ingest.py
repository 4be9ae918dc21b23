"""A quick webhook ingest figure on SQLite and PostgreSQL: `remediator serve` with a real store, and a
load generator in another process posting Alertmanager webhook bodies over loopback.

    python -m bench.ingest [--seconds 10] [--workers 16] [--per-post 1] [--backend sqlite|postgresql|both]

Each POST carries `--per-post` alerts with fresh fingerprints (every one a new row, committed before
the 200 as Alertmanager's retry contract needs). The alerts name a host outside the inventory, so they
are stored as ignored in the same transaction and the engine has nothing to do: this measures the
webhook and the store, not decisions. PostgreSQL runs with its durable defaults (fsync, synchronous
commit); SQLite with WAL and synchronous=FULL. The floor beside it, in the same run: the store alone
(the same number of threads calling record_alerts in-process, no HTTP), so `ratio_to_store` says what
the web layer costs. Results: bench/results/ingest.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
import yaml

from lab.postgres import PostgresServer
from lab.monitoring import free_tcp_port
from lab.stack import wait_for

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-ingest-token-0123456789"


def _body(n: int) -> bytes:
    alerts = [{"status": "firing", "labels": {"alertname": "HostDown", "remediation": "host_down", "host": "elsewhere"},
               "annotations": {}, "startsAt": "2026-11-25T10:57:02Z", "endsAt": "0001-01-01T00:00:00Z",
               "generatorURL": "", "fingerprint": uuid.uuid4().hex[:16]} for _ in range(n)]
    return json.dumps({"version": "4", "groupKey": "{}", "truncatedAlerts": 0, "status": "firing",
                       "receiver": "remediator", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "", "alerts": alerts}).encode()


def generate(url: str, seconds: float, workers: int, per_post: int) -> dict:
    """The load generator (its own process): `workers` threads posting for `seconds`; latencies of each POST."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def work() -> None:
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        mine = []
        while time.monotonic() < deadline:
            body = _body(per_post)
            t = time.perf_counter()
            r = session.post(url, data=body, timeout=10)
            mine.append(time.perf_counter() - t)
            if r.status_code != 200:
                with lock:
                    failures[0] += 1
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "failures": failures[0], "seconds": time.monotonic() - started}


def summary(parts: list[dict], per_post: int) -> dict:
    latencies = sorted(x for p in parts for x in p["latencies"])
    elapsed = max(p["seconds"] for p in parts)
    return {"posts": len(latencies), "alerts": len(latencies) * per_post,
            "failures": sum(p["failures"] for p in parts), "seconds": round(elapsed, 2),
            "alerts_per_s": round(len(latencies) * per_post / elapsed, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 2),
            "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2)}


def store_floor(url: str, seconds: float, workers: int, per_post: int) -> float:
    """Alerts per second the store takes from `workers` threads calling it directly (no HTTP)."""
    from datetime import datetime, timezone

    from remediator.alerts import parse_body
    from remediator.store import open_store

    count = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    with open_store(url) as store:
        def work() -> None:
            n = 0
            while time.monotonic() < deadline:
                alerts = parse_body(_body(per_post)).alerts
                store.record_alerts(alerts, datetime.now(timezone.utc), ["not in the inventory"] * len(alerts))
                n += len(alerts)
            with lock:
                count[0] += n
        started = time.monotonic()
        threads = [threading.Thread(target=work) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return round(count[0] / (time.monotonic() - started), 1)


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict:
    pg = PostgresServer() if backend == "postgresql" else None
    try:
        if pg:
            pg.start()
        floor = store_floor(pg.create_database("floor") if pg else f"sqlite:///{workdir}/floor.db",
                            min(args.seconds, 5), args.workers, args.per_post)
        store = pg.create_database("ingest") if pg else f"sqlite:///{workdir}/state.db"
        port = free_tcp_port()
        config = {"listen": {"host": "127.0.0.1", "port": port, "threads": args.workers},
                  "auth": {"alertmanager": {"bearer_token": TOKEN}, "operator": {"bearer_token": TOKEN + "-op"}},
                  "store": {"url": store}, "dry_run": True,
                  "hosts": [{"name": "h1", "uri": "test:///default"}], "vms": []}
        path = workdir / f"{backend}.yml"
        path.write_text(yaml.safe_dump(config))
        log = open(workdir / f"{backend}.log", "wb")
        server = subprocess.Popen([str(Path(sys.executable).parent / "remediator"), "serve", "--config", str(path)],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _ready(port), 30, "remediator /readyz")
            # the load generators: processes of their own (one Python process of `requests` threads
            # tops out near the figures measured), the workers spread over them
            share = max(1, args.workers // args.generators)
            gens = [subprocess.Popen([sys.executable, "-m", "bench.ingest", "--generate",
                                      f"http://127.0.0.1:{port}/api/v1/alerts", "--seconds", str(args.seconds),
                                      "--workers", str(share), "--per-post", str(args.per_post)],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(args.generators)]
            result = summary([json.loads(g.communicate(timeout=args.seconds + 120)[0]) for g in gens], args.per_post)
        finally:
            server.terminate()
            server.wait(15)
            log.close()
        return {"backend": backend, **result, "store_floor_alerts_per_s": floor,
                "ratio_to_store": round(result["alerts_per_s"] / floor, 2)}
    finally:
        if pg:
            pg.stop()


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--per-post", type=int, default=1)
    p.add_argument("--generators", type=int, default=2, help="load generator processes (workers spread over them)")
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    args = p.parse_args()
    if args.generate:
        print(json.dumps(generate(args.generate, args.seconds, args.workers, args.per_post)))
        return 0
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        results = [run_backend(b, args, Path(tmp)) for b in backends]
    report = {"seconds": args.seconds, "workers": args.workers, "per_post": args.per_post,
              "generators": args.generators,
              "load1_at_end": os.getloadavg()[0], "results": results}
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
