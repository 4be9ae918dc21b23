"""A simulated fleet for `make bench-scale`: libvirt's test driver, one node file per host.

Why the test driver in this process, and not a daemon or a Python stand-in: the figures must be the
product's own code, and with `test:///<file>` URIs that includes the real libvirt edge
(remediator/edges/libvirt.py and its pool, libvirt-python, getAllDomainStats, lookups by UUID) with
nothing faked. The pool keeps one connection per in-process host and shares it between threads, so
every part of the engine sees the same state of a host (each open() of a file would be a private
copy; the pool opens it once). A libvirtd serving the test driver shares state only for
test:///default, a single node, so it cannot be 1,000 distinct hosts; and 1,000 real libvirtd
daemons do not fit on 2 cores. What this leaves out is the network round trip of a real fleet
(qemu+tcp: listAllDomains 0.2-1.6 ms per host on the lab, docs in shared notes): the figures are
the remediator's CPU cost, a floor, and the bench says so.

Pure helpers (names, UUIDs, node XML, webhook bodies) are unit-tested in tests/bench/test_fleet.py.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from remediator.config import Config, parse_config
from remediator.model import HostCapacity, ProtectedVM

MiB = 1024 * 1024
HOST_CPUS, HOST_MEMORY_MIB = 32, 256 * 1024
HA = "<metadata><rem:ha xmlns:rem='urn:remediator:ha:1' protected='true' priority='{p}'{g}/></metadata>"
SHUT_OFF = "<test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>"
WEBHOOK_TOKEN = "bench-scale-webhook-token-0123456789"
OPERATOR_TOKEN = "bench-scale-operator-token-0123456789"


def host_name(i: int) -> str:
    return f"h{i:04d}"


def vm_name(host: int, j: int) -> str:
    return f"vm{host:04d}-{j:02d}"


def vm_uuid(name: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{name}.bench-scale"))


@dataclass(frozen=True)
class VMSpec:
    """One simulated guest: sizes vary so that placement has real choices to make."""

    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    priority: int
    group: str | None
    running: bool

    def as_protected(self, host: str) -> ProtectedVM:
        return ProtectedVM(self.uuid, self.name, host, self.vcpus, self.memory_mib * MiB, self.priority, self.group)


def vm_spec(host: int, j: int, down_per_host: int) -> VMSpec:
    """Deterministic sizes: 1-4 vCPUs, 2-8 GiB; one VM in five in an anti-affinity group of a
    neighbouring host's (so groups span hosts); the first `down_per_host` of a host shut off."""
    name = vm_name(host, j)
    group = f"g{(host // 3) % 200:03d}-{j % 4}" if j % 5 == 0 else None
    return VMSpec(name, vm_uuid(name), vcpus=1 + (host + j) % 4, memory_mib=2048 * (1 + (host * 7 + j) % 4),
                  priority=(host + 3 * j) % 10, group=group, running=j >= down_per_host)


def domain_xml(vm: VMSpec) -> str:
    group = f" group='{vm.group}'" if vm.group else ""
    return (f"<domain type='test'><name>{vm.name}</name><uuid>{vm.uuid}</uuid>"
            f"<memory unit='MiB'>{vm.memory_mib}</memory><vcpu>{vm.vcpus}</vcpu><os><type>hvm</type></os>"
            f"{HA.format(p=vm.priority, g=group)}{'' if vm.running else SHUT_OFF}</domain>")


def node_xml(vms: list[VMSpec]) -> str:
    return (f"<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>{HOST_CPUS}</cores><threads>1</threads>"
            f"<active>{HOST_CPUS}</active><mhz>2000</mhz><model>x86_64</model></cpu>"
            f"<memory>{HOST_MEMORY_MIB * 1024}</memory>{''.join(domain_xml(v) for v in vms)}</node>")


def host_load1(i: int) -> float:
    """A spread of measured loads (0-16 on 32 CPUs) for the placement run with Prometheus figures."""
    return round((i * 37 % 160) / 10.0, 1)


