"""remediator.edges.libvirt_connect against real libvirtd hosts: dead and partitioned hosts fail fast."""

from __future__ import annotations

import time

import libvirt
import pytest

from remediator.edges.libvirt_connect import HostUnreachable, is_unreachable, open_connection

pytestmark = pytest.mark.lab


def timed_failure(fn) -> tuple[float, BaseException]:
    started = time.monotonic()
    try:
        fn()
    except (HostUnreachable, libvirt.libvirtError) as err:
        return time.monotonic() - started, err
    raise AssertionError("the call succeeded against an unreachable host")


def test_partitioned_host_fails_in_seconds_not_minutes(lab_factory):
    lab = lab_factory(hosts=1)
    host = lab.hosts[0]
    lab.define_guest(host, "g1")
    conn = open_connection(host.uri, timeout=5)
    assert conn.lookupByName("g1").isActive()
    lab.partition(host)
    try:
        elapsed, err = timed_failure(lambda: conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0))
        print(f"\npartitioned: a call on an open connection failed after {elapsed:.2f} s: {err}")
        assert isinstance(err, libvirt.libvirtError) and is_unreachable(err), err
        assert elapsed < 8.0  # keepalive (1 s, 3 missed) ~4 s
        elapsed, err = timed_failure(lambda: open_connection(host.uri, timeout=2))
        print(f"partitioned: opening a connection failed after {elapsed:.2f} s: {err}")
        assert isinstance(err, HostUnreachable) and elapsed < 3.0
    finally:
        lab.heal(host)
    assert lab.running(host, inside=True), "the daemon and its guest kept running through the partition"
    open_connection(host.uri, timeout=5).close()


def test_power_loss_is_unreachable_on_open_and_existing_connections(lab_factory):
    lab = lab_factory(hosts=1)
    host = lab.hosts[0]
    conn = open_connection(host.uri, timeout=5)
    lab.power_off(host)
    try:
        elapsed, err = timed_failure(lambda: conn.listAllDomains())
        assert isinstance(err, libvirt.libvirtError) and is_unreachable(err), err
        assert elapsed < 8.0
        elapsed, err = timed_failure(lambda: open_connection(host.uri, timeout=5))
        assert isinstance(err, HostUnreachable) and elapsed < 1.0, (elapsed, err)
        assert err.uri == host.uri
    finally:
        lab.power_on(host)


def test_a_refused_request_is_not_unreachable(lab_factory):
    lab = lab_factory(hosts=1)
    conn = open_connection(lab.hosts[0].uri, timeout=5)
    with pytest.raises(libvirt.libvirtError) as err:
        conn.lookupByName("no-such-domain")
    assert not is_unreachable(err.value)
