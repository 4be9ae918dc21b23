"""Live migration between lab hosts, and the lab's refusals of it (one libvirt qemu hook per host).

Migrations here are what an operator would type: `virsh migrate --live --persistent --undefinesource`
from the root namespace; the source resolves the destination's hostname through the lab's /etc/hosts.
"""
from __future__ import annotations

import subprocess

import libvirt
import pytest

pytestmark = pytest.mark.lab

RUNNING_MIGRATED = str(libvirt.VIR_DOMAIN_RUNNING_MIGRATED)   # resumed after an incoming migration
RUNNING_BOOTED = str(libvirt.VIR_DOMAIN_RUNNING_BOOTED)


def virsh_migrate(src, dst, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", src.uri, "migrate", "--live", "--persistent", "--undefinesource",
                           name, dst.uri], capture_output=True, text=True, timeout=60)


def test_a_refused_migration_fails_the_guest_keeps_running_on_its_source_until_allowed(lab):
    h1, h2, h3 = lab.hosts
    lab.define_guest(h1, "mig-refused")
    lab.refuse_migration(h2, "mig-refused")

    refused = virsh_migrate(h1, h2, "mig-refused")
    assert refused.returncode != 0
    assert "lab: migration of mig-refused into this host refused" in refused.stderr
    assert lab.domain_state(h1, "mig-refused") == ("running", RUNNING_BOOTED)
    assert "mig-refused" not in lab.domains(h2)

    lab.refuse_migration(h2, "mig-refused", refuse=False)
    moved = virsh_migrate(h1, h2, "mig-refused")
    assert moved.returncode == 0, moved.stderr
    assert lab.domain_state(h2, "mig-refused") == ("running", RUNNING_MIGRATED)
    assert "mig-refused" not in lab.domains(h1), "--undefinesource: nothing left on the source"


def test_refusing_a_migration_into_one_host_leaves_the_others_open(lab):
    h1, h2, h3 = lab.hosts
    lab.define_guest(h1, "mig-other")
    lab.refuse_migration(h2, "mig-other")
    try:
        moved = virsh_migrate(h1, h3, "mig-other")
        assert moved.returncode == 0, moved.stderr
        assert lab.domain_state(h3, "mig-other") == ("running", RUNNING_MIGRATED)
    finally:
        lab.refuse_migration(h2, "mig-other", refuse=False)


def test_refused_everywhere_no_host_takes_it_live_but_a_cold_start_elsewhere_works(lab):
    h1, h2, h3 = lab.hosts
    lab.define_guest(h1, "mig-nowhere")
    lab.refuse_migration_everywhere("mig-nowhere")
    try:
        for dst in (h2, h3):
            refused = virsh_migrate(h1, dst, "mig-nowhere")
            assert refused.returncode != 0 and "migration of mig-nowhere into this host refused" in refused.stderr
        assert lab.domain_state(h1, "mig-nowhere")[0] == "running"
        # What the remediator does next: destroy it on the source, start it elsewhere.
        subprocess.run(["virsh", "-c", h1.uri, "destroy", "mig-nowhere"], check=True, capture_output=True)
        lab.define_guest(h2, "mig-nowhere")
        assert lab.domain_state(h2, "mig-nowhere") == ("running", RUNNING_BOOTED)
    finally:
        lab.refuse_migration_everywhere("mig-nowhere", refuse=False)


def test_refuse_start_also_refuses_an_incoming_migration(lab):
    """Intended: refuse_start means the host cannot run the guest at all. libvirt calls the hook's
    "prepare" before the destination's QEMU starts, for a migration as for a cold start."""
    h1, h2, _ = lab.hosts
    lab.define_guest(h1, "mig-nostart")
    lab.refuse_start(h2, "mig-nostart")
    try:
        refused = virsh_migrate(h1, h2, "mig-nostart")
        assert refused.returncode != 0
        assert "lab: start of mig-nostart refused on this host" in refused.stderr
        assert lab.domain_state(h1, "mig-nostart")[0] == "running"
        assert "mig-nostart" not in lab.domains(h2)
    finally:
        lab.refuse_start(h2, "mig-nostart", refuse=False)


def test_the_duplicate_sampler_sees_no_duplicate_through_live_migrations_back_and_forth(lab):
    """Each live migration has two QEMUs for a moment (the source's outlives its domain by a sample
    or two): neither is a guest running twice. With neither the sampler's exited-while-asked check
    nor its grace for a QEMU its libvirt has forgotten, this failed in 2 of 3 runs (machine shared)."""
    from lab.sampler import DuplicateSampler
    from remediator.edges.libvirt import Hypervisors

    h1, h2, _ = lab.hosts
    hv = Hypervisors({h.name: h.uri for h in (h1, h2)})
    uuids = [lab.define_guest(h1, f"mig-sampled-{i}") for i in range(2)]
    try:
        with DuplicateSampler(lab, interval=0.05) as sampler:
            for src, dst in (("h1", "h2"), ("h2", "h1"), ("h1", "h2")):
                for uuid in uuids:
                    hv.migrate_live(src, dst, uuid)
        assert sampler.migrations_seen > 0, "the sampler looked while both QEMUs were there"
        assert sampler.duplicates == []
    finally:
        hv.close()
