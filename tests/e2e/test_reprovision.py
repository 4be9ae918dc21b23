"""Issue 10 on the real stack: a host out of service reinstalled over PXE through its BMC and back.

One lab and one stack for the module (the tests run in order; each leaves its hosts in service but
the last). h1 and h2 are powered through IPMI (fence_ipmilan; ipmitool), h3 through Redfish
(fence_redfish; sushy). h1 is reinstalled by policy after its boot files went, h3 the same through
Redfish, h2 on an operator's request after a power loss, h3 again with the remediator killed (-9) in
the middle, and h2 again with a BMC that does not answer the boot-device request. The never-twice sampler watches every guest throughout, and the BMCs'
power log (lab/bootdev.py) counts every power action.
"""
from __future__ import annotations

import sqlite3
import subprocess
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

from lab import redfish
from lab.host import BOOT_FILES
from lab.sampler import DuplicateSampler
from lab.stack import BIN, Stack, wait_for

pytestmark = pytest.mark.lab

INSTALL_DELAY_S = 4.0
HOSTS = {
    "h1": {"reprovision": {"damaged": "automatic", "fenced": "on_request"}},
    "h2": {"reprovision": {"fenced": "on_request"}},
    "h3": {"reprovision": {"damaged": "automatic", "fenced": "on_request"}},
}
POLICY = {"reprovision": {"ready_poll_s": 0.5, "ready_s": 120}}
PHASES = ("reprovision_boot_device", "reprovision_power_cycle", "reprovision_waiting", "reprovision_activating")


@pytest.fixture(scope="module")
def rp(module_lab_factory, tmp_path_factory):
    lab = module_lab_factory(3, install_delay_s=INSTALL_DELAY_S)
    for h in lab.hosts:  # the same load figure everywhere: allocation decides placement, not noise
        lab.set_host_load(h, 0.5)
    ep = redfish.start(lab, "h3")
    hosts = {**HOSTS, "h3": {**HOSTS["h3"], "fence": {"agent": "fence_redfish", "options": {
        "ip": ep.address, "ipport": ep.port, "username": ep.user, "password": ep.password, "ssl_insecure": True,
        "power_wait": 0}}}}
    vms = [{"name": f"db-{i}"} for i in range(4)] + [{"name": n} for n in ("web-9", "fx-1", "k-1", "rf-0", "rf-1")]
    with DuplicateSampler(lab) as sampler, \
            Stack(lab, tmp_path_factory.mktemp("reprovision"), vms=vms, policy=POLICY, host_settings=hosts) as stack:
        yield lab, stack, sampler


def ha(lab, host, name):
    return lab.define_guest(host, name, metadata=lab.ha_metadata(protected=True))


def host_view(stack, name) -> dict:
    return next(h for h in stack.api("hosts")["hosts"] if h["name"] == name)


def incident(stack, subject) -> dict:
    found = stack.incident(subject)
    return found["incident"] if found else {}


def power_actions(lab, host, since: float) -> list[str]:
    """Power-on and power-cycle actions any BMC of the host carried out since `since` (unix time)."""
    return [action for ts, via, action in lab.power_log(host) if ts >= since and action in ("on", "cycle", "reset")]


def phase_seconds(inc: dict) -> dict[str, float]:
    """Seconds spent in each phase, from the starts the incident recorded (the last ends at closed_at)."""
    starts = sorted((datetime.fromisoformat(at), phase) for phase, at in inc["data"]["phases"].items())
    ends = [at for at, _ in starts[1:]] + [datetime.fromisoformat(inc["closed_at"])]
    return {phase.removeprefix("reprovision_"): round((end - at).total_seconds(), 2)
            for (at, phase), end in zip(starts, ends) if phase.startswith("reprovision_")}


def wait_closed(stack, subject, timeout) -> dict:
    wait_for(lambda: incident(stack, subject).get("closed_at"), timeout, f"{subject} closed",
             on_timeout=lambda: stack.log_tail() + "\n" + str(incident(stack, subject)))
    return incident(stack, subject)


