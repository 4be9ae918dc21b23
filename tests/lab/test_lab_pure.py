"""Pure parts of the lab (no root, no daemons) and the component check."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from lab.guests import HA_NAMESPACE, guest_xml, ha_metadata
from lab.requirements import COMMANDS, missing


def test_ha_metadata_is_exactly_the_exporters_element():
    assert ha_metadata(protected=True, priority=100, group="web") == \
        '<rem:ha xmlns:rem="urn:remediator:ha:1" protected="true" priority="100" group="web"/>'
    assert ha_metadata(protected=False) == \
        '<rem:ha xmlns:rem="urn:remediator:ha:1" protected="false" priority="0"/>'


def test_guest_xml_is_the_tiny_qboot_domain_with_metadata():
    xml = guest_xml("g1", uuid="11111111-2222-3333-4444-555555555555", metadata=ha_metadata(priority=7),
                    domain_type="qemu")
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu" and root.findtext("name") == "g1"
    assert root.find("memory").text == "32" and root.find("memory").get("unit") == "MiB"
    assert root.find("os/loader").text == "/usr/share/qemu/qboot.rom"
    assert root.find("devices/disk") is None and root.find("devices/console").get("type") == "pty"
    assert root.find(f"metadata/{{{HA_NAMESPACE}}}ha").get("priority") == "7"


def test_missing_component_is_named(tmp_path):
    # A PATH holding every needed command except promtool.
    for cmd in COMMANDS:
        if cmd != "promtool":
            for d in os.environ["PATH"].split(os.pathsep):
                if (Path(d) / cmd).exists():
                    (tmp_path / cmd).symlink_to(Path(d) / cmd)
                    break
    gone = missing(path=str(tmp_path), need_root=False)
    assert gone == ["command promtool (prometheus)"]


def test_a_run_without_promtool_fails_naming_it(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for cmd in COMMANDS:
        if cmd != "promtool":
            for d in os.environ["PATH"].split(os.pathsep):
                if (Path(d) / cmd).exists():
                    (bindir / cmd).symlink_to(Path(d) / cmd)
                    break
    env = dict(os.environ, PATH=str(bindir))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"{__file__}::test_ha_metadata_is_exactly_the_exporters_element"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "promtool" in run.stdout + run.stderr


def test_timeline_moments_of_a_host_incident_from_its_api_detail():
    from lab.timeline import moments, verification

    def at(s):
        return f"2026-11-25T10:00:{s:06.3f}+00:00"
    detail = {
        "incident": {"opened_at": at(5.2), "closed_at": at(7.0), "data": {"alert_received_at": at(5.1)}},
        "history": [
            {"at": at(5.2), "from_state": None, "to_state": "host_verifying", "event": {"kind": "alert_firing"}},
            {"at": at(5.25), "from_state": "host_verifying", "to_state": "host_verifying",
             "event": {"kind": "alert_firing"}},  # a repeat while verifying: not the verification's end
            {"at": at(5.3), "from_state": "host_verifying", "to_state": "host_fencing",
             "event": {"kind": "host_unreachable"}},
            {"at": at(5.5), "from_state": "host_fencing", "to_state": "host_evacuating", "event": {"kind": "action_ok"}},
            {"at": at(7.0), "from_state": "host_evacuating", "to_state": "recovered", "event": {"kind": "action_ok"}},
        ],
        "actions": [
            {"at": at(5.2), "finished_at": at(5.3), "ok": True, "action": {"kind": "verify_host"}},
            {"at": at(5.3), "finished_at": at(5.5), "ok": True, "action": {"kind": "fence_host"}},
            {"at": at(5.5), "finished_at": at(7.0), "ok": True, "action": {"kind": "evacuate_host"}},
        ],
    }
    m = {k: round(v % 60, 3) for k, v in moments(detail).items()}
    assert m == {"detected": 5.1, "acting": 5.2, "verified": 5.3, "fenced": 5.5, "placed": 5.5, "running": 7.0}
    assert verification(detail["history"])["event"]["kind"] == "host_unreachable"


def test_timeline_moments_of_an_incident_not_yet_acted_on():
    from lab.timeline import moments
    detail = {"incident": {"opened_at": "2026-11-25T10:00:01+00:00", "data": {}}, "history": [], "actions": []}
    assert list(moments(detail)) == ["detected"]


def test_simulated_host_figures_are_in_the_kernels_format_and_clear_back_to_proc(tmp_path):
    from exporter.procfs import read_load1, read_mem_available
    from lab import figures
    from lab.host import make_host

    host = make_host(0, 1, tmp_path)
    figures.clear(host)
    assert {p.name: os.readlink(p) for p in host.procfs_dir.iterdir()} == \
        {"loadavg": "/proc/loadavg", "meminfo": "/proc/meminfo"}
    figures.set_load(host, 8.0)
    figures.set_memory_available(host, (256 << 20) + 1000)
    fields = (host.procfs_dir / "loadavg").read_text().split()
    assert fields[:3] == ["8.00"] * 3 and "/" in fields[3] and fields[4].isdigit()
    assert read_load1(str(host.procfs_dir)) == 8.0
    assert read_mem_available(str(host.procfs_dir)) == 256 << 20, "whole KiB, as the kernel counts"
    meminfo = (host.procfs_dir / "meminfo").read_text()
    assert meminfo.splitlines()[0].startswith("MemTotal:") and meminfo.count("MemAvailable:") == 1
    figures.clear(host)
    assert os.readlink(host.procfs_dir / "loadavg") == "/proc/loadavg"
    assert sorted(p.name for p in host.procfs_dir.iterdir()) == ["loadavg", "meminfo"], "no temporary file left"
