"""The soak's injectors: each fault of bench/soak_schedule.py done to a running lab and stack, for real.

Each method does its fault and returns what it saw (pids before and after, seconds down), so the
soak's record says what happened and the lab test (tests/lab/test_soak_injectors.py) can show that
each one really happens. `WebhookCapture` is a second webhook of Alertmanager's receiver, on this
machine's loopback: it keeps every payload Alertmanager sent, for `redeliver_alerts` to post each
one to the remediator once more, with Alertmanager's credential, as a duplicate delivery would.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lab import keeper, procs
from lab.host import in_host
from lab.lab import Lab
from lab.stack import Stack, wait_for


class WebhookCapture:
    """An HTTP receiver on 127.0.0.1 that stores every JSON payload posted to it, in order."""

    def __init__(self) -> None:
        self.payloads: list[dict] = []
        self._lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with capture._lock:
                    capture.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/capture"
        threading.Thread(target=self._server.serve_forever, name="webhook-capture", daemon=True).start()

    def taken(self) -> list[dict]:
        with self._lock:
            return list(self.payloads)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def capture_alertmanager(stack: Stack, capture: WebhookCapture) -> None:
    """Every webhook of the stack's Alertmanager also posts to `capture` (config reloaded in place)."""
    am = stack.alertmanager
    for receiver in am.config["receivers"]:
        hooks = receiver.get("webhook_configs", [])
        if hooks and not any(h["url"] == capture.url for h in hooks):
            hooks.append({**hooks[0], "url": capture.url})
    am.reload()


class Injectors:
    def __init__(self, lab: Lab, stack: Stack, capture: WebhookCapture | None = None):
        self.lab = lab
        self.stack = stack
        self.capture = capture
        self._stress: dict[str, tuple[int, int]] = {}  # host -> (pid, start time) of its stress-ng

    def do(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run the schedule's step `action` with its params; what it saw."""
        return getattr(self, action)(**params)

    # ---- faults with a length -------------------------------------------------------------
    def cpu_stress(self, host: str, workers: int = 1) -> dict:
        """stress-ng in the host (its namespaces; a power loss would end it), `workers` busy CPUs."""
        h = self.lab.host(host)
        argv = in_host(h, ["stress-ng", "--cpu", str(workers), "--timeout", "3600s", "--quiet"])
        pid = keeper.spawn(self.lab.keeper_socket, argv, str(h.log_dir / "stress-ng.log"))
        self._stress[host] = (pid, procs.start_time(pid))
        wait_for(lambda: len(self._stress_pids(host)) > workers, 10, f"stress-ng workers on {host}")
        return {"pid": pid, "processes": len(self._stress_pids(host))}

    def end_cpu_stress(self, host: str, **_) -> dict:
        pid, start = self._stress.pop(host)
        os.kill(pid, signal.SIGTERM)  # stress-ng ends its workers on SIGTERM
        procs.wait_gone(pid, start, 10.0)
        wait_for(lambda: not self._stress_pids(host), 10, f"stress-ng gone from {host}")
        return {"pid": pid}

    def end_all(self) -> None:
        """End every fault with a length still running (the soak's teardown)."""
        for host in list(self._stress):
            self.end_cpu_stress(host)

    def _stress_pids(self, host: str) -> list[int]:
        return [p for p in procs.netns_pids(self.lab.host(host).netns) if _comm(p).startswith("stress-ng")]

    def delay(self, host: str, delay_s: float, loss_percent: int = 0) -> dict:
        self.lab.set_delay(host, delay_s)
        self.lab.packet_loss(host, loss_percent) if loss_percent else self.lab.clear_packet_loss(host)
        return {"delay_s": delay_s, "loss_percent": loss_percent}

    def end_delay(self, host: str, **_) -> dict:
        seen = self.lab.status()
        self.lab.set_delay(host, 0.0)
        self.lab.clear_packet_loss(host)
        loss = next(h["packet_loss"] for h in seen["hosts"] if h["name"] == host)
        return {"packets_seen": loss.get("seen", 0), "packets_dropped": loss.get("dropped", 0)}

    # ---- moments ------------------------------------------------------------------------------
    def restart_prometheus(self, down_s: float = 1.0) -> dict:
        return self._restart(self.stack.prometheus, down_s)

    def restart_alertmanager(self, down_s: float = 1.0) -> dict:
        return self._restart(self.stack.alertmanager, down_s)

    @staticmethod
    def _restart(daemon, down_s: float) -> dict:
        before = daemon.pid
        daemon.stop()
        time.sleep(down_s)
        daemon.start()  # same port, same data directory; returns once /-/ready answers
        return {"pid_before": before, "pid_after": daemon.pid}

    def kill_exporter(self, host: str, down_s: float = 2.0) -> dict:
        """kill -9 the host's exporter, and start it again (as its service manager would) after down_s."""
        h = self.lab.host(host)
        [pid] = self._exporter_pids(host)
        start = procs.start_time(pid)
        procs.kill(pid, start)
        procs.wait_gone(pid, start, 10.0)
        time.sleep(down_s)
        service = next(s for s in h.services if s["name"] == "exporter")
        keeper.spawn(self.lab.keeper_socket, in_host(h, service["argv"]), str(h.log_dir / "exporter.log"))
        wait_for(lambda: self._exporter_pids(host), 10, f"the exporter of {host} running again")
        return {"pid_before": pid, "pid_after": self._exporter_pids(host)[0]}

    def _exporter_pids(self, host: str) -> list[int]:
        return [p for p in procs.netns_pids(self.lab.host(host).netns) if "remediator-exporter" in _cmdline(p)]

    def restart_libvirtd(self, host: str, down_s: float = 2.0) -> dict:
        from lab import host as hostmod
        h = self.lab.host(host)
        before = hostmod.libvirtd_pid(h)
        started = time.monotonic()
        self.lab.restart_libvirtd(h, down_s=down_s)
        return {"pid_before": before, "pid_after": hostmod.libvirtd_pid(h),
                "answering_again_after_s": round(time.monotonic() - started, 2)}

    def redeliver_alerts(self) -> dict:
        """Post every payload Alertmanager sent so far to the remediator once more."""
        payloads = self.capture.taken() if self.capture else []
        codes = [self.stack.post_alerts(p).status_code for p in payloads]
        return {"payloads": len(payloads), "alerts": sum(len(p.get("alerts", [])) for p in payloads),
                "answers": sorted(set(codes))}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
