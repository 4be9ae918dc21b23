"""The soak's injectors (bench/soak_inject.py) on a one-host lab with the whole stack: each fault
really happens. The soak itself (`make soak`, 30 minutes) is not part of `make test`."""
from __future__ import annotations

import time
import uuid as uuidlib

import libvirt
import pytest
import requests

from bench.soak_inject import Injectors, WebhookCapture, capture_alertmanager
from lab.stack import EXPORTER_PORT, Stack, wait_for

pytestmark = pytest.mark.lab

DELAY_S = 1.0  # well above a scrape on a loaded machine (tens of ms), so "cleared" is unambiguous


def timed(fn) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def scrape(host) -> None:
    requests.get(f"http://{host.address}:{EXPORTER_PORT}/metrics", timeout=10).raise_for_status()


def exporter_answers(host) -> bool:
    """Through the proxy, an exporter not listening yet is a connection the proxy closes at once."""
    try:
        return requests.get(f"http://{host.address}:{EXPORTER_PORT}/metrics", timeout=5).ok
    except requests.RequestException:
        return False


def libvirt_round_trip(host) -> None:
    conn = libvirt.open(host.uri)
    try:
        conn.getLibVersion()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def soaked(tmp_path_factory):
    from lab import Lab
    from tests.conftest import _track
    lab = Lab(1)
    try:
        lab.up()
        _track(lab)
        lab.add_delay_proxy("h1", (16509, EXPORTER_PORT))  # before anything connects: every path through it
        capture = WebhookCapture()
        with Stack(lab, tmp_path_factory.mktemp("soak-injectors")) as stack:
            capture_alertmanager(stack, capture)
            yield lab, stack, Injectors(lab, stack, capture), capture
        capture.close()
    finally:
        lab.down()


def test_delay_proxy_holds_what_the_host_sends_and_stops_when_cleared(soaked):
    lab, _, inject, _ = soaked
    h = lab.host("h1")
    scrape(h)  # the redirect sends the scrape through the proxy; at 0 delay it is as fast as before
    assert timed(lambda: scrape(h)) < DELAY_S
    inject.delay("h1", DELAY_S)
    time.sleep(0.3)  # the proxy re-reads its delay file every 0.1 s
    try:
        assert timed(lambda: scrape(h)) >= DELAY_S
        # libvirt's RPC goes through it too: opening takes several round trips, a call one more
        assert timed(lambda: libvirt_round_trip(h)) >= 2 * DELAY_S  # measured: 6.0 s at 1 s
    finally:
        inject.end_delay("h1")
    time.sleep(0.3)
    assert timed(lambda: scrape(h)) < DELAY_S


def test_round_trip_on_the_kept_alive_connection_answers_through_1s_delay_and_5pct_loss(soaked):
    # Verification's evidence on the soak's slow link: a fresh connect cannot finish in time (6 s
    # above), but a call on the remediator's kept-alive connection returns, and vetoes a HostDown.
    from remediator.edges.libvirt_events import DomainEvents, Link
    lab, _, inject, _ = soaked
    h = lab.host("h1")
    events = DomainEvents({"h1": h.uri}, connect_timeout=2.0)
    events.start()
    try:
        wait_for(lambda: events.link("h1") is Link.ANSWERS, 15, "the watcher's connection to h1")
        inject.delay("h1", DELAY_S, loss_percent=5)
        time.sleep(0.3)
        try:
            answers, took = [], []
            for _ in range(3):
                took.append(timed(lambda: answers.append(events.round_trip("h1"))))
            assert answers == [Link.ANSWERS] * 3
            # one RPC through the delay each, well inside the keepalive's bound (10 s)
            assert all(DELAY_S <= t < 8.0 for t in took), took
        finally:
            inject.end_delay("h1")
    finally:
        events.stop()


def test_each_component_restart_really_happens(soaked):
    lab, stack, inject, capture = soaked
    for restart in (inject.restart_prometheus, inject.restart_alertmanager):
        seen = restart()
        assert seen["pid_before"] != seen["pid_after"] and seen["pid_after"] is not None
    stack.prometheus.query("up")  # answering again, on the same address
    capture_alertmanager(stack, capture)  # the restarted Alertmanager re-read its config file: still two hooks

    seen = inject.kill_exporter("h1", down_s=0.5)
    assert seen["pid_before"] != seen["pid_after"]
    wait_for(lambda: exporter_answers(lab.host("h1")), 10, "the restarted exporter answers")

    seen = inject.restart_libvirtd("h1", down_s=0.5)
    assert seen["pid_before"] != seen["pid_after"]
    libvirt_round_trip(lab.host("h1"))

    seen = inject.cpu_stress("h1")
    assert seen["processes"] >= 2  # stress-ng and its worker, in the host's namespace
    inject.end_cpu_stress("h1")
    assert inject._stress_pids("h1") == []


def test_every_alert_alertmanager_sent_is_delivered_once_more(soaked):
    _, stack, inject, capture = soaked
    stack.alertmanager.post_alerts([{"labels": {
        "alertname": "HypervisorVMDown", "remediation": "vm_down", "severity": "critical", "host": "h1",
        "vm": "not-in-inventory", "uuid": str(uuidlib.uuid4())}}])
    wait_for(lambda: capture.taken(), 15, "Alertmanager's post captured")
    seen = inject.redeliver_alerts()
    assert seen["payloads"] >= 1 and seen["alerts"] >= 1 and seen["answers"] == [200]
