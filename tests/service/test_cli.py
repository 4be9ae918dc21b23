"""`remediator serve|status|plan` as an operator runs them: real cheroot process, real SQLite, libvirt test driver.

Each test ends only the processes it started, by their pid.
"""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from remediator.cli import EXIT_CONFIG, EXIT_UNPLACED, main, status
from remediator.config import load_config
from remediator.model import HostCondition, ProtectedVM, Remediation
from remediator.store import open_store

from .conftest import operator
from .payloads import alert, body

TOKEN = "test-token-0123456789abcdef"  # Alertmanager's
OPERATOR_TOKEN = "operator-token-0123456789abcdef"  # what `status --api` must send
NOW = datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc)
UUIDS = [f"5f1a9a0e-3c1b-4d2e-9f00-00000000a00{i}" for i in range(4)]

# A libvirt test-driver node: 8 CPUs, 4 GiB, one busy 4-vCPU domain (h2 uses it, so h2 looks loaded).
NODE_BUSY = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>1</threads><active>8</active>
       <mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>4194304</memory>
  <domain type='test'><name>busy</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
    <memory>1048576</memory><vcpu>4</vcpu><os><type>hvm</type></os></domain>
</node>
"""
NODE_EMPTY = NODE_BUSY[: NODE_BUSY.index("  <domain")] + "</node>\n"


def write_config(tmp_path: Path, *, port: int = 0, extra: str = "") -> Path:
    (tmp_path / "busy.xml").write_text(NODE_BUSY)
    (tmp_path / "empty.xml").write_text(NODE_EMPTY)
    path = tmp_path / "remediator.yml"
    path.write_text(
        f"""
auth: {{alertmanager: {{bearer_token: {TOKEN}}}, operator: {{bearer_token: {OPERATOR_TOKEN}}}}}
listen: {{host: 127.0.0.1, port: {port}}}
store: {{url: "sqlite:///{tmp_path}/state.db"}}
limits: {{max_body_bytes: 4096}}
hosts:
  - {{name: h1, uri: "test://{tmp_path}/empty.xml"}}
  - {{name: h2, uri: "test://{tmp_path}/busy.xml"}}
  - {{name: h3, uri: "test://{tmp_path}/empty.xml"}}
