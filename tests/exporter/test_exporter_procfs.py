"""The host's own kernel figures: load1 from <procfs>/loadavg, available memory from <procfs>/meminfo.

The procfs root is the exporter's `procfs` key (default /proc), like node_exporter's --path.procfs.
"""

from __future__ import annotations

from pathlib import Path

import libvirt

from exporter.procfs import read_load1, read_mem_available
from tests.exporter.exporter_helpers import node_file
from tests.exporter.exporter_parse import value

MEMINFO = """MemTotal:        8039896 kB
MemFree:          412332 kB
MemAvailable:    5123456 kB
Buffers:          123456 kB
Cached:          4567890 kB
"""


def procfs(tmp_path: Path, loadavg: str = "3.25 1.50 0.75 2/345 12345\n", meminfo: str = MEMINFO) -> Path:
    root = tmp_path / "procfs"
    root.mkdir()
    (root / "loadavg").write_text(loadavg)
    (root / "meminfo").write_text(meminfo)
    return root


def test_readers_take_the_kernels_own_figures_from_the_procfs_root(tmp_path):
    root = procfs(tmp_path)
    assert read_load1(str(root)) == 3.25
    assert read_mem_available(str(root)) == 5123456 * 1024


def test_this_machines_proc_has_both_figures():
    assert read_load1("/proc") is not None and read_load1("/proc") >= 0
    assert read_mem_available("/proc") > 0


def test_a_missing_or_malformed_figure_reads_as_none(tmp_path):
    assert read_load1(str(tmp_path / "absent")) is None
    assert read_mem_available(str(tmp_path / "absent")) is None
    root = procfs(tmp_path, loadavg="garbage\n", meminfo="MemTotal: 8039896 kB\n")
    assert read_load1(str(root)) is None
    assert read_mem_available(str(root)) is None, "no MemAvailable line"


def test_the_exporter_publishes_the_figures_of_its_procfs_root(tmp_path, exporter_factory):
    root = procfs(tmp_path)
    text = exporter_factory(node_file(tmp_path, []), procfs=str(root)).scrape()
    assert value(text, "hypervisor_host_load1") == 3.25
    assert value(text, "hypervisor_host_memory_available_bytes") == 5123456 * 1024


def test_without_memavailable_the_exporter_falls_back_to_libvirt(tmp_path, exporter_factory):
    root = procfs(tmp_path, meminfo="MemTotal: 8039896 kB\n")
    uri = node_file(tmp_path, [])
    conn = libvirt.open(uri)  # the test driver has no node memory stats: its free memory (0 for this node)
    try:
        libvirts_figure = conn.getFreeMemory()
    finally:
        conn.close()
    text = exporter_factory(uri, procfs=str(root)).scrape()
    assert value(text, "hypervisor_host_memory_available_bytes") == libvirts_figure
    assert value(text, "hypervisor_host_load1") == 3.25
