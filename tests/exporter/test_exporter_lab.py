"""The exporter on real lab hosts, scraped by a real Prometheus loaded with rules/: faults become alerts.

Each lab host runs remediator-exporter as one of its services (inside its namespace, killed by its
power loss, restarted at power-on), scraped at 1 s by a Prometheus in the root namespace with the
shipped rules. Detection times are printed (run with -s to see them).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import libvirt
import pytest
import yaml

from exporter.collect import LibvirtSource
from exporter.errors import ErrorCounter
from exporter.procfs import read_mem_available
from lab.monitoring import Prometheus
from lab.stack import EXPORTER_PORT as PORT, start_exporters
from tests.exporter.exporter_parse import value

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "hypervisor.rules.yml"


@pytest.fixture(scope="module")
def monitored(lab, tmp_path_factory):
    """(lab, prometheus): an exporter on every host, Prometheus with the shipped rules scraping them."""
    workdir = tmp_path_factory.mktemp("monitored")
    start_exporters(lab, workdir)
    shipped = yaml.safe_load((REPO / "rules" / "prometheus.yml").read_text())
    prom = Prometheus(
        {
            "global": shipped["global"],
            "scrape_configs": [{
                "job_name": "hypervisor",
                "honor_labels": True,
                "static_configs": [{"targets": [f"{h.address}:{PORT}"], "labels": {"host": h.name}} for h in lab.hosts],
            }],
        },
        rule_files=[RULES],
        workdir=workdir / "prometheus",
    )
    prom.start()
    try:
        wait_for(lambda: len(prom.query('up{job="hypervisor"} == 1 and on(host) hypervisor_up == 1')) == 3,
                 30, "every exporter scraped with hypervisor_up 1")
        yield lab, prom
    finally:
        prom.stop()


def wait_for(condition, timeout: float, what: str, interval: float = 0.1) -> float:
    """Seconds until condition() is true; fails naming `what` after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)
    return time.monotonic() - started


def firing(prom: Prometheus, alertname: str, **labels: str) -> list[dict]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == alertname and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def scrape(host) -> str:
    with urllib.request.urlopen(f"http://{host.address}:{PORT}/metrics", timeout=5) as response:
        return response.read().decode()


def seen_by_prometheus(prom: Prometheus, host: str, vm: str, state: str) -> bool:
    return bool(prom.query(f'hypervisor_vm_state{{host="{host}",vm="{vm}",state="{state}"}} == 1'))


def test_a_real_scrape_shows_every_domain_and_is_promtool_clean(monitored):
    lab, _prom = monitored
    h1 = lab.hosts[0]
    lab.define_guest(h1, "web-ha", metadata=lab.ha_metadata(protected=True, priority=100, group="web"))
    lab.define_guest(h1, "batch", metadata=None)
    lab.define_guest(h1, "spare-ha", start=False, metadata=lab.ha_metadata(protected=True))
    text = scrape(h1)
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout + lint.stderr == "", lint.stdout + lint.stderr
    assert value(text, "hypervisor_up") == 1
    assert value(text, "hypervisor_vm_state", vm="web-ha", state="running") == 1
    assert value(text, "hypervisor_vm_state", vm="spare-ha", state="shutoff") == 1, "shut-off VMs stay visible"
    assert value(text, "hypervisor_vm_info", vm="web-ha", ha="true", priority="100", group="web") == 1
    assert value(text, "hypervisor_vm_info", vm="batch", ha="false") == 1
    assert value(text, "hypervisor_vm_cpu_seconds_total", vm="web-ha") > 0
    assert value(text, "hypervisor_host_vms") == 2
    assert value(text, "hypervisor_host_memory_allocated_bytes") == 2 * 32 * 1024 * 1024
    for check in ("boot", "rootfs_writable", "libvirtd", "storage", "disk_space"):
        assert value(text, "hypervisor_host_check", check=check) == 1, check


