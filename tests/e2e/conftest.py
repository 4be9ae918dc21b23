"""The whole product against the lab: real exporters, Prometheus with rules/, Alertmanager, remediator.

A fresh lab per test: the faults (power loss, partition, fencing) change hosts for good.
"""
from __future__ import annotations

import pytest

from lab.sampler import DuplicateSampler
from lab.stack import Stack


@pytest.fixture
def stack_factory(lab_factory, tmp_path, request):
    """make(hosts=3, vms=[...], policy=None, monitoring=True, store=None) -> (lab, stack, sampler), all stopped after.

    The sampler (every 200 ms, QEMU processes of every host) runs for the whole test; each test
    asserts it saw no UUID on two hosts. store: "sqlite" or "postgresql" (a fresh database on the
    session's server); None takes the run's --store option (default sqlite).
    """
    made = []

    def make(hosts: int = 3, store: str | None = None, **stack_kw):
        lab = lab_factory(hosts)
        if (store or request.config.getoption("--store")) == "postgresql":
            stack_kw["store_url"] = request.getfixturevalue("postgres_db")()
        stack = Stack(lab, tmp_path / f"stack{len(made)}", **stack_kw)
        sampler = DuplicateSampler(lab)
        made.append((stack, sampler))
        sampler.start()
        stack.start()
        return lab, stack, sampler

    yield make
    for stack, sampler in made:
        stack.stop()
        sampler.stop()
