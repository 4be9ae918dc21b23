"""The exporter's own text exposition against prometheus_client's parser and encoder (no libvirt)."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.checks import ALL_CHECKS, CheckResult
from exporter.collect import HostFacts, HostSample, VMSample
from exporter.domains import DomainDefinition, DomainState, HADeclaration
from exporter.errors import KINDS
from exporter.metrics import Observation, render
from tests.exporter.exporter_parse import names, value

FACTS = HostFacts("hv-1.example", "9.0.0", "qemu", "7.2.0", 8, 32 * 1024**3)
# Label values the text format must escape: quote, backslash, newline; and non-ASCII.
AWKWARD = 'we"b\\1\nü'


def vm(name: str, uuid: str, state: str = "running", reason: str = "booted", code: int = 1,
       cpu: float | None = 12.5, group: str = "web", protected: bool = True, vcpus: int = 2) -> VMSample:
    definition = DomainDefinition(name, uuid, vcpus, 512 * 1024**2, HADeclaration(protected, 100, group))
    return VMSample(name, uuid, DomainState(state, reason, code, cpu), definition)


def observation(vms: tuple[VMSample, ...], sample: bool = True, host: str = "hv-1") -> Observation:
    return Observation(
        host=host,
        sample=HostSample(FACTS, 20 * 1024**3, vms, 0.004) if sample else None,
        checks={name: CheckResult(name != "boot", "") for name in ALL_CHECKS},
        errors={kind: i for i, kind in enumerate(KINDS)},
        scrape_seconds=0.0123,
        load1=0.25,
    )


class _Parsed:
    def __init__(self, text: str) -> None:
        self._families = list(text_string_to_metric_families(text))

    def collect(self) -> list:
        return self._families


def test_the_exposition_is_byte_for_byte_what_prometheus_client_writes_for_the_same_samples():
    vms = (
        vm(AWKWARD, "u-1", group=AWKWARD),
        vm("db1", "u-2", state="shutoff", reason="crashed", code=3, cpu=None),
        VMSample("gone", "u-3", DomainState("paused", "user", 1, 1e-9), None),  # definition unreadable
        vm("big", "u-4", cpu=123456789.123, vcpus=64),
    )
    for obs in (observation(vms, host=AWKWARD), observation(()), observation(vms, sample=False)):
        text = render(obs).decode()
        assert generate_latest(_Parsed(text)).decode() == text
    text = render(observation(vms)).decode()
    assert value(text, "hypervisor_vm_info", vm=AWKWARD, group=AWKWARD, ha="true", priority="100") == 1
    assert value(text, "hypervisor_vm_state", vm="db1", state="shutoff") == 1
    assert value(text, "hypervisor_vm_cpu_seconds_total", vm="big") == 123456789.123
    assert value(text, "hypervisor_vm_vcpus", vm="gone") is None
    assert value(text, "hypervisor_host_vms") == 3
    assert value(text, "hypervisor_host_vcpus_allocated") == 2 + 64  # "gone" has no readable definition


def test_without_libvirt_only_up_0_the_checks_and_the_exporters_own_series_are_published():
    text = render(observation((vm("web1", "u-1"),), sample=False)).decode()
    assert value(text, "hypervisor_up") == 0
    assert names(text) == {"hypervisor_up", "hypervisor_host_check", "hypervisor_host_load1",
                           "hypervisor_exporter_scrape_duration_seconds", "hypervisor_exporter_errors_total"}


def test_a_vms_new_state_and_definition_show_at_once_although_its_lines_are_cached():
    before = render(observation((vm("web1", "u-1"),))).decode()
    after = render(observation((vm("web1", "u-1", state="shutoff", reason="crashed", code=3, cpu=None,
                                   group="db", protected=False),))).decode()
    assert value(before, "hypervisor_vm_state", vm="web1", state="running") == 1
    assert value(after, "hypervisor_vm_state", vm="web1", state="running") == 0
    assert value(after, "hypervisor_vm_state", vm="web1", state="shutoff") == 1
    assert value(after, "hypervisor_vm_state_reason", vm="web1", state="shutoff", reason="crashed") == 3
    assert value(after, "hypervisor_vm_info", vm="web1", ha="false", group="db") == 1
    assert value(after, "hypervisor_vm_info", vm="web1", ha="true") is None
    assert value(after, "hypervisor_vm_cpu_seconds_total", vm="web1") is None
