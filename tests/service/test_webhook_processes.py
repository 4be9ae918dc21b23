"""listen.webhook: `remediator serve` with its webhook on a port of its own, served by child processes.

Real processes throughout: the service (cheroot, SQLite, libvirt's test driver) and the children it starts.
Each test ends only the processes it started, by pid.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from remediator.config import ConfigError, parse_config
from remediator.store import open_store

from .payloads import alert, body
from .test_cli import OPERATOR_TOKEN, TOKEN, UUIDS, Served, seed_inventory, write_config

AM = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def children_of(pid: int) -> list[int]:
    """The webhook processes `pid` started (/proc: parent pid and command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == pid and b"remediator.webhook_worker" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def metric(url: str, name: str) -> float | None:
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class WithWebhook(Served):
    """`remediator serve` with listen.webhook: its webhook URL is in the log before the API's."""

    def __init__(self, config: Path):
        super().__init__(config)
        line = next(line for line in self.log if "webhook for Alertmanager on" in line)
        self.webhook = re.search(r"webhook for Alertmanager on (\S+),", line).group(1)


@pytest.fixture
def with_webhook(tmp_path):
    started: list[WithWebhook] = []

    def start(processes: int = 2, extra: str = "") -> WithWebhook:
        config = write_config(tmp_path, extra=extra)
        config.write_text(config.read_text().replace(
            "listen: {host: 127.0.0.1, port: 0}",
            f"listen: {{host: 127.0.0.1, port: 0, webhook: {{port: 0, processes: {processes}}}}}"))
        s = WithWebhook(config)
        started.append(s)
        return s

    yield start
    for s in started:
        children = children_of(s.proc.pid)
        s.kill()
        for pid in children:  # they stop on their own when the service dies (the lifeline): see the test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_alerts_posted_to_the_webhook_processes_are_stored_counted_by_the_service_and_acted_on(
        with_webhook, tmp_path):
    seed_inventory(tmp_path)
    s = with_webhook()
    assert len(children_of(s.proc.pid)) == 2
    r = requests.post(f"{s.webhook}/api/v1/alerts", data=body(alert(uuid=UUIDS[0])), headers=AM, timeout=5)
    assert r.status_code == 200 and r.json()["new"] == 1
    with open_store(f"sqlite:///{tmp_path}/state.db") as store:
        wait_for(lambda: store.recent_alerts()[0].outcome is not None, 5.0, "the engine claimed the alert")
    # 200 more from 8 connections at once, the two processes writing one SQLite file: none lost
    posts = [body(alert(uuid=UUIDS[1], fingerprint=f"{i:016x}")) for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda b: requests.post(f"{s.webhook}/api/v1/alerts", data=b, headers=AM,
                                                      timeout=10).status_code, posts))
    assert codes == [200] * 200
    with open_store(f"sqlite:///{tmp_path}/state.db") as store:
        assert len(store.recent_alerts(limit=500)) == 201
    assert metric(s.url, 'remediator_alerts_received_total{result="new"}') == 201
    assert metric(s.url, 'remediator_webhook_requests_total{code="200"}') == 201
    assert metric(s.url, "remediator_webhook_processes") == 2


