"""Issue 9 on the real stack: a host's whole life - damaged, drained, dead, fenced, returned,
in maintenance, in a storm, in a dry run - with real exporters, Prometheus with rules/,
Alertmanager, `remediator serve`, live migrations between lab hosts, and the never-twice sampler.
"""
from __future__ import annotations

import time

import libvirt
import pytest

from lab.stack import wait_for

pytestmark = pytest.mark.lab


def ha(lab, host, name, priority=0, group=None, start=True):
    return lab.define_guest(host, name, start=start, metadata=lab.ha_metadata(protected=True, priority=priority,
                                                                               group=group))


def arrived_by_live_migration(lab, host, uuid) -> bool:
    """libvirt's own word: running, reason "migrated" (a booted guest says "booted")."""
    conn = libvirt.open(lab.host(host).unix_uri)
    try:
        return tuple(conn.lookupByUUIDString(uuid).state()) == (libvirt.VIR_DOMAIN_RUNNING,
                                                                 libvirt.VIR_DOMAIN_RUNNING_MIGRATED)
    finally:
        conn.close()


def host_view(stack, name) -> dict:
    return next(h for h in stack.api("hosts")["hosts"] if h["name"] == name)


def incident_of(stack, subject) -> dict:
    found = stack.incident(subject)
    assert found is not None, f"no incident for {subject}: {stack.incidents()}"
    return found


def test_damaged_host_guests_live_migrate_then_activate_returns_it_to_placement(stack_factory):
    vms = [{"name": f"db-{i}", "priority": 10 * i} for i in range(4)] + [{"name": "web-9", "priority": 5}]
    lab, stack, sampler = stack_factory(vms=vms)
    uuids = {f"db-{i}": ha(lab, "h1", f"db-{i}", priority=10 * i) for i in range(4)}
    lab.define_guest("h3", "busy-3")  # h3 carries one more guest than h2
    web = ha(lab, "h2", "web-9", priority=5)
    stack.wait_watching(list(uuids.values()) + [web])
    started = time.monotonic()
    lab.damage_boot("h1")
    wait_for(lambda: all(lab.where_running(u) and lab.where_running(u) != ["h1"] for u in uuids.values()), 90,
             "every h1 guest running on another host", on_timeout=lambda: stack.log_tail() + str(stack.incidents()))
    moved_after = time.monotonic() - started
    where = {n: lab.where_running(u) for n, u in uuids.items()}
    live = {n: arrived_by_live_migration(lab, where[n][0], u) for n, u in uuids.items()}
    inc = incident_of(stack, "host:h1:damaged")
    wait_for(lambda: not incident_of(stack, "host:h1:damaged")["incident"]["closed_at"] is None, 30,
             "damaged incident closed")
    inc = incident_of(stack, "host:h1:damaged")
    downtime = inc["incident"]["data"].get("migration_downtime_ms", {})
    print(f"\nhost_damaged: 4 guests moved {moved_after:.2f} s after the boot files were removed: {where}; "
          f"arrived by live migration: {live}; migration downtime ms: {downtime}")
    assert inc["incident"]["state"] == "recovered" and inc["incident"]["data"]["cold_restarts"] == {}, inc["incident"]
    assert all(live.values()), live  # the same QEMU state moved, not a cold boot
    assert all(len(h) == 1 and h[0] != "h1" for h in where.values())
    assert host_view(stack, "h1")["condition"] == "cordoned" and not host_view(stack, "h1")["schedulable"]
    # Not while its checks fail; once repaired, activated: schedulable again, and placement uses it.
    refused = stack.post("hosts/h1/activate", json={"reason": "too early"})
    assert refused.status_code == 409 and "boot" in refused.json()["error"], refused.text
    lab.repair_boot("h1")
    wait_for(lambda: stack.prometheus.query('hypervisor_host_check{host="h1",check="boot"} == 1'), 30,
             "boot check ok again")
    answer = stack.post("hosts/h1/activate", json={"reason": "boot files restored"})
    assert answer.status_code == 200, answer.text
    assert host_view(stack, "h1")["condition"] == "up"
    lab.refuse_start("h2", "web-9")  # web-9 cannot restart in place: placement picks the empty h1
    lab.crash_guest("h2", "web-9")
    wait_for(lambda: lab.where_running(web) == ["h1"], 60, "web-9 placed on the activated h1",
             on_timeout=lambda: stack.log_tail() + str(lab.where_running(web)))
    assert sampler.duplicates == []