def test_killing_a_guests_qemu_fires_vm_down_but_not_for_deliberate_or_unprotected_stops(monitored):
    lab, prom = monitored
    h1 = lab.hosts[0]
    lab.define_guest(h1, "crash-ha", metadata=lab.ha_metadata(protected=True))
    lab.define_guest(h1, "crash-plain")
    lab.define_guest(h1, "stop-ha", metadata=lab.ha_metadata(protected=True))
    wait_for(lambda: all(seen_by_prometheus(prom, "h1", vm, "running") for vm in ("crash-ha", "crash-plain", "stop-ha")),
             15, "the three guests seen running")
    subprocess.run(["virsh", "-c", h1.uri, "destroy", "stop-ha"], check=True, capture_output=True)
    lab.crash_guest(h1, "crash-plain")
    started = time.monotonic()
    lab.crash_guest(h1, "crash-ha")
    wait_for(lambda: firing(prom, "HypervisorVMDown", vm="crash-ha"), 15, "HypervisorVMDown for crash-ha")
    elapsed = time.monotonic() - started
    print(f"\nVM crash (qemu killed) -> HypervisorVMDown firing in Prometheus: {elapsed:.2f} s")
    (alert,) = firing(prom, "HypervisorVMDown", vm="crash-ha")
    assert {k: alert["labels"][k] for k in ("host", "state", "reason", "remediation", "severity")} == {
        "host": "h1", "state": "shutoff", "reason": "crashed", "remediation": "vm_down", "severity": "critical"}
    assert alert["labels"]["uuid"]
    assert elapsed < 5.0
    time.sleep(2.0)  # both other stops have long been scraped and evaluated by now
    assert seen_by_prometheus(prom, "h1", "stop-ha", "shutoff") and seen_by_prometheus(prom, "h1", "crash-plain", "shutoff")
    assert [a["labels"]["vm"] for a in prom.alerts() if a["labels"]["alertname"] == "HypervisorVMDown"] == ["crash-ha"]


def test_removing_the_boot_files_fires_host_damaged(monitored):
    lab, prom = monitored
    h2 = lab.hosts[1]
    started = time.monotonic()
    lab.damage_boot(h2)
    try:
        wait_for(lambda: firing(prom, "HypervisorHostDamaged", host="h2", check="boot"), 40,
                 "HypervisorHostDamaged{check=boot} for h2", interval=0.25)
        elapsed = time.monotonic() - started
        print(f"\nboot files removed -> HypervisorHostDamaged firing: {elapsed:.2f} s (for: 15s, checks every 5 s)")
        assert not firing(prom, "HypervisorHostDamaged", host="h1")
    finally:
        lab.repair_boot(h2)
    wait_for(lambda: not prom.alerts() or not firing(prom, "HypervisorHostDamaged", host="h2"), 20,
             "HypervisorHostDamaged resolved after repair", interval=0.25)


def test_power_loss_fires_host_down_and_after_power_on_the_lost_ha_vm_is_down(monitored):
    lab, prom = monitored
    h3 = lab.hosts[2]
    lab.define_guest(h3, "lost-ha", metadata=lab.ha_metadata(protected=True))
    wait_for(lambda: seen_by_prometheus(prom, "h3", "lost-ha", "running"), 15, "lost-ha seen running")
    started = time.monotonic()
    lab.power_off(h3)
    try:
        wait_for(lambda: firing(prom, "HypervisorHostDown", host="h3"), 20, "HypervisorHostDown for h3")
        elapsed = time.monotonic() - started
        print(f"\nhost power loss -> HypervisorHostDown firing: {elapsed:.2f} s (for: 5s)")
        assert not firing(prom, "HypervisorVMDown", host="h3"), "no VM series from a dead host: unknown, not down"
        assert not firing(prom, "HypervisorHostDown", host="h1")
    finally:
        lab.power_on(h3)
    # Back on: libvirt shows the VM shut off (crashed) and it runs nowhere else: positive evidence.
    wait_for(lambda: firing(prom, "HypervisorVMDown", host="h3", vm="lost-ha"), 30,
             "HypervisorVMDown for lost-ha after power-on")
    wait_for(lambda: not firing(prom, "HypervisorHostDown", host="h3"), 15, "HypervisorHostDown resolved")


