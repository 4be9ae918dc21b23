"""The whole product on a lab: exporters, Prometheus with rules/, Alertmanager routing, the remediator.

    with Lab(3) as lab, Stack(lab, workdir, vms=[...]) as stack:
        lab.crash_guest("h1", "web-1")
        stack.wait_running(...)

Every part is the shipped one, configured the way docs/ tells an operator to: the exporter runs on
each lab host (a service of the host, so a power loss takes it down too), Prometheus loads
rules/hypervisor.rules.yml and recording.rules.yml with rules/prometheus.yml's timings (and scrapes the remediator), Alertmanager routes with
rules/alertmanager.yml (only the webhook address and token file are the lab's), and the remediator
runs as `remediator serve --config FILE` in its own process, so `kill -9` is a real crash.
Used by tests/e2e and the demo; the service never imports it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import requests
import yaml

from lab.lab import Lab
from lab import procs
from lab.storage import SHARED_PATH
from lab.monitoring import Alertmanager, Prometheus, free_tcp_port
from remediator.config.environment import env_name

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "rules"
BIN = Path(sys.executable).parent
EXPORTER_PORT = 9177
# One credential per role, as the docs tell an operator: Alertmanager's may only post alerts, the
# Stack's own calls (and the demo's operator) use the operator's.
ALERTMANAGER_TOKEN = "lab-webhook-token-0123456789abcdef"
OPERATOR_TOKEN = "lab-operator-token-0123456789abcdef"


def exporter_config(host) -> dict:
    """The exporter's view of a lab host: its private libvirt dirs, its own boot directory, and its
    own kernel figures (loadavg, meminfo: real until a test simulates them, lab/figures.py). On a lab
    with storage, the storage check watches the shared storage's mount (as an operator points it at
    the NFS mount: docs/operations.md)."""
    # (checked every second there: a full shared storage is seen before a guest paused on it is moved)
    storage = ({"storage_path": SHARED_PATH, "storage_require_mountpoint": True, "interval_seconds": 1}
               if host.storage else {"storage_path": "/var/lib/libvirt"})
    return {"procfs": str(host.procfs_dir),
            "checks": {"boot_dir": str(host.boot_dir), **storage,
                       "disk_space_paths": ["/", "/var/lib/libvirt"]}}


def start_exporters(lab: Lab, workdir: Path) -> None:
    """remediator-exporter on every lab host, listening on the host's own address."""
    for host in lab.hosts:
        config = workdir / f"exporter-{host.name}.yml"
        config.write_text(yaml.safe_dump(exporter_config(host)))
        lab.add_service(host, "exporter", [
            str(BIN / "remediator-exporter"), "--libvirt-uri", host.uri,
            "--listen", f"{host.address}:{EXPORTER_PORT}", "--host-name", host.name, "--config", str(config),
        ])


RECORDING_RULES = RULES / "recording.rules.yml"  # what the dashboards read


def prometheus_config(lab: Lab, alertmanager: str | None, remediator: str | None = None) -> dict:
    """rules/prometheus.yml with the lab's targets (Alertmanager, the remediator) in place of the example's."""
    config = yaml.safe_load((RULES / "prometheus.yml").read_text())
    config.pop("rule_files", None)  # Prometheus() passes absolute paths itself
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["hypervisor"]["static_configs"] = [
        {"targets": [f"{h.address}:{EXPORTER_PORT}"], "labels": {"host": h.name}} for h in lab.hosts
    ]
    if remediator:
        jobs["remediator"]["static_configs"] = [{"targets": [remediator]}]
    else:
        config["scrape_configs"].remove(jobs["remediator"])
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    else:
        config.pop("alerting", None)
    return config