def test_damaged_host_whose_drain_failed_then_loses_power_is_fenced_and_evacuated_once(stack_factory):
    vms = [{"name": f"app-{i}", "priority": i} for i in range(2)]
    lab, stack, sampler = stack_factory(vms=vms)
    uuids = [ha(lab, "h1", v["name"], priority=v["priority"]) for v in vms]
    stack.wait_watching(uuids)
    for other in ("h2", "h3"):  # no host can take them: the drain fails
        assert stack.post(f"hosts/{other}/maintenance", json={"on": True}).status_code == 200
    lab.damage_boot("h1")
    wait_for(lambda: (incident_of(stack, "host:h1:damaged") or {}).get("incident", {}).get("state") == "failed"
             if stack.incident("host:h1:damaged") else False, 90, "the drain failed",
             on_timeout=lambda: str(stack.incidents()))
    for other in ("h2", "h3"):
        assert stack.post(f"hosts/{other}/maintenance", json={"on": False}).status_code == 200
    assert lab.where_running(uuids[0]) == ["h1"]
    started = time.monotonic()
    lab.power_off("h1")
    wait_for(lambda: all(lab.where_running(u) for u in uuids), 60, "h1's guests running elsewhere",
             on_timeout=lambda: stack.log_tail() + str(stack.incidents()))
    print(f"\ndamaged, then dead: guests running elsewhere {time.monotonic() - started:.2f} s after the power loss")
    down = incident_of(stack, "host:h1")
    kinds = [a["action"]["kind"] for a in down["actions"]]
    assert kinds.index("fence_host") < kinds.index("evacuate_host"), kinds
    assert host_view(stack, "h1")["condition"] == "fenced"
    wait_for(lambda: incident_of(stack, "host:h1:damaged")["incident"]["closed_at"] is not None, 20,
             "the damaged incident ends once its host is fenced")
    assert all(len(lab.where_running(u)) == 1 for u in uuids)
    assert sampler.duplicates == []


def test_fenced_host_activated_then_cut_off_is_fenced_again_before_its_new_guest_moves(stack_factory):
    vms = [{"name": "old-1", "priority": 10}, {"name": "new-1", "priority": 20}]
    lab, stack, sampler = stack_factory(vms=vms)
    old = ha(lab, "h1", "old-1", priority=10)
    stack.wait_watching([old])
    lab.power_off("h1")
    wait_for(lambda: lab.where_running(old), 60, "old-1 running elsewhere", on_timeout=stack.log_tail)
    wait_for(lambda: host_view(stack, "h1")["condition"] == "fenced", 10, "h1 fenced")
    lab.power_on("h1")
    assert lab.domain_state("h1", "old-1")[0] == "shutoff"  # back from the power loss, still defined
    refused = stack.post("hosts/h3/activate")
    assert refused.status_code == 200 and "up already" in refused.json()["reason"]
    wait_for(lambda: stack.prometheus.query('up{host="h1"} == 1'), 30, "h1's exporter scraped again")
    answer = stack.post("hosts/h1/activate", json={"reason": "PSU replaced"})
    assert answer.status_code == 200, answer.text
    assert "old-1" not in {name for name in lab.domains("h1")}, "the old copy must be undefined on h1"
    assert lab.where_running(old) != ["h1"]
    new = ha(lab, "h1", "new-1", priority=20)
    stack.wait_watching([new])
    lab.partition("h1")
    wait_for(lambda: lab.where_running(new) not in ([], ["h1"]), 60, "new-1 running elsewhere",
             on_timeout=lambda: stack.log_tail() + str(stack.incidents()))
    down = [i for i in stack.incidents() if i["subject"] == "host:h1"]
    latest = stack.api(f"incidents/{max(i['id'] for i in down)}")
    kinds = [a["action"]["kind"] for a in latest["actions"]]
    assert "fence_host" in kinds and kinds.index("fence_host") < kinds.index("evacuate_host"), kinds
    assert sampler.duplicates == []


def test_maintenance_live_migrates_every_guest_and_restarts_none(stack_factory):
    vms = [{"name": f"svc-{i}", "priority": i} for i in range(4)]
    lab, stack, sampler = stack_factory(vms=vms)
    uuids = {v["name"]: ha(lab, "h2", v["name"], priority=v["priority"]) for v in vms}
    stack.wait_watching(uuids.values())
    started = time.monotonic()
    answer = stack.post("hosts/h2/maintenance", json={"on": True, "reason": "BIOS update"})
    assert answer.status_code == 200, answer.text
    wait_for(lambda: (stack.incident("host:h2:maintenance") or {"incident": {}})["incident"].get("state")
             == "recovered", 90, "drained", on_timeout=lambda: str(stack.incidents()))
    where = {n: lab.where_running(u) for n, u in uuids.items()}
    inc = incident_of(stack, "host:h2:maintenance")["incident"]
    print(f"\nmaintenance: 4 guests live-migrated in {time.monotonic() - started:.2f} s: {where}; "
          f"downtime ms {inc['data'].get('migration_downtime_ms')}")
    assert all(len(h) == 1 and h[0] != "h2" for h in where.values()), where
    assert all(arrived_by_live_migration(lab, where[n][0], u) for n, u in uuids.items())
    assert inc["data"]["cold_restarts"] == {}
    actions = [i for i in stack.incidents() if i["subject"].startswith("vm:")]
    assert actions == []  # no guest was restarted by anyone
    assert host_view(stack, "h2")["condition"] == "maintenance"
    assert stack.post("hosts/h2/maintenance", json={"on": False}).status_code == 200
    assert host_view(stack, "h2")["schedulable"]
    assert sampler.duplicates == []


