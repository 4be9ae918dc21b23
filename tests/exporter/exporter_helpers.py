"""Helpers of the exporter's tests: libvirt test-driver nodes and a real remediator-exporter process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# A libvirt test-driver node: domains in every state the rules care about, with and without HA.
NODE_XML = """<node>
<cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads><mhz>2000</mhz>
 <model>i686</model><active>4</active></cpu>
<memory>8388608</memory>
{domains}
</node>"""
DOMAIN_XML = """<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
 <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>
 <os><type>hvm</type></os>{metadata}<test:runstate>{runstate}</test:runstate>
</domain>"""
HA = '<metadata><rem:ha xmlns:rem="urn:remediator:ha:1" protected="true" priority="{priority}" group="{group}"/></metadata>'


def node_file(tmp_path: Path, domains: list[dict]) -> str:
    body = "\n".join(
        DOMAIN_XML.format(
            name=d["name"],
            uuid=d["uuid"],
            memory_mib=d.get("memory_mib", 64),
            vcpus=d.get("vcpus", 1),
            runstate=d.get("runstate", 1),
            metadata=HA.format(priority=d.get("priority", 0), group=d.get("group", "")) if d.get("ha") else "",
        )
        for d in domains
    )
    path = tmp_path / "node.xml"
    path.write_text(NODE_XML.format(domains=body))
    return f"test://{path}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ExporterProcess:
    proc: subprocess.Popen
    url: str
    log: Path

    def scrape(self, timeout: float = 10.0, headers: dict | None = None) -> str:
        request = urllib.request.Request(f"{self.url}/metrics", headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            assert response.status == 200
            return response.read().decode()


def start_exporter(tmp_path: Path, uri: str, host_name: str = "h1", web_config: Path | None = None,
                   **config) -> ExporterProcess:
    port = free_port()
    config_path = tmp_path / f"exporter-{port}.yml"
    checks = {"boot_dir": str(tmp_path), "kernel_glob": "*", "initrd_glob": "*", "storage_path": str(tmp_path),
              "disk_space_paths": [str(tmp_path)], "rootfs_probe_dir": str(tmp_path)}
    checks.update(config.pop("checks", {}))
    config_path.write_text(yaml.safe_dump({"checks": checks, **config}))
    log = tmp_path / f"exporter-{port}.log"
    argv = [sys.executable, "-m", "exporter.main", "--libvirt-uri", uri, "--listen", f"127.0.0.1:{port}",
            "--host-name", host_name, "--config", str(config_path)]
    if web_config is not None:
        argv += ["--web.config.file", str(web_config)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"{'https' if web_config else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while web_config is not None:  # behind TLS and auth: ready once it says it listens
        if "listening on" in log.read_text():
            return ExporterProcess(proc, url, log)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"remediator-exporter did not start: {log.read_text()}")
        time.sleep(0.05)
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return ExporterProcess(proc, url, log)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"remediator-exporter did not start: {log.read_text()}")
            time.sleep(0.05)
