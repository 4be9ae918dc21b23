"""listen.webhook: a port for Alertmanager alone, served by several processes, so ingest grows with cores.

Why processes: one Python process gives the webhook one core at most (the GIL), and an alert costs about
1 ms of it (cheroot, Flask, the payload, the store's commit): some 800 alerts/s, whatever the machine has.
Threads do not help; processes do. `make bench-ingest` measures both.

How: the service binds the port itself and hands the listening socket to `processes` children
(`python -m remediator.webhook_worker`), which all accept from it: the kernel gives each new connection to
one of them, and connections waiting while a child restarts wait in the one queue, not lost. Each child
serves POST /api/v1/alerts (Alertmanager's credential only), /healthz and /readyz, with its own store
connection and group commit: a 200 still means committed, and several writers on one SQLite file are
what its WAL mode is for. The API and /metrics stay on listen.port, in the service.

What the service needs from a child it gets on the child's stdout, one line per fact (webhook_worker.Relay):
its requests and alerts, counted into the service's own metrics, and a wake-up for the engine after new
alerts, so an alert posted to a child is acted on as soon as one posted to the service. The child's stdin is
its lifeline: the config it runs with (the text the service loaded, so a file edited since cannot give the
children another store), then nothing until it closes, when the service stops or dies. A child that dies is
started again, after a pause that doubles up to REBIRTH_MAX_S while it keeps dying quickly.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable

from remediator.config import Config, parse_config

log = logging.getLogger("remediator.webhook")

REBIRTH_FIRST_S = 1.0
REBIRTH_MAX_S = 30.0
STABLE_S = 60.0  # a child that ran this long is healthy again: its next death restarts it at once
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def loaded_text(config: Config) -> str:
    """The config file's text, checked to be what `config` was loaded from (same environment)."""
    text = Path(config.source).read_text(encoding="utf-8")
    if parse_config(text, source=config.source, env=os.environ) != config:
        raise RuntimeError(f"{config.source} changed since the service loaded it: start the service again")
    return text


def listening_socket(host: str, port: int, backlog: int = 128) -> socket.socket:
    """The webhook's listening socket, inheritable by the children; TCP_NODELAY, as cheroot sets it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog, reuse_port=False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.set_inheritable(True)
    return sock


class WebhookProcesses:
    """The children serving listen.webhook.port; `apply(line)` is what the service does with their reports."""

    def __init__(self, config: Config, metrics: Any, wake: Callable[[], None], replica: str = "remediator"):
        if config.listen.webhook is None:
            raise ValueError("listen.webhook is not configured")
        self.config = config
        self.settings = config.listen.webhook
        self.metrics = metrics
        self.wake = wake
        self.replica = replica
        self._text = loaded_text(config)
        self._sock: socket.socket | None = None
        self.port: int | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._children: dict[int, subprocess.Popen] = {}  # slot -> its running child
        self._ready: set[int] = set()
        self._all_ready = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- the service's side

    def start(self) -> int:
        """Bind the port (0: a free one) and start the children; returns the port."""
        self._sock = listening_socket(self.config.listen.host, self.settings.port)
        self.port = self._sock.getsockname()[1]
        for slot in range(self.settings.processes):
            thread = threading.Thread(target=self._keep, args=(slot,), name=f"webhook-{slot}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self.port

    def wait_ready(self, timeout: float) -> bool:
        return self._all_ready.wait(timeout)

    def running(self) -> int:
        with self._lock:
            return sum(1 for p in self._children.values() if p.poll() is None)

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._children.values() if p.poll() is None]

    def stop(self, grace_s: float = 5.0) -> None:
        """Close every child's lifeline (it stops as on SIGTERM), wait up to `grace_s`, then kill."""
        self._stopping.set()
        with self._lock:
            children = list(self._children.values())
        for proc in children:
            _close(proc.stdin)
        deadline = time.monotonic() + grace_s
        for proc in children:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("webhook process %s did not stop within %.0f s: killed", proc.pid, grace_s)
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(2.0)
        if self._sock is not None:
            self._sock.close()
        self.metrics.webhook_processes(0)

    # ---- one slot: a child, and the next one when it dies

    def _keep(self, slot: int) -> None:
        pause = REBIRTH_FIRST_S
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                proc = self._spawn(slot)
            except OSError as err:
                log.error("webhook process %d could not start: %s", slot, err)
            else:
                self._follow(slot, proc)
                code = proc.wait()
                with self._lock:
                    self._children.pop(slot, None)
                    self._ready.discard(slot)
                    self._all_ready.clear()
                self.metrics.webhook_processes(self.running())
                if self._stopping.is_set():
                    return
                log.error("webhook process %d (pid %d) exited with %s: starting another in %.0f s",
                          slot, proc.pid, code, pause if time.monotonic() - started < STABLE_S else 0)
            if time.monotonic() - started >= STABLE_S:
                pause = REBIRTH_FIRST_S
                continue
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, REBIRTH_MAX_S)

    def _spawn(self, slot: int) -> subprocess.Popen:
        assert self._sock is not None
        fd = self._sock.fileno()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "remediator.webhook_worker", "--fd", str(fd),
             "--name", f"{self.replica}/webhook-{slot}", "--log-level", logging.getLevelName(logging.getLogger().level)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(fd,), env=env)
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps({"source": self.config.source, "text": self._text}).encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: _follow sees its stdout close, _keep its exit code
        with self._lock:
            self._children[slot] = proc
        return proc

    def _follow(self, slot: int, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                self.apply(raw.decode().split(), slot)
            except (ValueError, IndexError):
                log.warning("webhook process %d: unreadable report %r", slot, raw[:200])

    def apply(self, words: list[str], slot: int) -> None:
        """One report of a child (webhook_worker.Relay writes them)."""
        kind = words[0]
        if kind == "request":
            self.metrics.webhook_request(int(words[1]))
        elif kind == "alerts":
            self.metrics.alert_received(words[1], int(words[2]))
        elif kind == "wake":
            self.wake()
        elif kind == "ready":
            with self._lock:
                self._ready.add(slot)
                if len(self._ready) == self.settings.processes:
                    self._all_ready.set()
            self.metrics.webhook_processes(self.running())
        else:
            raise ValueError(kind)


def _close(stream: IO[bytes] | None) -> None:
    try:
        if stream is not None:
            stream.close()
    except OSError:
        pass