def test_damaged_host_is_drained_live_reinstalled_over_pxe_by_policy_and_takes_a_new_guest(rp):
    lab, stack, sampler = rp
    uuids = {f"db-{i}": ha(lab, "h1", f"db-{i}") for i in range(4)}
    web = ha(lab, "h2", "web-9")
    stack.wait_watching(list(uuids.values()) + [web])
    since = time.time()
    lab.damage_boot("h1")
    started = time.monotonic()
    wait_for(lambda: all(lab.where_running(u) not in ([], ["h1"]) for u in uuids.values()), 90,
             "every h1 guest running on another host", on_timeout=stack.log_tail)
    moved_s = time.monotonic() - started
    drained = wait_closed(stack, "host:h1:damaged", 30)
    assert drained["state"] == "recovered" and drained["data"]["cold_restarts"] == {}, drained  # all live
    inc = wait_closed(stack, "host:h1:reprovision", 120)
    total_s = time.monotonic() - started
    assert inc["state"] == "recovered", inc
    assert inc["data"]["opened_by"] == "policy" and inc["data"]["pxe"] is True
    assert host_view(stack, "h1")["condition"] == "up"
    assert lab.domains("h1") == {}  # reinstalled: no domains; boot files back
    assert all((Path(lab.host("h1").boot_dir) / f).exists() for f in BOOT_FILES)
    assert power_actions(lab, "h1", since) == ["cycle"]
    assert lab.next_boot("h1").target == "disk"  # the once-override was consumed by the boot
    phases = phase_seconds(inc)
    print(f"\nhost_reprovision (IPMI): 4 guests moved live {moved_s:.2f} s after the boot files went; "
          f"phases {phases}; damage -> back in the pool {total_s:.2f} s (bar: 420 s), install delay "
          f"{INSTALL_DELAY_S} s")
    assert set(PHASES) <= set(inc["data"]["phases"]) and total_s < 420
    # A new guest lands on it: web-9 cannot restart on h2, and placement picks the emptiest host, h1.
    lab.refuse_start("h2", "web-9")
    lab.crash_guest("h2", "web-9")
    wait_for(lambda: lab.where_running(web) == ["h1"], 60, "web-9 placed on the reinstalled h1",
             on_timeout=lambda: stack.log_tail() + str(lab.where_running(web)))
    lab.refuse_start("h2", "web-9", False)
    assert sampler.duplicates == []


def test_damaged_host_is_reinstalled_the_same_way_through_redfish(rp):
    lab, stack, sampler = rp
    uuids = [ha(lab, "h3", f"rf-{i}") for i in range(2)]
    stack.wait_watching(uuids)
    since = time.time()
    lab.damage_boot("h3")
    started = time.monotonic()
    wait_for(lambda: all(lab.where_running(u) not in ([], ["h3"]) for u in uuids), 90,
             "both h3 guests running on another host", on_timeout=stack.log_tail)
    moved_s = time.monotonic() - started
    assert wait_closed(stack, "host:h3:damaged", 30)["data"]["cold_restarts"] == {}  # moved live
    inc = wait_closed(stack, "host:h3:reprovision", 120)
    total_s = time.monotonic() - started
    assert inc["state"] == "recovered", inc
    assert host_view(stack, "h3")["condition"] == "up" and lab.domains("h3") == {}
    actions = [f"{via} {a}" for ts, via, a in lab.power_log("h3") if ts >= since]
    assert actions == ["redfish bootdev-pxe", "redfish cycle"], actions  # sushy: Pxe Once, one PowerCycle
    history = " ".join(t["reason"] for t in stack.incident("host:h3:reprovision")["history"])
    assert "(redfish)" in history, history
    print(f"\nhost_reprovision (Redfish): 2 guests moved live {moved_s:.2f} s after the boot files went; "
          f"phases {phase_seconds(inc)}; damage -> back in the pool {total_s:.2f} s (bar: 420 s)")
    assert sampler.duplicates == [], ([(d.at - started, d.uuid, d.hosts) for d in sampler.duplicates], uuids,
                                      stack.incident("host:h3:damaged")["incident"]["data"], inc["data"]["phases"])


def _lose_power_and_wait_fenced(lab, stack, host) -> None:
    lab.power_off(host)
    wait_for(lambda: incident(stack, f"host:{host}").get("state") == "recovered"
             and host_view(stack, host)["condition"] == "fenced", 60, f"{host} fenced and evacuated",
             on_timeout=stack.log_tail)