def test_storm_that_heals_lifts_by_itself_and_a_later_single_failure_is_not_held(stack_factory):
    vms = [{"name": "a-1"}, {"name": "b-1"}, {"name": "c-1"}]
    lab, stack, sampler = stack_factory(vms=vms)
    a, b, c = ha(lab, "h1", "a-1"), ha(lab, "h2", "b-1"), ha(lab, "h3", "c-1")
    stack.wait_watching([a, b, c])
    lab.partition("h1")
    lab.partition("h2")
    wait_for(lambda: stack.api("storm")["hold"]["active"], 30, "storm hold on", on_timeout=stack.log_tail)
    held_at = time.monotonic()
    time.sleep(5)
    assert lab.where_running(a) == ["h1"] and lab.where_running(b) == ["h2"]  # nothing fenced or moved
    lab.heal("h1")
    lab.heal("h2")
    wait_for(lambda: not stack.api("storm")["hold"]["active"], 60, "the hold lifts by itself",
             on_timeout=lambda: stack.log_tail() + str(stack.api("storm")))
    print(f"\nstorm: hold lifted {time.monotonic() - held_at:.2f} s after it began (healed after 5 s)")
    wait_for(lambda: all(h["condition"] == "up" for h in stack.api("hosts")["hosts"]), 30, "no host stays down",
             on_timeout=lambda: str(stack.api("hosts")))
    wait_for(lambda: not [i for i in stack.incidents() if i["closed_at"] is None], 60, "every incident closed",
             on_timeout=lambda: str(stack.incidents()))
    assert lab.where_running(a) == ["h1"] and lab.where_running(b) == ["h2"]
    lab.power_off("h3")
    wait_for(lambda: lab.where_running(c) in (["h1"], ["h2"]), 60, "c-1 restarted elsewhere, no hold",
             on_timeout=lambda: stack.log_tail() + str(stack.api("storm")))
    assert sampler.duplicates == []


def test_dry_run_host_power_loss_says_what_it_would_do_and_changes_nothing(stack_factory):
    vms = [{"name": f"dry-{i}", "priority": i} for i in range(3)]
    lab, stack, sampler = stack_factory(vms=vms, settings={"dry_run": True})
    uuids = [ha(lab, "h1", v["name"], priority=v["priority"]) for v in vms]
    stack.wait_watching(uuids)
    lab.power_off("h1")
    wait_for(lambda: (stack.incident("host:h1") or {"incident": {}})["incident"].get("closed_at"), 60,
             "the dry-run incident ends", on_timeout=lambda: stack.log_tail() + str(stack.incidents()))
    inc = incident_of(stack, "host:h1")["incident"]
    print(f"\ndry run: {inc['state']}: {inc['reason']}")
    assert inc["state"] == "recovered" and inc["reason"].startswith("dry run: nothing was fenced or started")
    assert "3 would start" in inc["reason"]
    fence = [a for a in incident_of(stack, "host:h1")["actions"] if a["action"]["kind"] == "fence_host"]
    assert fence and all(a["detail"].startswith("dry run: would fence") for a in fence), fence
    assert all(lab.where_running(u) == [] for u in uuids)  # nothing started anywhere
    assert host_view(stack, "h1")["condition"] == "up"  # its condition is unchanged
    assert sampler.duplicates == []


def test_damaged_host_guest_whose_migration_is_refused_is_destroyed_there_then_started_once_elsewhere(stack_factory):
    vms = [{"name": f"mv-{i}", "priority": 10 * i} for i in range(4)]
    lab, stack, sampler = stack_factory(vms=vms)
    uuids = {v["name"]: ha(lab, "h1", v["name"], priority=v["priority"]) for v in vms}
    stack.wait_watching(uuids.values())
    lab.refuse_migration_everywhere("mv-2")  # every destination's libvirt hook refuses its live migration
    lab.damage_boot("h1")
    wait_for(lambda: (stack.incident("host:h1:damaged") or {"incident": {}})["incident"].get("closed_at"), 90,
             "the drain ends", on_timeout=lambda: stack.log_tail() + str(stack.incidents()))
    inc = incident_of(stack, "host:h1:damaged")["incident"]
    where = {n: lab.where_running(u) for n, u in uuids.items()}
    print(f"\nrefused migration: {where}; cold restarts {inc['data']['cold_restarts']}; "
          f"downtime ms {inc['data']['migration_downtime_ms']}; sampler {sampler.samples} samples")
    assert inc["state"] == "recovered", inc
    assert set(inc["data"]["cold_restarts"]) == {"mv-2"} and "destroyed on h1" in inc["data"]["cold_restarts"]["mv-2"]
    assert set(inc["data"]["migration_downtime_ms"]) == {"mv-0", "mv-1", "mv-3"}
    assert all(len(h) == 1 and h[0] != "h1" for h in where.values()), where
    assert not arrived_by_live_migration(lab, where["mv-2"][0], uuids["mv-2"])  # booted there, not moved
    assert "mv-2" not in lab.domains("h1")  # the damaged host's copy is undefined
    assert sampler.duplicates == []


