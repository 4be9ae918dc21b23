"""Pure: one scrape's observations -> Prometheus metric families (the contract in docs/metrics.md).

Every series carries `host`, the name the remediator joins on. When libvirt did not answer
(`sample` is None) only hypervisor_up 0, the host checks and the exporter's own metrics are
published: no VM series at all, because a missing VM series means "unknown", never "down".
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.checks import ALL_CHECKS, CheckResult
from exporter.collect import HostSample, VMSample
from exporter.domains import ACTIVE_STATES, PUBLISHED_STATES


@dataclass(frozen=True)
class Observation:
    host: str
    sample: HostSample | None  # None: libvirt did not answer in this scrape
    checks: dict[str, CheckResult]
    errors: dict[str, int]
    scrape_seconds: float
    load1: float | None  # None when the load average cannot be read


def families(obs: Observation) -> list[Metric]:
    out: list[Metric] = []
    host = obs.host
    up = GaugeMetricFamily("hypervisor_up", "1 when libvirt answered in this scrape, else 0.", labels=["host"])
    up.add_metric([host], 1 if obs.sample is not None else 0)
    out.append(up)
    out.extend(_check_families(host, obs.checks))
    if obs.load1 is not None:
        load = GaugeMetricFamily(
            "hypervisor_host_load1", "1-minute load average of the host (run queue length).", labels=["host"]
        )
        load.add_metric([host], obs.load1)
        out.append(load)
    if obs.sample is not None:
        out.extend(_host_families(host, obs.sample))
        out.extend(_vm_families(host, obs.sample.vms))
    out.extend(_self_families(host, obs))
    return out


def _check_families(host: str, checks: dict[str, CheckResult]) -> list[Metric]:
    family = GaugeMetricFamily(
        "hypervisor_host_check", "Host damage check: 1 ok, 0 failed (see docs/metrics.md).", labels=["host", "check"]
    )
    for name in ALL_CHECKS:
        result = checks.get(name)
        if result is not None:
            family.add_metric([host, name], 1 if result.ok else 0)
    return [family]


def _host_families(host: str, sample: HostSample) -> list[Metric]:
    facts = sample.facts
    info = GaugeMetricFamily(
        "hypervisor_host_info",
        "Always 1; labels describe the hypervisor host.",
        labels=["host", "hostname", "libvirt_version", "hypervisor", "hypervisor_version"],
    )
    info.add_metric([host, facts.hostname, facts.libvirt_version, facts.hypervisor, facts.hypervisor_version], 1)
    active = [vm for vm in sample.vms if vm.state.state in ACTIVE_STATES]
    allocated_vcpus = sum(vm.definition.vcpus for vm in active if vm.definition is not None)
    allocated_memory = sum(vm.definition.memory_bytes for vm in active if vm.definition is not None)
    return [
        info,
        _gauge("hypervisor_host_cpus", "Logical CPUs of the host.", host, facts.cpus),
        _gauge("hypervisor_host_memory_bytes", "Physical memory of the host.", host, facts.memory_bytes),
        _gauge(
            "hypervisor_host_memory_available_bytes",
            "Memory the host can give new workloads without swapping (MemAvailable of the host's meminfo).",
            host,
            sample.memory_available_bytes,
        ),
        _gauge(
            "hypervisor_host_vcpus_allocated", "Sum of vCPUs of the host's active VMs.", host, allocated_vcpus
        ),
        _gauge(
            "hypervisor_host_memory_allocated_bytes",
            "Sum of the maximum memory of the host's active VMs.",
            host,
            allocated_memory,
        ),
        _gauge("hypervisor_host_vms", "Active VMs (with a QEMU process) on the host.", host, len(active)),
    ]


def _vm_families(host: str, vms: tuple[VMSample, ...]) -> list[Metric]:
    labels = ["host", "vm", "uuid"]
    state = GaugeMetricFamily(
        "hypervisor_vm_state", "State set: 1 for the VM's current libvirt state, 0 for the others.", labels=[*labels, "state"]
    )
    reason = GaugeMetricFamily(
        "hypervisor_vm_state_reason",
        "libvirt's reason code for the current state; labels name the state and the reason.",
        labels=[*labels, "state", "reason"],
    )
    cpu = CounterMetricFamily(
        "hypervisor_vm_cpu_seconds", "CPU time used by the VM's QEMU process.", labels=labels, unit="seconds"
    )
    vcpus = GaugeMetricFamily("hypervisor_vm_vcpus", "vCPUs of the VM's definition.", labels=labels)
    memory = GaugeMetricFamily("hypervisor_vm_memory_bytes", "Maximum memory of the VM's definition.", labels=labels)
    info = GaugeMetricFamily(
        "hypervisor_vm_info",
        "Always 1; HA declaration from the domain's <metadata> (namespace urn:remediator:ha:1).",
        labels=[*labels, "ha", "priority", "group"],
    )
    for vm in vms:
        key = [host, vm.name, vm.uuid]
        for name in PUBLISHED_STATES:
            state.add_metric([*key, name], 1 if vm.state.state == name else 0)
        reason.add_metric([*key, vm.state.state, vm.state.reason], vm.state.reason_code)
        if vm.state.cpu_seconds is not None:
            cpu.add_metric(key, vm.state.cpu_seconds)
        if vm.definition is not None:
            ha = vm.definition.ha
            vcpus.add_metric(key, vm.definition.vcpus)
            memory.add_metric(key, vm.definition.memory_bytes)
            info.add_metric([*key, "true" if ha.protected else "false", str(ha.priority), ha.group], 1)
    return [state, reason, cpu, vcpus, memory, info]


def _self_families(host: str, obs: Observation) -> list[Metric]:
    duration = _gauge(
        "hypervisor_exporter_scrape_duration_seconds",
        "Time this scrape took to collect (libvirt, checks) before rendering.",
        host,
        obs.scrape_seconds,
    )
    errors = CounterMetricFamily(
        "hypervisor_exporter_errors", "Errors of the exporter by kind (docs/metrics.md).", labels=["host", "kind"]
    )
    for kind, count in obs.errors.items():
        errors.add_metric([host, kind], count)
    return [duration, errors]


def _gauge(name: str, documentation: str, host: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["host"])
    family.add_metric([host], value)
    return family
