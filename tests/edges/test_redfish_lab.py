"""remediator.edges.redfish against a lab host's Redfish BMC (lab/redfish.py), driven by real clients
nobody here wrote: fence_redfish (Debian fence-agents) for off and status, sushy for boot override and
resets. One 1-host lab for the module; every test leaves the host on."""
from __future__ import annotations

import os
import socket
import time

import pytest
import requests

from lab import Lab, bootdev, redfish
from lab.stack import wait_for
from remediator.edges.fencing import PowerState
from remediator.edges.redfish import RedfishPower, RedfishUnavailable

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def bmc():
    lab = Lab(1)
    try:
        lab.up()
        ep = redfish.start(lab, "h1")
        yield lab, ep
    finally:
        lab.down()


def client(ep, **kw) -> RedfishPower:
    return RedfishPower(ep.host, ep.address, ep.port, ep.user, ep.password, verify=False, **kw)


def powered(lab, on: bool) -> None:
    wait_for(lambda: lab.is_on("h1") == on, 20, f"h1 {'on' if on else 'off'}")


def log_since(lab, t0) -> list[str]:
    return [f"{via} {action}" for ts, via, action in bootdev.power_log(lab.host("h1").dir) if ts >= t0]


def test_fence_redfish_fences_the_lab_host_off_status_says_off_then_on(bmc):
    lab, ep = bmc
    power = client(ep)
    assert power.status() is PowerState.ON
    t0 = time.time()
    started = time.monotonic()
    result = power.off()
    off_s = time.monotonic() - started
    assert result.ok and result.state is PowerState.OFF, result.detail
    assert not lab.is_on("h1"), "fenced: no process of h1 lives"
    assert power.status() is PowerState.OFF
    started = time.monotonic()
    power.on()
    powered(lab, True)
    on_s = time.monotonic() - started
    assert power.status() is PowerState.ON
    assert log_since(lab, t0) == ["redfish off", "redfish on"]
    print(f"\nfence_redfish off (off + status) {off_s:.2f} s; sushy On until h1's libvirtd runs {on_s:.2f} s")


def test_forceoff_of_a_system_already_off_answers_409_and_counts_as_off(bmc):
    lab, ep = bmc
    power = client(ep)
    assert power.off().ok
    wire = requests.post(f"{ep.url}{redfish.RESET}", json={"ResetType": "ForceOff"}, auth=(ep.user, ep.password),
                         verify=ep.ca_cert, timeout=5)
    assert wire.status_code == 409, wire.text  # the Redfish semantic the lab's BMC reproduces
    assert power.force_off() == "already off (409; PowerState Off)"
    again = power.off()  # fence_redfish on an off host: status first, "Already OFF"
    assert again.ok and again.state is PowerState.OFF, again.detail
    power.on()
    powered(lab, True)


def test_pxe_once_override_through_sushy_is_the_next_boot_and_a_power_cycle_consumes_it(bmc):
    lab, ep = bmc
    power = client(ep)
    host_dir = lab.host("h1").dir
    t0 = time.time()
    power.set_next_boot_pxe_once()
    assert bootdev.read(host_dir) == bootdev.BootDevice("pxe", True)
    system = requests.get(f"{ep.url}{redfish.SYSTEM}", auth=(ep.user, ep.password), verify=ep.ca_cert, timeout=5).json()
    assert (system["Boot"]["BootSourceOverrideTarget"], system["Boot"]["BootSourceOverrideEnabled"]) == ("Pxe", "Once")
    assert power.power_cycle() == "PowerCycle"
    wait_for(lambda: not bootdev.read(host_dir).once, 20, "the once-override consumed by the power-on")
    powered(lab, True)
    assert bootdev.read(host_dir) == bootdev.BootDevice("disk", False)
    assert log_since(lab, t0) == ["redfish bootdev-pxe", "redfish cycle"], "one cycle, counted at the BMC"


def test_power_cycle_of_an_off_host_powers_it_on(bmc):
    lab, ep = bmc
    power = client(ep)
    assert power.off().ok
    assert power.power_cycle() == "On (it was off)"
    powered(lab, True)


def test_a_bmc_that_does_not_answer_raises_with_the_reason(bmc):
    lab, ep = bmc
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    nobody = RedfishPower("h1", "127.0.0.1", dead, ep.user, ep.password, verify=False, timeout_s=2)
    with pytest.raises(RedfishUnavailable, match="power cycle.*(refused|Connection)") as refused:
        nobody.power_cycle()
    assert refused.value.host == "h1" and refused.value.reason
    with pytest.raises(RedfishUnavailable, match="status: fence_redfish exit 1"):
        nobody.status()
    flag = lab.host("h1").dir + "/" + redfish.NO_BOOTDEV
    open(flag, "w").close()  # the BMC ignores boot-device requests
    try:
        started = time.monotonic()
        with pytest.raises(RedfishUnavailable, match="boot override.*[Tt]imed? ?out"):
            client(ep, timeout_s=1.5).set_next_boot_pxe_once()
        assert time.monotonic() - started < 10
    finally:
        os.unlink(flag)
    with pytest.raises(RedfishUnavailable, match="HTTP 401"):
        RedfishPower("h1", ep.address, ep.port, ep.user, "wrong", verify=False).on()
