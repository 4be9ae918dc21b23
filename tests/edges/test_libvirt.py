"""The libvirt edge over libvirt's test driver: two private "hosts" and one that is not there.

Each `test:///<file>` connection gets its own copy of the file's node, so two files are two
independent hypervisors; the third host is a qemu+tcp URI on a loopback port nobody listens
on, which libvirt refuses at once (code 38), as it does for a host that lost power.
"""

import socket

import pytest

from remediator.edges.libvirt import DomainError, HostUnreachable, Hypervisors, uuid_of_xml

UUID = "6f0b6ad2-8b3f-4a0e-9d5e-1a2b3c4d5e6f"


def domain_xml(name: str, uuid: str, running: bool) -> str:
    state = "" if running else "<test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>"
    return f"""<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>64</memory><vcpu>2</vcpu><os><type>hvm</type></os>{state}</domain>"""


def node_xml(*domains: str) -> str:
    return f"""<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>1</threads>
  <active>8</active><mhz>2000</mhz><model>x86_64</model></cpu><memory>16777216</memory>
  {''.join(domains)}</node>"""


@pytest.fixture
def hypervisors(tmp_path):
    (tmp_path / "h1.xml").write_text(node_xml(domain_xml("vm1", UUID, running=True)))
    (tmp_path / "h2.xml").write_text(node_xml())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    hv = Hypervisors({
        "h1": f"test://{tmp_path}/h1.xml",
        "h2": f"test://{tmp_path}/h2.xml",
        "h3": f"qemu+tcp://127.0.0.1:{dead}/system",
    }, connect_timeout=3)
    yield hv
    hv.close()


def test_domains_lists_every_defined_domain_with_its_size(hypervisors):
    [vm] = hypervisors.domains("h1")
    assert (vm.uuid, vm.name, vm.state, vm.vcpus, vm.memory_bytes) == (UUID, "vm1", "running", 2, 64 << 20)
    assert vm.alive
    assert hypervisors.domains("h2") == []


def test_capacity(hypervisors):
    assert hypervisors.capacity("h1") == (8, 16 << 30)


def test_find_running_names_hosts_it_could_not_ask(hypervisors):
    assert hypervisors.find_running(UUID) == (["h1"], ["h3"])


def test_unreachable_host_raises_and_is_not_reachable(hypervisors):
    with pytest.raises(HostUnreachable, match="127.0.0.1"):
        hypervisors.domains("h3")
    assert not hypervisors.is_reachable("h3")
    assert hypervisors.is_reachable("h1")


def test_define_and_start_elsewhere_is_idempotent(hypervisors):
    xml = hypervisors.domain_xml("h1", UUID)
    assert uuid_of_xml(xml) == UUID
    hypervisors.destroy("h1", UUID)
    hypervisors.destroy("h1", UUID)  # already off: nothing to do
    assert hypervisors.define_and_start("h2", xml) == UUID
    assert hypervisors.define_and_start("h2", xml) == UUID  # resumed after a restart: no error
    assert hypervisors.find_running(UUID, ["h1", "h2"]) == (["h2"], [])


def test_undefine_refuses_a_running_domain_and_ignores_a_missing_one(hypervisors):
    with pytest.raises(DomainError, match="running"):
        hypervisors.undefine("h1", UUID)
    hypervisors.destroy("h1", UUID)
    hypervisors.undefine("h1", UUID)
    hypervisors.undefine("h1", UUID)
    assert hypervisors.domains("h1") == []


def test_start_of_a_running_domain_is_a_no_op(hypervisors):
    hypervisors.start("h1", UUID)
    assert hypervisors.find_running(UUID, ["h1"]) == (["h1"], [])


def test_unknown_host_is_named(hypervisors):
    with pytest.raises(KeyError, match="h9"):
        hypervisors.domains("h9")
