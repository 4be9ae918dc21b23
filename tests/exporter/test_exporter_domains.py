"""The pure part: states, reasons, and what a domain's XML declares."""

from __future__ import annotations

import pytest

from exporter.domains import (
    DefinitionError,
    HADeclaration,
    parse_definition,
    reason_name,
    state_name,
    vm_state_from_stats,
)

HA = '<rem:ha xmlns:rem="urn:remediator:ha:1" protected="true" priority="100" group="web"/>'


def domain_xml(metadata: str = "", vcpu: str = "<vcpu>2</vcpu>", memory: str = "<memory unit='MiB'>32</memory>") -> str:
    return (
        "<domain type='kvm'><name>web1</name><uuid>11111111-2222-3333-4444-555555555555</uuid>"
        f"{memory}{vcpu}<metadata>{metadata}</metadata></domain>"
    )


def test_ha_declaration_is_read_from_the_project_namespace():
    definition = parse_definition(domain_xml(HA))
    assert definition.ha == HADeclaration(protected=True, priority=100, group="web")
    assert (definition.name, definition.vcpus, definition.memory_bytes) == ("web1", 2, 32 * 1024 * 1024)


@pytest.mark.parametrize(
    "metadata",
    [
        "",
        '<ha protected="true"/>',  # right name, no namespace: someone else's element
        '<x:ha xmlns:x="urn:other:1" protected="true"/>',
        '<rem:ha xmlns:rem="urn:remediator:ha:1" protected="false" priority="5"/>',
    ],
)
def test_without_the_declaration_a_vm_is_not_protected(metadata):
    assert parse_definition(domain_xml(metadata)).ha.protected is False


def test_a_bad_priority_keeps_the_protection():
    ha = '<rem:ha xmlns:rem="urn:remediator:ha:1" protected="true" priority="high"/>'
    assert parse_definition(domain_xml(ha)).ha == HADeclaration(protected=True, priority=0, group="")


def test_current_vcpus_and_memory_units():
    definition = parse_definition(
        domain_xml(vcpu="<vcpu current='2'>8</vcpu>", memory="<memory unit='GiB'>4</memory>")
    )
    assert (definition.vcpus, definition.memory_bytes) == (2, 4 * 1024**3)
    assert parse_definition(domain_xml(memory="<memory>1024</memory>")).memory_bytes == 1024 * 1024  # KiB


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<domain", "does not parse"),
        ("<domain><uuid>u</uuid><vcpu>1</vcpu><memory>1</memory></domain>", "<name>"),
        ("<domain><name>n</name><uuid>u</uuid><memory>1</memory></domain>", "<vcpu>"),
        ("<domain><name>n</name><uuid>u</uuid><vcpu>1</vcpu><memory unit='parsec'>1</memory></domain>", "unit"),
    ],
)
def test_a_definition_missing_what_we_need_names_it(xml, message):
    with pytest.raises(DefinitionError, match=message):
        parse_definition(xml)


def test_states_and_reasons_by_name():
    assert state_name(5) == "shutoff" and reason_name("shutoff", 3) == "crashed"
    assert reason_name("shutoff", 1) == "shutdown" and reason_name("shutoff", 2) == "destroyed"
    assert state_name(6) == "crashed" and reason_name("crashed", 1) == "panicked"
    assert state_name(42) == "nostate"  # a newer libvirt's state stays visible as unknown
    assert reason_name("shutoff", 99) == "code_99"


def test_state_from_a_bulk_stats_record():
    state = vm_state_from_stats({"state.state": 5, "state.reason": 3, "cpu.time": 2_500_000_000})
    assert (state.state, state.reason, state.reason_code, state.cpu_seconds) == ("shutoff", "crashed", 3, 2.5)
    assert vm_state_from_stats({"state.state": 1, "state.reason": 1}).cpu_seconds is None