def alertmanager_config(webhook_url: str | list[str], token_file: Path) -> dict:
    """rules/alertmanager.yml, pointed at this remediator (or every replica of it: one webhook_config
    each in the one receiver, as docs/operations.md shows; the store's dedup makes the copies safe)
    and its token file."""
    config = yaml.safe_load((RULES / "alertmanager.yml").read_text())
    urls = [webhook_url] if isinstance(webhook_url, str) else list(webhook_url)
    for receiver in config["receivers"]:
        hooks = receiver.get("webhook_configs", [])
        if hooks:
            receiver["webhook_configs"] = [
                {**hooks[0], "url": url, "http_config": {**hooks[0]["http_config"], "authorization": {
                    **hooks[0]["http_config"]["authorization"], "credentials_file": str(token_file)}}}
                for url in urls]
    return config


def remediator_config(lab: Lab, *, port: int, store: Path | str, prometheus_url: str | None,
                      vms: list[dict], policy: dict | None = None, settings: dict | None = None,
                      host_settings: dict[str, dict] | None = None) -> dict:
    """A remediator config for the lab: every host with its libvirt URI and its BMC as fence device;
    `store` is a SQLite file or a store URL (postgresql://...); `settings` adds top-level keys (e.g.
    {"dry_run": True}, {"cluster": {...}}), `host_settings` keys of named hosts' entries
    (e.g. {"h1": {"reprovision": {"damaged": "automatic"}}}). The BMC passwords are not in it: they come
    from the environment (fence_environment), as docs/config.md advises for secrets."""
    return {**(settings or {}),
        "listen": {"host": "127.0.0.1", "port": port},
        "auth": {"alertmanager": {"bearer_token": ALERTMANAGER_TOKEN}, "operator": {"bearer_token": OPERATOR_TOKEN}},
        "prometheus": {"url": prometheus_url} if prometheus_url else {},
        "store": {"url": store if isinstance(store, str) else f"sqlite:///{store}"},
        "hosts": [
            {"name": h.name, "uri": h.uri, "fence": {"agent": "fence_ipmilan", "options": {
                "ip": "127.0.0.1", "ipport": h.bmc_port, "username": h.bmc_user, "lanplus": True, "power_wait": 0}},
             **(host_settings or {}).get(h.name, {})}
            for h in lab.hosts
        ],
        "vms": vms,
        "policy": policy or {},
        **({"storage": {"shared_paths": [SHARED_PATH]}} if lab.storage else {}),
    }


def fence_environment(lab: Lab) -> dict[str, str]:
    """REMEDIATOR_FENCE_<HOST>_PASSWORD for each host: its BMC's password, kept out of the config file."""
    return {f"REMEDIATOR_FENCE_{env_name(h.name)}_PASSWORD": h.bmc_password for h in lab.hosts}


