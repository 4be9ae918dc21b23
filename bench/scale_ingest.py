"""Webhook ingest for `make bench-scale`: the product's webhook and store in one process, wrk in another.

The server process is what `remediator serve` runs for the webhook: `create_app(config)` (auth,
payload validation, the inventory check, the store's commit before the answer) under `make_server`'s
cheroot, with the config's thread count; with listen.webhook in the config, the webhook is served by
that many processes beside it (remediator/webhook_procs.py, as `serve` starts them), and wrk posts to
their port. The server's CPU is the sum over all its processes. The engine is not attached (its decisions are timed on
their own, bench/scale_decide.py); in its place an object whose notify() sets an event, as the
engine's does, so the wake-up costs what it costs. The store holds the fleet's 20,000 VMs from a
real inventory sync, so every alert is checked against a known VM.

wrk (Debian's, C) is the load generator on loopback: `connections` keep-alive connections, each
posting the next alert as soon as the last was answered (closed loop), for `seconds`. Every alert
is new (fingerprint, startsAt), so each one is an insert and a commit: the worst case for the store.
Afterwards the store's count of alerts must equal the requests wrk saw answered: nothing acknowledged
is missing.

    python -m bench.scale_ingest serve CONFIG      (the server process; prints its port)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from lab import procs

REPO = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("scale_wrk.lua")


class _Wakeable:
    """Stands where the engine would: notify() only sets an event, as Engine.notify does."""

    def __init__(self) -> None:
        self.wake = threading.Event()

    def notify(self) -> None:
        self.wake.set()


def serve(config_path: str) -> int:
    from remediator.serve import make_server
    from remediator.config import load_config
    from remediator.web import create_app, services_of
    from remediator.webhook_procs import WebhookProcesses

    config = load_config(config_path)  # the environment too: the webhook processes read the config with it
    wakeable = _Wakeable()
    app = create_app(config, engine=wakeable)
    server = make_server(config, app)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    port, webhook = server.bind_addr[1], None
    if config.listen.webhook is not None:
        webhook = WebhookProcesses(config, services_of(app).metrics, wake=wakeable.notify)
        port = webhook.start()
        if not webhook.wait_ready(60):
            raise SystemExit("the webhook processes were not ready within 60 s")
    print(f"LISTENING {port} {' '.join(str(p) for p in (webhook.pids() if webhook else []))}", flush=True)
    try:
        server.serve()
    finally:
        if webhook is not None:
            webhook.stop()
        server.stop()
    return 0


def parse_wrk(output: str) -> dict:
    """The JSON line scale_wrk.lua's done() prints."""
    for line in output.splitlines():
        if line.startswith("WRK-JSON "):
            return json.loads(line[len("WRK-JSON "):])
    raise RuntimeError(f"wrk printed no result line:\n{output}")


def summarise(wrk: dict, stored_alerts: int) -> dict:
    """Alerts per second and latency from wrk's figures; every answered post is one alert."""
    failed = wrk["status_errors"] + wrk["read_errors"] + wrk["write_errors"] + wrk["connect_errors"] + wrk["timeouts"]
    answered = wrk["requests"] - failed
    seconds = wrk["duration_us"] / 1e6
    return {
        "alerts_per_s": round(answered / seconds, 1),
        "p50_ms": round(wrk["p50_ms"], 2), "p90_ms": round(wrk["p90_ms"], 2), "p99_ms": round(wrk["p99_ms"], 2),
        "max_ms": round(wrk["max_ms"], 2),
        "requests": wrk["requests"], "failed": failed, "seconds": round(seconds, 2),
        "stored_alerts": stored_alerts,
        "acknowledged_but_missing": max(0, answered - stored_alerts),
    }


def _start_server(config_path: Path, log_path: Path) -> tuple[subprocess.Popen, int, list[int]]:
    """The server process, the port wrk posts to, and the pids of its webhook processes (if any)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.scale_ingest", "serve", str(config_path)],
                            stdout=subprocess.PIPE, stderr=log_path.open("w"), text=True, env=env, cwd=REPO)
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"the webhook server did not start: {line!r}; see {log_path}")
    port, children = int(line.split()[1]), [int(pid) for pid in line.split()[2:]]
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return proc, port, children
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def run_wrk(port: int, vms_file: Path, token: str, seconds: int, connections: int, run: int,
            floor: bool = False) -> dict:
    env = {**os.environ, "BENCH_SCALE_VMS": str(vms_file), "BENCH_SCALE_TOKEN": token, "BENCH_SCALE_RUN": str(run),
           "BENCH_SCALE_FLOOR": "1" if floor else "0"}
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
           "-s", str(LUA), f"http://127.0.0.1:{port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def cpu_seconds(*pids: int) -> float:
    """User + system CPU time of processes so far (/proc/PID/stat), summed."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(config_path: Path, count_alerts, vms_file: Path, token: str, *, seconds: int, connections: int,
            warmup_s: int = 3, floor_s: int = 10, first_run: int = 1) -> dict:
    """Start the server, warm it up, load it for `seconds`, stop it; `count_alerts()` reads the store.
    `first_run`: wrk's runs are numbered from it, so that measures on one store never post the same alerts
    (a repeat is not stored again, and would not be the worst case).

    The server's CPU time per alert is recorded too: on a loaded machine it says what one quiet core
    would sustain (the GIL keeps the webhook to about one core), whatever share of a core it got.
    Then the floor in the same run: the same server's `/healthz` (cheroot + Flask, no auth, no
    body, no store) under the same wrk for `floor_s`, and the webhook's figures as ratios of it."""
    proc, port, children = _start_server(config_path, config_path.with_suffix(".log"))
    pids = (proc.pid, *children)
    try:
        run_wrk(port, vms_file, token, warmup_s, connections, run=first_run)
        before, cpu_before = count_alerts(), cpu_seconds(*pids)
        wrk = run_wrk(port, vms_file, token, seconds, connections, run=first_run + 1)
        cpu = cpu_seconds(*pids) - cpu_before
        floor_cpu_before = cpu_seconds(*pids)
        floor = run_wrk(port, vms_file, token, floor_s, connections, run=first_run + 2, floor=True)
        floor_cpu = cpu_seconds(*pids) - floor_cpu_before
    finally:
        procs.stop_child(proc, 15)
    result = summarise(wrk, count_alerts() - before)
    result["server_cpu_ms_per_alert"] = round(cpu * 1000 / max(result["stored_alerts"], 1), 3)
    result["server_cpu_cores"] = round(cpu / result["seconds"], 2)
    healthz = summarise(floor, floor["requests"])
    healthz_cpu_ms = floor_cpu * 1000 / max(floor["requests"], 1)
    result["floor_healthz"] = {"requests_per_s": healthz["alerts_per_s"], "p99_ms": healthz["p99_ms"],
                               "server_cpu_ms_per_request": round(healthz_cpu_ms, 3),
                               "server_cpu_cores": round(floor_cpu / healthz["seconds"], 2)}
    result["rate_ratio_to_floor"] = round(result["alerts_per_s"] / max(healthz["alerts_per_s"], 1e-9), 3)
    result["cpu_ratio_to_floor"] = round(result["server_cpu_ms_per_alert"] / max(healthz_cpu_ms, 1e-9), 2)
    return {**result, "connections": connections, "webhook_processes": len(children)}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2]))
    sys.exit("usage: python -m bench.scale_ingest serve CONFIG")
