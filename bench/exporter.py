"""Our exporter against the Debian prometheus-libvirt-exporter on the same lab host, interleaved.

One lab host with 20 running and 5 shut-off tiny guests. Both exporters run in the root
namespace against the host's libvirtd over qemu+tcp (the same transport, the same daemon), each
on a loopback port. After a warm-up (the first getAllDomainStats on a fresh daemon is slow, and
our exporter fills its definition cache), the bench scrapes them in turn, alternating who goes
first each round, and times each whole HTTP scrape from the client. A third process, our exporter
with `cpu_time_source: stats`, is measured the same way to show why `info` is the default.

    python -m bench.exporter [--scrapes 60] [--output bench/results/exporter.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab import Lab

REPO = Path(__file__).resolve().parents[1]
RUNNING, SHUT_OFF, WARMUP = 20, 5, 5


@dataclass
class Target:
    name: str
    proc: subprocess.Popen
    url: str
    times: list[float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read().decode()
    return time.perf_counter() - started, body


def wait_serving(target: Target, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            scrape(target.url)
            return
        except OSError:
            if target.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{target.name} did not serve {target.url} (exit {target.proc.poll()})")
            time.sleep(0.1)


def series(body: str) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith("#"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start(name: str, argv: list[str], port: int, log: Path) -> Target:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    return Target(name, proc, f"http://127.0.0.1:{port}/metrics", [])


def ours(uri: str, workdir: Path, cpu_time_source: str) -> Target:
    port = free_port()
    config = workdir / f"ours-{cpu_time_source}.yml"
    config.write_text(yaml.safe_dump({"cpu_time_source": cpu_time_source, "scrape_timeout_seconds": 10.0}))
    argv = [sys.executable, "-m", "exporter.main", "--libvirt-uri", uri, "--listen", f"127.0.0.1:{port}",
            "--host-name", "bench-h1", "--config", str(config)]
    return start(f"ours ({cpu_time_source})", argv, port, workdir / f"ours-{cpu_time_source}.log")


def peer(uri: str, workdir: Path) -> Target:
    port = free_port()
    argv = ["prometheus-libvirt-exporter", f"--libvirt.uri={uri}", f"--web.listen-address=127.0.0.1:{port}"]
    return start("prometheus-libvirt-exporter", argv, port, workdir / "peer.log")


def run(scrapes: int, output: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-exporter-") as tmp, Lab(hosts=1) as lab:
        workdir = Path(tmp)
        host = lab.hosts[0]
        for i in range(RUNNING):
            lab.define_guest(host, f"run{i:02d}", metadata=lab.ha_metadata(protected=i % 2 == 0, priority=i))
        for i in range(SHUT_OFF):
            lab.define_guest(host, f"off{i:02d}", start=False, metadata=lab.ha_metadata(protected=True))
        targets = [ours(host.uri, workdir, "info"), peer(host.uri, workdir), ours(host.uri, workdir, "stats")]
        try:
            for target in targets:
                wait_serving(target)
                for _ in range(WARMUP):
                    scrape(target.url)
            bodies = {}
            load_before = os.getloadavg()[0]
            for round_ in range(scrapes):
                order = targets if round_ % 2 == 0 else list(reversed(targets))
                for target in order:
                    elapsed, bodies[target.name] = scrape(target.url)
                    target.times.append(elapsed)
            load_after = os.getloadavg()[0]
        finally:
            for target in targets:  # by pid: only what this bench started
                target.proc.terminate()
                target.proc.wait(10)
    mine, theirs, mine_stats = targets
    result = {
        "ours_p50_s": round(percentile(mine.times, 0.5), 5),
        "peer_p50_s": round(percentile(theirs.times, 0.5), 5),
        "ratio_p50": round(percentile(mine.times, 0.5) / percentile(theirs.times, 0.5), 3),
        "ours_p95_s": round(percentile(mine.times, 0.95), 5),
        "peer_p95_s": round(percentile(theirs.times, 0.95), 5),
        "series_ours": series(bodies[mine.name]),
        "series_peer": series(bodies[theirs.name]),
        "series_peer_libvirt": sum(1 for line in bodies[theirs.name].splitlines() if line.startswith("libvirt_")),
        "ours_cpu_time_source_stats_p50_s": round(percentile(mine_stats.times, 0.5), 5),
        "scrapes_each": scrapes,
        "warmup_scrapes_each": WARMUP,
        "guests_running": RUNNING,
        "guests_shut_off": SHUT_OFF,
        "transport": "qemu+tcp, both exporters in the root namespace, one lab host",
        "cores": os.cpu_count(),
        # The machine may be shared (other labs, tests): its 1-minute load around the timed
        # rounds says how busy; the ratio compares both exporters under the same load.
        "load1_before": round(load_before, 2),
        "load1_after": round(load_after, 2),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.exporter", description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=60, help="timed scrapes of each exporter (default 60)")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "exporter.json")
    args = parser.parse_args(argv)
    if args.scrapes < 1:
        parser.error("--scrapes must be at least 1")
    result = run(args.scrapes, args.output)
    print(json.dumps(result, indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