def test_a_domain_vanishing_mid_scrape_degrades_only_itself(monitored):
    lab, _prom = monitored
    h2 = lab.hosts[1]
    lab.define_guest(h2, "keeps", metadata=lab.ha_metadata(protected=True))
    lab.define_guest(h2, "vanishes", start=False)
    source = LibvirtSource(h2.uri, 5.0, (1, 3), 60.0, errors := ErrorCounter())
    try:
        conn = source._connection()  # the source's own connection, to act between its calls
        records = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
        subprocess.run(["virsh", "-c", h2.uri, "undefine", "vanishes"], check=True, capture_output=True)
        cpu = source._cpu_seconds_of_active(records)
        by_name = {vm.name: vm for vm in (source._vm_sample(dom, stats, cpu) for dom, stats in records)}
        assert by_name["vanishes"].definition is None and by_name["vanishes"].state.state == "shutoff"
        assert by_name["keeps"].definition.ha.protected and by_name["keeps"].state.cpu_seconds > 0
        assert errors.snapshot()["domain"] == 1
        assert "vanishes" not in {vm.name for vm in source.collect().vms}
    finally:
        source.reset()


def test_changing_the_ha_declaration_shows_at_the_next_scrape(monitored):
    lab, _prom = monitored
    h2 = lab.hosts[1]
    lab.define_guest(h2, "toggle", metadata=lab.ha_metadata(protected=True, priority=7))
    assert value(scrape(h2), "hypervisor_vm_info", vm="toggle", ha="true", priority="7") == 1  # now cached
    subprocess.run(["virsh", "-c", h2.uri, "metadata", "toggle", "urn:remediator:ha:1", "--key", "rem",
                    "--set", '<ha protected="false"/>', "--live", "--config"], check=True, capture_output=True)
    # The metadata-change event invalidates the cached definition (not the 60 s refresh).
    wait_for(lambda: value(scrape(h2), "hypervisor_vm_info", vm="toggle", ha="false") == 1, 3,
             "ha=false after virsh metadata")


def real_figures(host) -> tuple[float, float]:
    """(load1, memory available) of host's exporter, checked against this machine's real figures
    read just before and just after the scrape. The kernel updates the load every 5 s, so it lies
    between the two; free memory moves by pages either way meanwhile, so it gets 64 MiB of slack."""
    before = (os.getloadavg()[0], read_mem_available("/proc"))
    text = scrape(host)
    after = (os.getloadavg()[0], read_mem_available("/proc"))
    load, memory = value(text, "hypervisor_host_load1"), value(text, "hypervisor_host_memory_available_bytes")
    assert min(before[0], after[0]) - 0.01 <= load <= max(before[0], after[0]) + 0.01, (before, load, after)
    slack = 64 << 20
    assert min(before[1], after[1]) - slack <= memory <= max(before[1], after[1]) + slack, (before, memory, after)
    return load, memory


def test_a_simulated_load_or_memory_figure_shows_on_that_hosts_exporter_only(monitored):
    """Lab hosts share one kernel; each exporter reads its host's own procfs dir (lab/figures.py)."""
    lab, _prom = monitored
    h1, h2 = lab.hosts[:2]
    try:
        lab.set_host_load(h1, 8.0)
        lab.set_host_memory_available(h1, 256 * 1024 * 1024)
        one = scrape(h1)
        assert value(one, "hypervisor_host_load1") == 8.0
        assert value(one, "hypervisor_host_memory_available_bytes") == 256 * 1024 * 1024
        real_figures(h2)
    finally:
        lab.clear_host_figures(h1)
    real_figures(h1)
