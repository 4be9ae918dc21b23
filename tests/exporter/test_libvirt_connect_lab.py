"""remediator.edges.libvirt_connect against real libvirtd hosts: dead and partitioned hosts fail fast."""

from __future__ import annotations

import subprocess
import threading
import time

import libvirt
import pytest

from remediator.edges.libvirt_connect import HostUnreachable, event_loop_paused, is_unreachable, open_connection

pytestmark = pytest.mark.lab

# A healthy host's connection, opened to set a test up (what is timed is the failure after it):
# on a loaded 2-core machine (3 test workers, guests starting) an open once took over 5 s.
SETUP_OPEN_S = 30


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
    conn = open_connection(host.uri, timeout=SETUP_OPEN_S)
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
    open_connection(host.uri, timeout=SETUP_OPEN_S).close()


def test_with_the_event_loop_paused_a_partitioned_host_still_fails_in_seconds(lab_factory):
    lab = lab_factory(hosts=1)
    host = lab.hosts[0]
    lab.define_guest(host, "g1")
    conn = open_connection(host.uri, timeout=SETUP_OPEN_S)
    dom = conn.lookupByName("g1")
    lab.partition(host)
    # Were the pause not capped, the call would hang until the link returns: heal it then, so a
    # regression fails this test instead of hanging the suite.
    heal_late = threading.Timer(30, lab.heal, [host])
    heal_late.start()
    try:
        with event_loop_paused():
            elapsed, err = timed_failure(dom.info)
        print(f"\npartitioned, event loop paused: a call failed after {elapsed:.2f} s: {err}")
        assert isinstance(err, libvirt.libvirtError) and is_unreachable(err), err
        assert elapsed < 8.0  # keepalive (1 s, 3 missed) ~4 s, plus at most one capped pause
    finally:
        heal_late.cancel()
        lab.heal(host)


def test_an_event_that_arrives_while_the_event_loop_is_paused_is_delivered(lab_factory):
    lab = lab_factory(hosts=1)
    host = lab.hosts[0]
    lab.define_guest(host, "g1")
    conn = open_connection(host.uri, timeout=SETUP_OPEN_S)
    stopped = threading.Event()
    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                lambda _c, _dom, event, _d, _o: event == libvirt.VIR_DOMAIN_EVENT_STOPPED
                                and stopped.set(), None)
    with event_loop_paused():
        subprocess.run(["virsh", "-c", host.uri, "destroy", "g1"], check=True, capture_output=True)
        assert conn.lookupByName("g1").info()[0] == libvirt.VIR_DOMAIN_SHUTOFF  # calls work meanwhile
    assert stopped.wait(5), "the stop event was delivered (at the latest once the pause ran out)"


def test_power_loss_is_unreachable_on_open_and_existing_connections(lab_factory):
    lab = lab_factory(hosts=1)
    host = lab.hosts[0]
    conn = open_connection(host.uri, timeout=SETUP_OPEN_S)
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
    conn = open_connection(lab.hosts[0].uri, timeout=SETUP_OPEN_S)
    with pytest.raises(libvirt.libvirtError) as err:
        conn.lookupByName("no-such-domain")
    assert not is_unreachable(err.value)
