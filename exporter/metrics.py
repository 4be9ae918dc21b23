"""Pure: one scrape's observations -> the Prometheus text exposition (the contract in docs/metrics.md).

Every series carries `host`, the name the remediator joins on. When libvirt did not answer
(`sample` is None) only hypervisor_up 0, the host checks and the exporter's own metrics are
published: no VM series at all, because a missing VM series means "unknown", never "down".

The text is written here rather than by building prometheus_client metric families and encoding
them with `generate_latest`. Profiled on a lab host (20 running + 5 shut-off guests, 315
samples), that took ~3.3 ms of a ~10 ms scrape: every sample's labels were put in a dict, their
names validated, values escaped, sorted and formatted again on every scrape, although a VM's
labels, its state set and its definition's series change only when the VM does. Here those lines
are rendered once and cached (keyed by everything they show, so a change is a cache miss, never
a stale line); a scrape formats only CPU time and the host's figures, and joins strings. The
output is byte for byte what `generate_latest` writes for the same samples (label names
sorted, values through prometheus_client's `floatToGoString`); tests/exporter/test_exporter_exposition.py
holds it to that by re-encoding a parsed scrape with prometheus_client.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from prometheus_client.utils import floatToGoString

from exporter.checks import ALL_CHECKS, CheckResult
from exporter.collect import HostSample, VMSample
from exporter.domains import ACTIVE_STATES, PUBLISHED_STATES, DomainDefinition

# Enough for every domain of a large host in every state it passes through; beyond it the
# least recently used lines are rendered again, nothing is wrong.
_CACHED_VMS = 4096


@dataclass(frozen=True)
class Observation:
    host: str
    sample: HostSample | None  # None: libvirt did not answer in this scrape
    checks: dict[str, CheckResult]
    errors: dict[str, int]
    scrape_seconds: float
    load1: float | None  # None when the load average cannot be read


@dataclass(frozen=True)
class Family:
    name: str  # as exposed: a counter's name ends in _total
    kind: str  # "gauge" or "counter"
    help: str

    @cached_property
    def header(self) -> str:
        text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.kind}\n"


UP = Family("hypervisor_up", "gauge", "1 when libvirt answered in this scrape, else 0.")
HOST_CHECK = Family("hypervisor_host_check", "gauge", "Host damage check: 1 ok, 0 failed (see docs/metrics.md).")
HOST_LOAD1 = Family("hypervisor_host_load1", "gauge", "1-minute load average of the host (run queue length).")
HOST_INFO = Family("hypervisor_host_info", "gauge", "Always 1; labels describe the hypervisor host.")
HOST_CPUS = Family("hypervisor_host_cpus", "gauge", "Logical CPUs of the host.")
HOST_MEMORY = Family("hypervisor_host_memory_bytes", "gauge", "Physical memory of the host.")
HOST_MEMORY_AVAILABLE = Family(
    "hypervisor_host_memory_available_bytes",
    "gauge",
    "Memory the host can give new workloads without swapping (MemAvailable of the host's meminfo).",
)
HOST_VCPUS_ALLOCATED = Family("hypervisor_host_vcpus_allocated", "gauge", "Sum of vCPUs of the host's active VMs.")
HOST_MEMORY_ALLOCATED = Family(
    "hypervisor_host_memory_allocated_bytes", "gauge", "Sum of the maximum memory of the host's active VMs."
)
HOST_VMS = Family("hypervisor_host_vms", "gauge", "Active VMs (with a QEMU process) on the host.")
VM_STATE = Family(
    "hypervisor_vm_state", "gauge", "State set: 1 for the VM's current libvirt state, 0 for the others."
)
VM_STATE_REASON = Family(
    "hypervisor_vm_state_reason",
    "gauge",
    "libvirt's reason code for the current state; labels name the state and the reason.",
)
VM_CPU = Family("hypervisor_vm_cpu_seconds_total", "counter", "CPU time used by the VM's QEMU process.")
VM_VCPUS = Family("hypervisor_vm_vcpus", "gauge", "vCPUs of the VM's definition.")
VM_MEMORY = Family("hypervisor_vm_memory_bytes", "gauge", "Maximum memory of the VM's definition.")
VM_INFO = Family(
    "hypervisor_vm_info",
    "gauge",
    "Always 1; HA declaration from the domain's <metadata> (namespace urn:remediator:ha:1).",
)
SCRAPE_DURATION = Family(
    "hypervisor_exporter_scrape_duration_seconds",
    "gauge",
    "Time this scrape took to collect (libvirt, checks) before rendering.",
)
ERRORS = Family("hypervisor_exporter_errors_total", "counter", "Errors of the exporter by kind (docs/metrics.md).")

# Families in the order they are exposed (each appears once per scrape, samples grouped).
HOST_FAMILIES = (HOST_INFO, HOST_CPUS, HOST_MEMORY, HOST_MEMORY_AVAILABLE, HOST_VCPUS_ALLOCATED,
                 HOST_MEMORY_ALLOCATED, HOST_VMS)
VM_FAMILIES = (VM_STATE, VM_STATE_REASON, VM_CPU, VM_VCPUS, VM_MEMORY, VM_INFO)


def render(obs: Observation) -> bytes:
    """The scrape's text exposition, format 0.0.4, UTF-8."""
    host = obs.host
    out = [UP.header, _line(UP.name, _host_labels(host), 1 if obs.sample is not None else 0), HOST_CHECK.header]
    for name in ALL_CHECKS:
        result = obs.checks.get(name)
        if result is not None:
            out.append(_line(HOST_CHECK.name, _labels(host=host, check=name), 1 if result.ok else 0))
    if obs.load1 is not None:
        out += [HOST_LOAD1.header, _line(HOST_LOAD1.name, _host_labels(host), obs.load1)]
    if obs.sample is not None:
        _host_lines(out, host, obs.sample)
        _vm_lines(out, host, obs.sample.vms)
    out += [SCRAPE_DURATION.header, _line(SCRAPE_DURATION.name, _host_labels(host), obs.scrape_seconds), ERRORS.header]
    for kind, count in obs.errors.items():
        out.append(_line(ERRORS.name, _labels(host=host, kind=kind), count))
    return "".join(out).encode()