def overload_rules(tmp_path, for_="3s"):
    """rules/hypervisor.rules.yml with a short `for:` on HypervisorHostOverloaded (2m shipped): the test's
    own timing, the thresholds unchanged (the remediator reads them from the alert)."""
    import yaml

    from lab.stack import RULES
    rules = yaml.safe_load((RULES / "hypervisor.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "HypervisorHostOverloaded":
                rule["for"] = for_
    path = tmp_path / "hypervisor.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def test_overloaded_host_sheds_its_lowest_priority_guests_by_live_migration_cpu_then_memory(stack_factory, tmp_path):
    vms = [{"name": f"ov-{i}", "priority": 10 * (i + 1)} for i in range(4)] + [
        {"name": f"big-{i}", "priority": 10 * (i + 1)} for i in range(3)]
    lab, stack, sampler = stack_factory(vms=vms, rules=overload_rules(tmp_path))
    for h in ("h1", "h2", "h3"):  # every lab host reports the one machine's load: fix the figures
        lab.set_host_load(h, 0.2)
    cpu = {f"ov-{i}": ha(lab, "h1", f"ov-{i}", priority=10 * (i + 1)) for i in range(4)}
    stack.wait_watching(cpu.values())
    cpus = int(stack.prometheus.query('hypervisor_host_cpus{host="h1"}')[0]["value"][1])
    # CPU: load 1.5 per CPU plus two guests' worth: the two lowest-priority guests (one vCPU each) must go.
    lab.set_host_load("h1", 1.5 * cpus + 2)
    wait_for(lambda: (stack.incident("host:h1:overloaded") or {"incident": {}})["incident"].get("closed_at"), 60,
             "CPU overload handled", on_timeout=lambda: stack.log_tail() + str(stack.incidents()))
    inc = incident_of(stack, "host:h1:overloaded")["incident"]
    print(f"\noverload (load): {inc['state']}: {inc['reason']}")
    assert inc["state"] == "recovered" and inc["data"]["overload"] == {"resource": "load", "threshold": 1.5}
    assert set(inc["data"]["moves"]) == {"ov-0", "ov-1"} and not inc["data"]["cold_restarts"], inc["data"]
    assert all(lab.where_running(cpu[n]) == ["h1"] for n in ("ov-2", "ov-3"))
    assert all(arrived_by_live_migration(lab, lab.where_running(cpu[n])[0], cpu[n]) for n in ("ov-0", "ov-1"))
    lab.set_host_load("h1", 0.2)
    # Memory: guests sized 3 % of the host's memory each; 95 % in use, over the rule's 90 %: two must go.
    total = int(stack.prometheus.query('hypervisor_host_memory_bytes{host="h1"}')[0]["value"][1])
    size_mib = int(total * 0.03) >> 20
    big = {f"big-{i}": lab.define_guest("h1", f"big-{i}", memory_mib=size_mib, metadata=lab.ha_metadata(
        protected=True, priority=10 * (i + 1))) for i in range(3)}
    stack.wait_watching(big.values())
    wait_for(lambda: (stack.incident("host:h1:overloaded") or {"incident": {}})["incident"]["closed_at"], 30,
             "the CPU incident closed")
    lab.set_host_memory_available("h1", int(total * 0.05))
    wait_for(lambda: len([i for i in stack.incidents() if i["subject"] == "host:h1:overloaded"]) == 2
             and all(i["closed_at"] for i in stack.incidents() if i["subject"] == "host:h1:overloaded"), 60,
             "memory overload handled", on_timeout=lambda: stack.log_tail() + str(stack.incidents()))
    inc = incident_of(stack, "host:h1:overloaded")["incident"]
    print(f"overload (memory): {inc['state']}: {inc['reason']}")
    assert inc["state"] == "recovered" and inc["data"]["overload"] == {"resource": "memory", "threshold": 0.9}
    moved = set(inc["data"]["moves"])
    assert {"big-0", "big-1"} <= moved and "big-2" not in moved, inc["data"]
    assert lab.where_running(big["big-2"]) == ["h1"]
    assert sampler.duplicates == []