def test_fenced_host_after_power_loss_is_reprovisioned_on_request_through_the_api(rp):
    lab, stack, sampler = rp
    fx = ha(lab, "h2", "fx-1")
    stack.wait_watching([fx])
    _lose_power_and_wait_fenced(lab, stack, "h2")
    assert lab.where_running(fx) not in ([], ["h2"])
    assert stack.incident("host:h2:reprovision") is None  # fenced: on_request, nothing by itself
    since = time.time()
    answer = stack.post("hosts/h2/reprovision", json={"reason": "PSU replaced"})
    assert answer.status_code == 200, answer.text
    assert stack.post("hosts/h2/reprovision", json={}).status_code == 409  # one at a time
    inc = wait_closed(stack, "host:h2:reprovision", 90)
    assert inc["state"] == "recovered" and inc["data"]["opened_by"] == "operator", inc
    assert host_view(stack, "h2")["condition"] == "up" and lab.domains("h2") == {}
    assert power_actions(lab, "h2", since) == ["on"]  # it was off: powered on, once
    print(f"\nfenced host reprovisioned on request: phases {phase_seconds(inc)}")
    assert sampler.duplicates == []


def recorded_state(stack, subject) -> str:
    """The incident's state as the store has it (the remediator may be dead)."""
    with closing(sqlite3.connect(stack.store_path)) as db:
        return db.execute("SELECT state FROM incidents WHERE subject = ? ORDER BY id DESC LIMIT 1",
                          (subject,)).fetchone()[0]


def test_remediator_killed_mid_power_cycle_resumes_from_the_recorded_phase_and_powers_on_once(rp):
    lab, stack, sampler = rp
    k = ha(lab, "h1", "k-1")
    stack.wait_watching([k])
    _lose_power_and_wait_fenced(lab, stack, "h1")
    lab.delay_bmc_answers("h1", 0.8)  # the BMC acts, then answers: the remediator is killed in between
    since = time.time()
    try:
        cli = subprocess.run([str(BIN / "remediator"), "host", "reprovision", "h1", "--reason", "kill test",
                              "--api", stack.url, "--config", str(stack.config_path)], capture_output=True, text=True)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        wait_for(lambda: power_actions(lab, "h1", since), 30, "the BMC powered h1 on", interval=0.02,
                 on_timeout=stack.log_tail)
        stack.kill_remediator()
    finally:
        lab.delay_bmc_answers("h1", 0)
    killed_in = recorded_state(stack, "host:h1:reprovision")
    stack.start_remediator()
    inc = wait_closed(stack, "host:h1:reprovision", 90)
    assert inc["state"] == "recovered", inc
    reasons = [t["reason"] for t in stack.incident("host:h1:reprovision")["history"]]
    print(f"\nkill -9 mid-reprovision: killed in {killed_in} (the BMC had powered h1 on, its answer not yet in); "
          f"after the restart: {next((r for r in reasons if 'again' in r and 'booted' in r), None)!r}; power actions at the BMC since the request: "
          f"{power_actions(lab, 'h1', since)}; phases {phase_seconds(inc)}")
    assert killed_in == "reprovision_power_cycle"
    assert any("not power-cycled again" in r for r in reasons), reasons  # resumed: checked the world first
    assert power_actions(lab, "h1", since) == ["on"], lab.power_log("h1")  # counted at the BMC: once
    assert host_view(stack, "h1")["condition"] == "up"
    assert sampler.duplicates == []


def test_bmc_that_does_not_answer_the_boot_device_request_fails_the_incident_and_the_host_stays_out(rp):
    lab, stack, sampler = rp
    _lose_power_and_wait_fenced(lab, stack, "h2")
    lab.refuse_bootdev("h2")
    since = time.time()
    try:
        assert stack.post("hosts/h2/reprovision", json={"reason": "bmc test"}).status_code == 200
        wait_for(lambda: incident(stack, "host:h2:reprovision").get("state") == "failed", 60,
                 "the reprovision failed", on_timeout=stack.log_tail)
    finally:
        lab.refuse_bootdev("h2", False)
    inc = incident(stack, "host:h2:reprovision")
    print(f"\nBMC without boot-device answers: {inc['reason']}")
    assert "did not take the boot device" in inc["reason"] and "stays out of service" in inc["reason"], inc
    assert host_view(stack, "h2")["condition"] == "fenced" and not lab.is_on("h2")
    assert power_actions(lab, "h2", since) == []  # never power-cycled without the boot device set
