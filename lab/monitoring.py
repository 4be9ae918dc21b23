"""Real Prometheus and Alertmanager processes for tests and the demo.

    prom = Prometheus({"global": {"scrape_interval": "1s"}}, rule_files=[...], workdir=tmp)
    prom.config["scrape_configs"] = [{"job_name": "self", "static_configs": [{"targets": [prom.address]}]}]
    with prom:                                  # start() waits until /-/ready answers
        prom.query("up")

Each instance listens on a free loopback port (chosen at construction, so a config can name
it before start), keeps its data in workdir, and is stopped by its own pid.
"""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import requests
import yaml

from lab import procs

READY_TIMEOUT_S = 15.0


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Daemon:
    binary = ""
    log_name = ""

    def __init__(self, config: dict, workdir: str | Path, port: int | None = None):
        self.config = config
        self.workdir = Path(workdir)
        self.port = port or free_tcp_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _write_config(self) -> Path:
        raise NotImplementedError

    def start(self) -> "_Daemon":
        if self.proc is not None:
            raise RuntimeError(f"{self.binary} already started (pid {self.proc.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise RuntimeError(f"{self.binary} exited with {code} before ready: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.binary} not ready after {READY_TIMEOUT_S} s: see {self.log_path}")
            time.sleep(0.05)

    def reload(self) -> None:
        """Re-write the config file and ask the process to re-read it (--web.enable-lifecycle)."""
        self._write_config()
        r = requests.post(f"{self.url}/-/reload", timeout=5)
        r.raise_for_status()

    def stop(self) -> None:
        if self.proc is None:
            return
        procs.stop_child(self.proc, 10)
        self.proc = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Prometheus(_Daemon):
    binary = "prometheus"
    log_name = "prometheus.log"

    def __init__(self, config: dict, rule_files: list[str | Path] = (), workdir: str | Path = ".",
                 port: int | None = None):
        super().__init__(config, workdir, port)
        self.rule_files = [str(Path(p).resolve()) for p in rule_files]

    def _write_config(self) -> Path:
        cfg = dict(self.config)
        if self.rule_files:
            cfg["rule_files"] = list(cfg.get("rule_files", [])) + self.rule_files
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def _argv(self) -> list[str]:
        return [self.binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address={self.address}", "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d", "--log.level=warn"]

    def _api(self, path: str, **params) -> dict:
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body.get('error', r.text)}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant query: the result vector (list of {'metric': {...}, 'value': [ts, 'v']})."""
        return self._api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """Range query: the result matrix (list of {'metric': {...}, 'values': [[ts, 'v'], ...]})."""
        return self._api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def alerts(self) -> list[dict]:
        """Active alerts (pending and firing) from /api/v1/alerts."""
        return self._api("alerts")["alerts"]

    def targets(self) -> list[dict]:
        return self._api("targets")["activeTargets"]


class Alertmanager(_Daemon):
    binary = "prometheus-alertmanager"
    log_name = "alertmanager.log"

    def _write_config(self) -> Path:
        path = self.workdir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return path

    def _argv(self) -> list[str]:
        # An empty cluster address: no gossip port (9094) that concurrent instances would share.
        return [self.binary, f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'am-data'}",
                f"--web.listen-address={self.address}", "--cluster.listen-address=",
                "--log.level=warn"]

    def alerts(self) -> list[dict]:
        r = requests.get(f"{self.url}/api/v2/alerts", timeout=10)
        r.raise_for_status()
        return r.json()

    def post_alerts(self, alerts: list[dict]) -> None:
        r = requests.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=10)
        r.raise_for_status()