class Replica:
    """One `remediator serve` process of the stack: its port, config file and log."""

    def __init__(self, workdir: Path, index: int):
        self.index = index
        self.name = f"r{index}"
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / ("remediator.yml" if index == 0 else f"remediator-{self.name}.yml")
        self.log_path = workdir / ("remediator.log" if index == 0 else f"remediator-{self.name}.log")
        self.proc: subprocess.Popen | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "remediator"), "serve", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
        log.close()

    def ready(self, session: requests.Session) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"remediator {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            return session.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait()
                self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen replica cannot stop otherwise
            procs.stop_child(self.proc, 10)
            self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class Stack:
    def __init__(self, lab: Lab, workdir: str | Path, *, vms: list[dict] = (), policy: dict | None = None,
                 monitoring: bool = True, settings: dict | None = None, rules: Path | None = None,
                 host_settings: dict[str, dict] | None = None, store_url: str | None = None,
                 replicas: int = 1, env: dict[str, str] | None = None):
        """`store_url`: e.g. postgresql://... (None: SQLite in the workdir); `replicas`: how many
        `remediator serve` processes share that store (more than one needs PostgreSQL)."""
        self.lab = lab
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.vms = list(vms)
        self.policy = policy
        self.settings = settings
        self.host_settings = host_settings
        self.rules = rules or RULES / "hypervisor.rules.yml"  # a test may load a variant (e.g. shorter `for:`)
        self.monitoring = monitoring
        if replicas > 1 and not store_url:
            raise ValueError("replicas share one PostgreSQL: give store_url")
        self.replicas = [Replica(self.workdir, i) for i in range(replicas)]
        self.port = self.replicas[0].port
        self.env = dict(env or {})  # added to the remediator processes' environment (a test's opt-in)
        self.prometheus: Prometheus | None = None
        self.alertmanager: Alertmanager | None = None
        self.config_path = self.replicas[0].config_path
        self.store_path = self.workdir / "state.db"
        self.store_url = store_url  # e.g. postgresql://...; None: SQLite at store_path
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"

    @property
    def url(self) -> str:
        """The first replica still running (the API answers on every replica)."""
        return next((r.url for r in self.replicas if r.proc is not None), self.replicas[0].url)

    @property
    def remediator(self) -> subprocess.Popen | None:
        """The first replica's process (the only one unless `replicas` > 1)."""
        return self.replicas[0].proc

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> "Stack":
        try:
            if self.monitoring:
                token_file = self.workdir / "webhook-token"
                token_file.write_text(ALERTMANAGER_TOKEN)
                self.alertmanager = Alertmanager(
                    alertmanager_config([f"{r.url}/api/v1/alerts" for r in self.replicas], token_file),
                    self.workdir / "alertmanager")
                self.alertmanager.start()
                start_exporters(self.lab, self.workdir)
                self.prometheus = Prometheus(
                    prometheus_config(self.lab, self.alertmanager.address, f"127.0.0.1:{self.port}"),
                    rule_files=[self.rules, RECORDING_RULES], workdir=self.workdir / "prometheus")
                self.prometheus.start()
            for replica in self.replicas:
                settings = dict(self.settings or {})
                if len(self.replicas) > 1:
                    settings["cluster"] = {**settings.get("cluster", {}), "replica": replica.name}
                replica.config_path.write_text(yaml.safe_dump(remediator_config(
                    self.lab, port=replica.port, store=self.store_url or self.store_path,
                    prometheus_url=self.prometheus.url if self.prometheus else None,
                    vms=self.vms, policy=self.policy, settings=settings, host_settings=self.host_settings)))
            for replica in self.replicas:
                self.start_remediator(replica=replica.index)
        except BaseException:
            self.stop()
            raise
        return self

    def start_remediator(self, timeout: float = 20.0, replica: int = 0) -> None:
        r = self.replicas[replica]
        r.start(env={**fence_environment(self.lab), **self.env})
        wait_for(lambda: r.ready(self._session), timeout, f"remediator {r.name} /readyz", on_timeout=r.log_tail)

    def kill_remediator(self, replica: int = 0) -> None:
        """kill -9: the crash the store must survive."""
        self.replicas[replica].kill()

    def stop_remediator(self, replica: int | None = None) -> None:
        for r in self.replicas if replica is None else [self.replicas[replica]]:
            r.stop()

    def stop(self) -> None:
        self.stop_remediator()
        for daemon in (self.prometheus, self.alertmanager):
            if daemon is not None:
                daemon.stop()

    def _ready(self) -> bool:
        """The first running replica answers /readyz (lab/abuse.py waits on it)."""
        live = [r for r in self.replicas if r.proc is not None] or self.replicas[:1]
        return live[0].ready(self._session)

    # ---- replicas --------------------------------------------------------------------------
    def cluster(self, replica: int = 0) -> dict:
        """GET /api/v1/cluster of one replica: who it is, who leads, at which epoch."""
        r = self._session.get(f"{self.replicas[replica].url}/api/v1/cluster", timeout=5)
        r.raise_for_status()
        return r.json()

    def leader(self, among: Iterable[int] | None = None) -> int | None:
        """The index of the replica that says it leads (asked directly), or None."""
        for i in among if among is not None else range(len(self.replicas)):
            if self.replicas[i].proc is None:
                continue
            try:
                if self.cluster(i)["leading"]:
                    return i
            except requests.RequestException:
                continue
        return None

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The remediator's last log lines, and what the monitoring stack saw meanwhile: a test that
        waited in vain for the alert path can then tell a missing alert from an ignored one."""
        logs = "\n\n".join(f"--- {r.name}\n{r.log_tail(lines)}" if len(self.replicas) > 1 else r.log_tail(lines)
                           for r in self.replicas)
        return logs + self._monitoring_view()

    def _monitoring_view(self) -> str:
        if self.prometheus is None:
            return ""
        view = []
        for what, read in (("prometheus up", lambda: {s["metric"].get("host"): s["value"][1]
                                                       for s in self.prometheus.query('up{job="hypervisor"}')}),
                           ("prometheus ALERTS", lambda: sorted(
                               f'{s["metric"]["alertname"]}{{{s["metric"].get("host") or s["metric"].get("vm")}}}'
                               f'={s["metric"]["alertstate"]}' for s in self.prometheus.query("ALERTS"))),
                           ("alertmanager", lambda: sorted(
                               f'{a["labels"]["alertname"]}{{{a["labels"].get("host") or a["labels"].get("vm")}}}'
                               f' {a["status"]["state"]} since {a["startsAt"]}' for a in self.alertmanager.alerts())),
                           ("alertmanager log", lambda: self.alertmanager.log_path.read_text(errors="replace")[-1500:])):
            try:
                view.append(f"{what}: {read()}")
            except Exception as e:  # a diagnostic must not hide the failure it explains
                view.append(f"{what}: unreadable ({e})")
        return "\n--- monitoring\n" + "\n".join(view)

    # ---- the remediator's API ------------------------------------------------------------
    def api(self, path: str) -> Any:
        response = self._session.get(f"{self.url}/api/v1/{path.lstrip('/')}", timeout=5)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, json: Any = None) -> requests.Response:
        """An operator's call (the operator's credential)."""
        return self._session.post(f"{self.url}/api/v1/{path.lstrip('/')}", json=json, timeout=10)

    def post_alerts(self, payload: dict) -> requests.Response:
        """A webhook post as Alertmanager makes it, with Alertmanager's credential (the operator's gets 403)."""
        return requests.post(f"{self.url}/api/v1/alerts", json=payload, timeout=10,
                             headers={"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"})

    def incidents(self) -> list[dict]:
        data = self.api("incidents")
        return data["incidents"] if isinstance(data, dict) else data

    def incident(self, subject: str) -> dict | None:
        """The subject's incident ("vm:<uuid>", "host:<name>"; the open one, else the newest) with its
        history and actions, as GET /api/v1/incidents/<id> gives it; None before there is one."""
        found = [i for i in self.incidents() if i["subject"] == subject]
        return self.api(f"incidents/{found[0]['id']}") if found else None

    def metrics(self) -> str:
        return self._session.get(f"{self.url}/metrics", timeout=5).text

    def wait_watching(self, uuids: Iterable[str], timeout: float = 30.0) -> None:
        """Until the stack watches these protected guests: every exporter is up, Prometheus has every
        guest, and the remediator has stored each one's definition (what it restarts them from)."""
        uuids = set(uuids)
        wait_for(lambda: len(self.prometheus.query('up{job="hypervisor"} == 1')) == len(self.lab.hosts), timeout, "every exporter up")
        wait_for(lambda: uuids <= {s["metric"]["uuid"] for s in self.prometheus.query('hypervisor_vm_info{ha="true"}')},
                 timeout, "every protected guest seen by Prometheus")
        wait_for(lambda: uuids <= {v["uuid"] for v in self.api("vms")["vms"] if v["definition"]}, timeout,
                 "every protected guest's definition stored by the remediator", on_timeout=self.log_tail)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
             on_timeout: Callable[[], str] | None = None) -> float:
    """Seconds until condition() is truthy; fails naming `what` (and any context) after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            context = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"not within {timeout} s: {what}{context}")
        time.sleep(interval)
    return time.monotonic() - started
