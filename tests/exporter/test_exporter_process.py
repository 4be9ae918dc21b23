"""The real remediator-exporter process against libvirt's test driver and against a hung daemon."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from exporter.domains import PUBLISHED_STATES
from tests.exporter.exporter_helpers import free_port, node_file
from tests.exporter.exporter_parse import names, samples, value

DOMAINS = [
    {"name": "web1", "uuid": "11111111-0000-0000-0000-000000000001", "ha": True, "priority": 100, "group": "web",
     "vcpus": 2, "memory_mib": 512},
    {"name": "db1", "uuid": "11111111-0000-0000-0000-000000000002", "ha": True, "priority": 50, "group": "db",
     "runstate": 5},  # shut off
    {"name": "batch1", "uuid": "11111111-0000-0000-0000-000000000003", "runstate": 6},  # crashed, not HA
]


def test_every_defined_domain_is_exported_running_or_not(tmp_path, exporter_factory):
    exporter = exporter_factory(node_file(tmp_path, DOMAINS), host_name="hv-7")
    text = exporter.scrape()
    assert value(text, "hypervisor_up") == 1
    assert all(dict(labels).get("host") == "hv-7" for _, labels in samples(text)), "every series carries host"
    for vm, current in (("web1", "running"), ("db1", "shutoff"), ("batch1", "crashed")):
        for state in PUBLISHED_STATES:
            assert value(text, "hypervisor_vm_state", vm=vm, state=state) == (1 if state == current else 0)
    assert value(text, "hypervisor_vm_info", vm="web1", ha="true", priority="100", group="web") == 1
    assert value(text, "hypervisor_vm_info", vm="db1", ha="true", priority="50", group="db") == 1
    assert value(text, "hypervisor_vm_info", vm="batch1", ha="false", priority="0", group="") == 1
    assert value(text, "hypervisor_vm_vcpus", vm="web1") == 2
    assert value(text, "hypervisor_vm_memory_bytes", vm="web1") == 512 * 1024 * 1024
    assert value(text, "hypervisor_vm_state_reason", vm="db1", state="shutoff") is not None
    # Only the running VM holds host resources.
    assert value(text, "hypervisor_host_vms") == 1
    assert value(text, "hypervisor_host_vcpus_allocated") == 2
    assert value(text, "hypervisor_host_memory_allocated_bytes") == 512 * 1024 * 1024
    assert value(text, "hypervisor_host_cpus") == 4
    assert value(text, "hypervisor_host_info", hypervisor="test") == 1
    for check in ("boot", "rootfs_writable", "libvirtd", "storage", "disk_space"):
        assert value(text, "hypervisor_host_check", check=check) == 1, check
    assert {"hypervisor_host_load1", "hypervisor_host_memory_bytes", "hypervisor_host_memory_available_bytes",
            "hypervisor_exporter_scrape_duration_seconds", "hypervisor_exporter_errors_total"} <= names(text)


def test_promtool_check_metrics_is_clean_on_a_real_scrape(tmp_path, exporter_factory):
    exporter = exporter_factory(node_file(tmp_path, DOMAINS))
    lint = subprocess.run(["promtool", "check", "metrics"], input=exporter.scrape(), capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == "" and lint.stderr == "", lint.stdout + lint.stderr


def test_a_refused_connection_answers_200_with_hypervisor_up_0(tmp_path, exporter_factory):
    exporter = exporter_factory(f"qemu+tcp://127.0.0.1:{free_port()}/system")
    text = exporter.scrape()
    assert value(text, "hypervisor_up") == 0
    assert value(text, "hypervisor_exporter_errors_total", kind="connect") >= 1
    assert value(text, "hypervisor_host_check", check="libvirtd") == 0
    assert value(text, "hypervisor_host_check", check="boot") == 1  # local checks do not need libvirt
    assert not any(name.startswith("hypervisor_vm_") for name in names(text)), "no VM series: unknown, not down"


@pytest.fixture
def silent_daemon():
    """A TCP server that accepts libvirt clients and never answers: a hung libvirtd."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_daemon_never_stalls_a_scrape_beyond_its_timeout(tmp_path, exporter_factory, silent_daemon):
    # connect_timeout longer than the scrape's: the scrape bound, not the connect bound, must act.
    exporter = exporter_factory(f"qemu+tcp://127.0.0.1:{silent_daemon}/system", connect_timeout_seconds=30)
    for _ in range(3):
        started = time.monotonic()
        text = exporter.scrape(headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"})
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"scrape took {elapsed:.2f} s with a 1 s Prometheus timeout"
        assert value(text, "hypervisor_up") == 0
    assert value(text, "hypervisor_exporter_errors_total", kind="timeout") >= 3