def _host_lines(out: list[str], host: str, sample: HostSample) -> None:
    facts = sample.facts
    active = [vm.definition for vm in sample.vms if vm.state.state in ACTIVE_STATES]
    defined = [d for d in active if d is not None]
    info_labels = _labels(host=host, hostname=facts.hostname, libvirt_version=facts.libvirt_version,
                          hypervisor=facts.hypervisor, hypervisor_version=facts.hypervisor_version)
    values = (1, facts.cpus, facts.memory_bytes, sample.memory_available_bytes, sum(d.vcpus for d in defined),
              sum(d.memory_bytes for d in defined), len(active))
    labels = _host_labels(host)
    for family, value in zip(HOST_FAMILIES, values):
        out += [family.header, _line(family.name, info_labels if family is HOST_INFO else labels, value)]


def _vm_lines(out: list[str], host: str, vms: tuple[VMSample, ...]) -> None:
    states, reasons, cpus, vcpus, memories, infos = ([family.header] for family in VM_FAMILIES)
    for vm in vms:
        state_block, reason = _state_lines(host, vm.name, vm.uuid, vm.state.state, vm.state.reason,
                                           vm.state.reason_code)
        states.append(state_block)
        reasons.append(reason)
        if vm.state.cpu_seconds is not None:
            cpus.append(f"{_cpu_prefix(host, vm.name, vm.uuid)}{floatToGoString(vm.state.cpu_seconds)}\n")
        if vm.definition is not None:
            vcpu, memory, info = _definition_lines(host, vm.name, vm.uuid, vm.definition)
            vcpus.append(vcpu)
            memories.append(memory)
            infos.append(info)
    for part in (states, reasons, cpus, vcpus, memories, infos):
        out += part


@lru_cache(maxsize=_CACHED_VMS)
def _state_lines(host: str, name: str, uuid: str, state: str, reason: str, reason_code: int) -> tuple[str, str]:
    """The VM's state set (one line per published state) and its reason line."""
    block = "".join(
        _line(VM_STATE.name, _labels(host=host, vm=name, uuid=uuid, state=s), 1 if s == state else 0)
        for s in PUBLISHED_STATES
    )
    reason_line = _line(
        VM_STATE_REASON.name, _labels(host=host, vm=name, uuid=uuid, state=state, reason=reason), reason_code
    )
    return block, reason_line


@lru_cache(maxsize=_CACHED_VMS)
def _cpu_prefix(host: str, name: str, uuid: str) -> str:
    return f"{VM_CPU.name}{_labels(host=host, vm=name, uuid=uuid)} "


@lru_cache(maxsize=_CACHED_VMS)
def _definition_lines(host: str, name: str, uuid: str, definition: DomainDefinition) -> tuple[str, str, str]:
    """vCPUs, memory and HA info lines of one definition (a frozen, hashable dataclass)."""
    ha = definition.ha
    return (
        _line(VM_VCPUS.name, _labels(host=host, vm=name, uuid=uuid), definition.vcpus),
        _line(VM_MEMORY.name, _labels(host=host, vm=name, uuid=uuid), definition.memory_bytes),
        _line(
            VM_INFO.name,
            _labels(host=host, vm=name, uuid=uuid, ha="true" if ha.protected else "false",
                    priority=str(ha.priority), group=ha.group),
            1,
        ),
    )


@lru_cache(maxsize=16)
def _host_labels(host: str) -> str:
    return _labels(host=host)


def _labels(**labels: str) -> str:
    """`{name="value",...}`: names sorted, values escaped as the text format requires."""
    pairs = ",".join(f'{key}="{_escape(labels[key])}"' for key in sorted(labels))
    return f"{{{pairs}}}"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _line(name: str, labels: str, value: float) -> str:
    return f"{name}{labels} {floatToGoString(value)}\n"