class Recorder:
    """Stands for the service's metrics: what the children reported, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def webhook_request(self, code: int) -> None:
        self.calls.append(("request", code))

    def alert_received(self, result: str, n: int = 1) -> None:
        self.calls.append(("alerts", result, n))

    def webhook_processes(self, running: int) -> None:
        self.calls.append(("processes", running))


def test_a_child_wakes_the_engine_after_new_alerts_only(tmp_path):
    """The service's engine polls its store only once a second: a child's report is what makes an alert
    posted to it as quick to act on as one posted to the service."""
    from remediator.config import load_config
    from remediator.webhook_procs import WebhookProcesses

    seed_inventory(tmp_path)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("listen: {host: 127.0.0.1, port: 0}",
                                             "listen: {host: 127.0.0.1, port: 0, webhook: {port: 0, processes: 1}}"))
    woken = threading.Event()
    metrics = Recorder()
    procs = WebhookProcesses(load_config(path), metrics, wake=woken.set)
    port = procs.start()
    try:
        assert procs.wait_ready(20)
        url = f"http://127.0.0.1:{port}/api/v1/alerts"
        assert requests.post(url, data=body(alert(uuid=UUIDS[0])), headers=AM, timeout=5).json()["new"] == 1
        assert woken.wait(5), "no wake-up after a new alert"
        woken.clear()
        assert requests.post(url, data=body(alert(uuid=UUIDS[0])), headers=AM, timeout=5).json()["repeats"] == 1
        wait_for(lambda: metrics.calls.count(("request", 200)) == 2, 5, "both requests reported")
        assert not woken.is_set(), "a repeat woke the engine"
        assert ("alerts", "new", 1) in metrics.calls and ("alerts", "repeat", 1) in metrics.calls
    finally:
        procs.stop()
    assert metrics.calls[-1] == ("processes", 0)


def test_the_webhook_port_serves_alertmanager_alone(with_webhook):
    s = with_webhook(processes=1)
    # the operator's credential cannot post alerts there, and the API and /metrics are not served there
    assert requests.post(f"{s.webhook}/api/v1/alerts", data=body(), headers=OPERATOR, timeout=5).status_code == 403
    assert requests.get(f"{s.webhook}/api/v1/cluster", headers=OPERATOR, timeout=5).status_code == 404
    assert requests.get(f"{s.webhook}/metrics", timeout=5).status_code == 404
    ready = requests.get(f"{s.webhook}/readyz", timeout=5).json()
    service = requests.get(f"{s.url}/readyz", timeout=5).json()
    assert ready["status"] == "ready" and not ready["leading"]
    assert ready["replica"] == f"{service['replica']}/webhook-0"
    wait_for(lambda: requests.get(f"{s.webhook}/readyz", timeout=5).json()["leader"] == service["replica"], 10.0,
             "the webhook process names the service as the leader")


def test_a_killed_webhook_process_is_replaced_and_all_stop_when_the_service_dies(with_webhook):
    s = with_webhook()
    first, second = children_of(s.proc.pid)
    os.kill(first, signal.SIGKILL)
    # the other one serves meanwhile, on the same port
    assert requests.post(f"{s.webhook}/api/v1/alerts", data=body(), headers=AM, timeout=5).status_code == 200
    replaced = wait_for(lambda: [p for p in children_of(s.proc.pid) if p not in (first, second)], 10.0,
                        "a new webhook process")
    wait_for(lambda: metric(s.url, "remediator_webhook_processes") == 2, 10.0, "two processes ready again")
    assert any("exited with -9" in line for line in s.log)
    s.kill(signal.SIGKILL)
    for pid in (second, *replaced):
        wait_for(lambda: not alive(pid), 10.0, f"webhook process {pid} stops once the service is gone")


def test_the_webhook_processes_stop_with_the_service_on_sigterm(with_webhook):
    s = with_webhook()
    children = children_of(s.proc.pid)
    assert s.kill(signal.SIGTERM) == 0
    assert not [pid for pid in children if alive(pid)]


@pytest.mark.parametrize(("listen", "message"), [
    ("{port: 9180, webhook: {port: 9180}}", "listen.webhook.port: must differ from listen.port"),
    ("{port: 9180, webhook: {processes: 2}}", "listen.webhook.port: required"),
    ("{port: 9180, webhook: {port: 9181, processes: 0}}", "listen.webhook.processes"),
])
def test_a_wrong_webhook_section_names_its_key(listen, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(f"auth: none\nlisten: {listen}\nhosts: [{{name: h1, uri: 'test:///default'}}]\n", env={},
                     fence_agent_dirs=None)


def test_a_webhook_process_never_waits_in_accept_for_a_connection_another_process_took(tmp_path):
    """Every process is woken for a new connection and one takes it; the others' accept() must return at once.
    With cheroot's 1 s listening timeout it waited for the next connection, and the process's keep-alive
    connections, served from the same loop, waited with it (bench-ingest: latencies of 1,010 ms)."""
    from remediator.config import load_config
    from remediator.serve import make_server
    from remediator.web import create_app
    from remediator.webhook_procs import listening_socket

    config = load_config(write_config(tmp_path), env={})
    sock = listening_socket("127.0.0.1", 0)
    app = create_app(config, webhook_only=True)
    server = make_server(config, app, listening=sock)
    try:
        started = time.monotonic()
        with pytest.raises(BlockingIOError):
            server.socket.accept()  # nothing waiting: what a process that lost the race sees
        assert time.monotonic() - started < 0.1
        assert server.bind_addr[1] == sock.getsockname()[1]
    finally:
        server.stop()
        sock.close()