vms:
  - {{name: t00, uuid: {UUIDS[0]}, priority: 100, group: web}}
  - {{name: t01, priority: 90, group: web}}
{extra}"""
    )
    return path


def seed_inventory(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/state.db") as s:
        for i, uuid in enumerate(UUIDS):
            s.upsert_vm(ProtectedVM(uuid, f"t0{i}", "h1", 1, 64 << 20, priority=100 - 10 * i,
                                    group="web" if i < 2 else None, xml="<domain/>", protected=True), NOW)


class Served:
    """A `remediator serve` child process and the URL it printed."""

    def __init__(self, config: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remediator.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "REMEDIATOR_LOG_LEVEL": "INFO"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def _wait_for_url(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            m = re.search(r"listening on (https?://\S+)", line)
            if m:
                return m.group(1)
        self.kill()
        raise AssertionError("remediator serve did not start:\n" + "".join(self.log))

    def post_alerts(self, data: bytes, **kw) -> requests.Response:
        return requests.post(f"{self.url}/api/v1/alerts", data=data, timeout=10,
                             headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, **kw)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)  # only the process this test started, by its pid
        return self.proc.wait(timeout=20)


@pytest.fixture
def served(tmp_path):
    started: list[Served] = []

    def start() -> Served:
        s = Served(write_config(tmp_path))
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def test_serve_answers_stores_leads_alone_and_stops_on_sigterm(served, tmp_path):
    s = served()
    ready = requests.get(f"{s.url}/readyz", timeout=5).json()
    assert ready["status"] == "ready" and ready["replica"].endswith(f"-{s.url.rsplit(':', 1)[1]}")
    cluster = lambda: requests.get(f"{s.url}/api/v1/cluster", headers=operator(), timeout=5).json()  # noqa: E731
    deadline = time.monotonic() + 10
    while not cluster()["leading"] and time.monotonic() < deadline:  # one SQLite replica: it takes the lease
        time.sleep(0.05)
    assert cluster()["leader"] == ready["replica"] and cluster()["epoch"] >= 1
    r = s.post_alerts(body())
    assert r.status_code == 200 and r.json()["ignored"] == [
        {"fingerprint": "a1b2c3d4e5f60718", "reason": "VM 't00' (5f1a9a0e-3c1b-4d2e-9f00-00000000a001) is not in the inventory"}
    ]
    assert s.kill(signal.SIGTERM) == 0
    assert any("stopped" in line for line in s.log)


def test_serve_refuses_without_credentials_and_oversized_chunked_bodies(served):
    s = served()
    assert requests.post(f"{s.url}/api/v1/alerts", data=body(), timeout=5).status_code == 401

    def chunks():  # no Content-Length: the limit must hold on the stream too
        for _ in range(10):
            yield b" " * 1024

    r = requests.post(f"{s.url}/api/v1/alerts", data=chunks(), timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 413, r.text
    assert requests.get(f"{s.url}/healthz", timeout=5).status_code == 200


def test_alert_stored_before_200_survives_kill_9(served, tmp_path):
    seed_inventory(tmp_path)
    first = served()
    assert first.post_alerts(body(alert(uuid=UUIDS[0]))).json()["new"] == 1
    assert first.kill() == -signal.SIGKILL
    second = served()
    # the repeat Alertmanager sends after the restart is recognised: stored once
    assert second.post_alerts(body(alert(uuid=UUIDS[0]))).json()["repeats"] == 1
    second.kill(signal.SIGTERM)
    with open_store(f"sqlite:///{tmp_path}/state.db") as store:
        (stored,) = store.recent_alerts()  # one row; the engine (when installed) may have handled it already
        assert stored.alert.uuid == UUIDS[0]


def test_status_tables_from_the_store(tmp_path):
    config = load_config(write_config(tmp_path), env={})
    seed_inventory(tmp_path)
    with open_store(f"sqlite:///{tmp_path}/state.db") as s:
        s.set_host_state("h2", HostCondition.MAINTENANCE, "maintenance by token: BIOS", NOW)
        s.create_incident(f"vm:{UUIDS[2]}", Remediation.VM_DOWN, "h1", UUIDS[2], "t02", "vm_restarting",
                          "not running on any reachable host", NOW)
    out = io.StringIO()
    assert status(config, api=None, out=out) == 0
    text = out.getvalue()
    print(text)
    assert re.search(r"^h2\s+maintenance\s+no\s+-\s+0\s+-\s+maintenance by token: BIOS$", text, re.M)
    assert re.search(r"^t00\s+" + UUIDS[0] + r"\s+h1\s+100\s+web\s+stored$", text, re.M)
    assert re.search(r"^1\s+vm t02 on h1\s+vm_restarting\s+0\s+2026-11-25T11:00:00\s+not running", text, re.M)


def test_status_through_the_api(served, tmp_path, capsys):
    seed_inventory(tmp_path)
    s = served()
    config = write_config(tmp_path)
    assert main(["status", "--config", str(config), "--api", s.url]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^h1\s+up\s+yes\s+-\s+4\s+-$", text, re.M)
    assert "t03" in text and "OPEN INCIDENTS\n(none)" in text


def test_plan_evacuate_places_by_load_and_anti_affinity_changing_nothing(tmp_path, capsys):
    config = write_config(tmp_path)
    seed_inventory(tmp_path)
    before = (tmp_path / "state.db").read_bytes()
    assert main(["plan", "--config", str(config), "--evacuate", "h1"]) == 0
    text = capsys.readouterr().out
    print(text)
    assert "load: libvirt allocation (no prometheus.url configured)" in text
    plan = dict(re.findall(r"^(t0\d)\s+\d+\s+1\s+64\s+(h\d)", text, re.M))
    # h3 is empty, h2 has a 4-vCPU domain: the highest priority goes to h3, its anti-affinity peer to h2,
    # and the rest to h3, the least loaded after each placement
    assert plan == {"t00": "h3", "t01": "h2", "t02": "h3", "t03": "h3"}
    assert (tmp_path / "state.db").read_bytes() == before


def test_plan_falls_back_to_libvirt_when_prometheus_is_unavailable(tmp_path, capsys):
    config = write_config(tmp_path, extra="prometheus: {url: 'http://127.0.0.1:9', timeout_s: 0.5}\n")
    seed_inventory(tmp_path)
    assert main(["plan", "--config", str(config), "--evacuate", "h1"]) == 0
    assert "load: libvirt allocation (Prometheus unavailable: " in capsys.readouterr().out


def test_plan_says_why_a_vm_has_no_place(tmp_path, capsys):
    config = write_config(tmp_path, extra="policy: {overcommit: {cpu: 0.5}}\n")
    seed_inventory(tmp_path)
    assert main(["plan", "--config", str(config), "--evacuate", "h1"]) == EXIT_UNPLACED
    assert ("no host can take t01: h2: vCPUs 4+1 over 4 (ratio 0.5); h3: anti-affinity group 'web' already there"
            in capsys.readouterr().out)


def test_cli_config_and_inventory_errors(tmp_path, capsys):
    assert main(["status", "--config", str(tmp_path / "missing.yml")]) == EXIT_CONFIG
    assert f"config error in {tmp_path}/missing.yml: cannot read" in capsys.readouterr().err
    config = write_config(tmp_path)
    assert main(["plan", "--config", str(config), "--evacuate", "h9"]) == EXIT_CONFIG
    assert "host 'h9' is not in the inventory" in capsys.readouterr().err


def test_module_entry_point_prints_help():
    proc = subprocess.run([sys.executable, "-m", "remediator.cli", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "remediator plan" in proc.stdout