@dataclass
class Fleet:
    directory: Path
    hosts: list[str]
    vms: dict[str, list[VMSpec]]  # host -> its guests
    uris: dict[str, str] = field(default_factory=dict)

    @property
    def vm_count(self) -> int:
        return sum(len(v) for v in self.vms.values())

    def down_vms(self) -> list[tuple[str, VMSpec]]:
        return [(h, v) for h in self.hosts for v in self.vms[h] if not v.running]

    def config(self, store_url: str, *, dry_run: bool, port: int = 0, threads: int = 8) -> Config:
        return parse_config(fleet_config_yaml(self.uris, store_url, dry_run=dry_run, port=port, threads=threads),
                            source=str(self.directory / "config.yml"), env={})

    def capacities(self, down: set[str], with_load: bool) -> list[HostCapacity]:
        """The hosts as the world would see them, without asking libvirt (for the placement timing)."""
        from remediator.model import HostCondition

        caps = []
        for i, h in enumerate(self.hosts):
            alive = [v for v in self.vms[h] if v.running]
            caps.append(HostCapacity(
                name=h, cpus=HOST_CPUS, memory_bytes=HOST_MEMORY_MIB * MiB,
                vcpus_allocated=sum(v.vcpus for v in alive),
                memory_allocated_bytes=sum(v.memory_mib for v in alive) * MiB,
                load1=host_load1(i) if with_load else None,
                condition=HostCondition.DOWN if h in down else HostCondition.UP,
                vms=frozenset(v.uuid for v in self.vms[h])))
        return caps


def build_fleet(directory: Path, hosts: int, vms_per_host: int, down_per_host: int = 1) -> Fleet:
    directory.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(directory, [host_name(i) for i in range(hosts)], {})
    for i, name in enumerate(fleet.hosts):
        specs = [vm_spec(i, j, down_per_host) for j in range(vms_per_host)]
        path = directory / f"{name}.xml"
        path.write_text(node_xml(specs))
        fleet.vms[name] = specs
        fleet.uris[name] = f"test://{path}"
    return fleet


def fleet_config_yaml(uris: dict[str, str], store_url: str, *, dry_run: bool, port: int, threads: int,
                      webhook_processes: int = 0) -> str:
    """`webhook_processes`: 0 serves the webhook on listen.port; more gives it listen.webhook's processes."""
    hosts = "\n".join(f"  - {{name: {name}, uri: '{uri}'}}" for name, uri in uris.items())
    webhook = f", webhook: {{port: 0, processes: {webhook_processes}}}" if webhook_processes else ""
    return (f"auth:\n  alertmanager: {{bearer_token: {WEBHOOK_TOKEN}}}\n"
            f"  operator: {{bearer_token: {OPERATOR_TOKEN}}}\n"
            f"listen: {{host: 127.0.0.1, port: {port}, threads: {threads}{webhook}}}\n"
            f"store: {{url: '{store_url}'}}\n"
            f"dry_run: {'true' if dry_run else 'false'}\n"
            "policy:\n  max_concurrent_actions: 4\n  backoff: {initial_s: 0.01, max_s: 0.05}\n"
            f"hosts:\n{hosts}\n")


def vm_down_alert(host: str, vm: VMSpec, seq: int) -> dict:
    """One firing VMDown alert as Alertmanager 0.25 posts it; `seq` makes (fingerprint, startsAt) new."""
    second, micro = divmod(seq, 1_000_000)
    return {
        "status": "firing",
        "labels": {"alertname": "VMDown", "remediation": "vm_down", "host": host, "vm": vm.name, "uuid": vm.uuid},
        "annotations": {"summary": f"VMDown on {host}"},
        "startsAt": f"2026-12-01T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}.{micro:06d}Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": f"{seq:016x}",
    }


def webhook_body(alerts: list[dict]) -> bytes:
    """A webhook v4 post; Alertmanager groups by subject here (rules/alertmanager.yml), one alert a post."""
    return json.dumps({
        "version": "4", "groupKey": '{}:{remediation="vm_down"}', "truncatedAlerts": 0, "status": "firing",
        "receiver": "remediator", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093", "alerts": alerts}).encode()
