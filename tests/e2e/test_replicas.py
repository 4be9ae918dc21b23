"""Issue 12's replicas on the lab: three `remediator serve` processes on one PostgreSQL, Alertmanager
posting to every one of them, one leader under an epoch-fenced lease.

One lab, one PostgreSQL and one stack for the module (4 hosts: h1's 8 guests are evacuated in the
first test, h2's one in the second, so two hosts out of four are down by the third: storm share 0.5).
Each test asserts the sampler saw no guest on two hosts; the store's records are read directly.
"""
from __future__ import annotations

import signal
import threading
import time
import uuid as uuidlib
from datetime import datetime, timezone

import pytest
import requests

from lab.lab import Lab
from lab.postgres import PostgresServer
from lab.sampler import DuplicateSampler
from lab.stack import ALERTMANAGER_TOKEN, Stack, wait_for
from remediator.store import open_store

pytestmark = pytest.mark.lab

APPS = [f"app-{i}" for i in range(8)]  # on h1
DBS = ["db-0"]  # on h2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("replicas")
    with PostgresServer() as pg:  # fsync on: the restart test counts on what was committed
        with Lab(4) as lab:
            vms = [{"name": n, "priority": i} for i, n in enumerate(APPS + DBS)]
            stack = Stack(lab, workdir, vms=vms, store_url=pg.create_database("remediator"), replicas=3,
                          policy={"max_concurrent_actions": 1, "storm": {"max_unhealthy_share": 0.5}})
            with DuplicateSampler(lab) as sampler, stack:
                uuids = {n: lab.define_guest("h1" if n in APPS else "h2", n, start=True,
                                             metadata=lab.ha_metadata(protected=True, priority=i))
                         for i, n in enumerate(APPS + DBS)}
                stack.wait_watching(uuids.values(), timeout=60)
                yield lab, stack, sampler, pg, uuids


def store_of(stack: Stack):
    return open_store(stack.store_url)


def qemu_starts(lab: Lab, name: str) -> dict[str, int]:
    """How many times libvirt started the guest's QEMU on each host (its per-domain log says so)."""
    counts = {}
    for host in lab.hosts:
        log = host.log_dir / "qemu" / f"{name}.log"
        if log.exists():
            counts[host.name] = log.read_text(errors="replace").count("starting up")
    return counts


def no_action_repeated(store) -> list[str]:
    """Two intents that both succeeded with the same incident, kind and parameters: a repeated action."""
    seen, repeated = set(), []
    for incident in store.list_incidents(limit=1000):
        for intent in store.intents(incident.id):
            if intent.ok and intent.action.kind not in ("schedule_retry",):
                key = (incident.id, intent.action.kind, repr(sorted(intent.action.params.items())))
                if key in seen:
                    repeated.append(f"incident {incident.id}: {intent.action.kind} {intent.action.params}")
                seen.add(key)
    return repeated


def wait_leader(stack: Stack, among=None, timeout: float = 30.0) -> int:
    found: list[int] = []
    wait_for(lambda: found.append(i) or True if (i := stack.leader(among)) is not None else False, timeout,
             "a replica leads", interval=0.02, on_timeout=stack.log_tail)
    return found[-1]


def test_leader_killed_mid_evacuation_a_standby_completes_it_without_repeating(cluster):
    lab, stack, sampler, _pg, uuids = cluster
    apps = [uuids[n] for n in APPS]
    leader = wait_leader(stack)
    epoch = stack.cluster(leader)["epoch"]
    lab.power_off("h1")
    wait_for(lambda: any(lab.where_running(u) for u in apps), 60, "evacuation under way", interval=0.02,
             on_timeout=stack.log_tail)
    killed_at, killed_wall = time.monotonic(), datetime.now(timezone.utc)
    stack.kill_remediator(leader)
    done_before = [u for u in apps if lab.where_running(u)]
    assert len(done_before) < 8, "the kill came too late to interrupt the evacuation"
    standbys = [i for i in range(3) if i != leader]
    new = wait_leader(stack, standbys)
    took_s = time.monotonic() - killed_at
    wait_for(lambda: all(lab.where_running(u) for u in apps), 60, "evacuation completed by a standby",
             on_timeout=lambda: stack.log_tail() + "\n" + str(stack.incidents()))
    last_running_s = time.monotonic() - killed_at
    seen_by_new = stack.cluster(new)
    new_epoch = seen_by_new["epoch"]
    # acting: the new leader's engine has resumed (each unfinished intent checked against the world, and
    # dispatched again where the world says it is still to do) and runs
    failover_s = (datetime.fromisoformat(seen_by_new["acting_since"]) - killed_wall).total_seconds()
    with store_of(stack) as store:
        resumed = [i for inc in store.list_incidents(limit=100) for i in store.intents(inc.id)
                   if i.epoch < new_epoch and i.result_epoch == new_epoch]
        assert resumed, "the new leader finished none of the old leader's intents"
        assert no_action_repeated(store) == []
        fences = [i for inc in store.list_incidents(limit=100) if inc.subject == "host:h1"
                  for i in store.intents(inc.id) if i.action.kind == "fence_host"]
        assert len(fences) == 1 and fences[0].epoch < new_epoch, fences  # the killed leader's
    lease_s = stack.cluster(new)["lease_s"]
    print(f"\nreplicas: leader r{leader} (epoch {epoch}) killed with {len(done_before)} of 8 guests moved; "
          f"r{new} took the lease (epoch {new_epoch}) after {took_s:.2f} s, its first action "
          f"{failover_s:.2f} s after the kill (lease_s {lease_s:g}); last guest running {last_running_s:.2f} s "
          f"after the kill")
    assert new_epoch > epoch
    assert failover_s <= lease_s + 2, f"failover {failover_s:.2f} s over lease_s + 2 s"
    assert all(sum(qemu_starts(lab, n).values()) == 2 for n in APPS), {n: qemu_starts(lab, n) for n in APPS}
    assert all(len(lab.where_running(u)) == 1 for u in apps)
    assert sampler.duplicates == []
    stack.start_remediator(replica=leader)  # back, as a standby
    assert not stack.cluster(leader)["leading"]


def test_leader_frozen_past_its_lease_is_refused_steps_down_and_reaches_no_host(cluster):
    lab, stack, sampler, _pg, uuids = cluster
    dbs = [uuids[n] for n in DBS]
    leader = wait_leader(stack)
    frozen = stack.replicas[leader]
    off_wall = datetime.now(timezone.utc)
    lab.power_off("h2")
    # Frozen in the middle of the evacuation's last call: libvirt on another host has begun to start the
    # guest (its QEMU log appears as the create begins, ~0.35 s before the call returns). The call was
    # sent before the lease was lost, so it may complete; the result the leader then tries to write is not.
    logs = [h.log_dir / "qemu" / f"{n}.log" for n in DBS for h in lab.hosts if h.name != "h2"]
    wait_for(lambda: any(p.exists() for p in logs), 60, "the guest's start begun elsewhere", interval=0.002,
             on_timeout=stack.log_tail)
    frozen.proc.send_signal(signal.SIGSTOP)
    frozen_at, frozen_wall = time.monotonic(), datetime.now(timezone.utc)
    try:
        new = wait_leader(stack, [i for i in range(3) if i != leader])
        with store_of(stack) as store:
            def evacuation_finished() -> bool:
                return all(i.finished for inc in store.list_incidents(limit=100) for i in store.intents(inc.id)
                           if i.action.kind == "evacuate_host" and i.at > off_wall) and \
                    all(lab.where_running(u) for u in dbs)
            wait_for(evacuation_finished, 60, "evacuation finished by the new leader", on_timeout=stack.log_tail)
        time.sleep(1.0)
    finally:
        log_before = frozen.log_path.read_text(errors="replace")
        frozen.proc.send_signal(signal.SIGCONT)
    cont_at, cont_wall = time.monotonic(), datetime.now(timezone.utc)
    starts_at_cont = {n: qemu_starts(lab, n) for n in DBS}
    def stepped_down() -> bool:
        try:
            return not stack.cluster(leader)["leading"]
        except requests.RequestException:  # a keep-alive connection the thawed server has since closed
            return False
    wait_for(stepped_down, 10, "the thawed leader steps down", interval=0.02, on_timeout=frozen.log_tail)
    stepped_s = time.monotonic() - cont_at
    time.sleep(2.0)  # whatever the thawed replica still had in hand has had its chance to run
    after = frozen.log_path.read_text(errors="replace")[len(log_before):]
    refusals = [line for line in after.splitlines() if "refused" in line or "not called" in line]
    print(f"\nreplicas: r{leader} frozen {cont_at - frozen_at:.1f} s (lease {stack.cluster(new)['lease_s']:g} s) "
          f"in the middle of h2's evacuation; r{new} finished it; after SIGCONT r{leader} stepped down in "
          f"{stepped_s:.2f} s; its log after SIGCONT:\n  " + "\n  ".join(after.splitlines()[:12]))
    assert cont_wall > frozen_wall
    with store_of(stack) as store:  # the epoch it led at when frozen: its evacuation intent's
        epoch = next(i.epoch for inc in store.list_incidents(limit=100) for i in store.intents(inc.id)
                     if i.action.kind == "evacuate_host" and i.at > off_wall)
    assert f"steps down from epoch {epoch}" in after
    # every write it tried after thawing was refused (the evacuation's result): by the database's epoch
    # check, or already by the replica itself once it saw its deadline had passed
    refused_writes = [line for line in after.splitlines()
                      if f"wrote under epoch {epoch}" in line or "engine write refused" in line]
    assert {n: qemu_starts(lab, n) for n in DBS} == starts_at_cont, "a start reached libvirt after SIGCONT"
    assert all(sum(qemu_starts(lab, n).values()) == 2 for n in DBS), {n: qemu_starts(lab, n) for n in DBS}
    with store_of(stack) as store:
        assert no_action_repeated(store) == []
        intents = [i for inc in store.list_incidents(limit=100) for i in store.intents(inc.id)]
        # the old epoch wrote nothing once frozen: no intent, no result (its refused writes left no row)
        late = [i for i in intents if (i.epoch == epoch and i.at > frozen_wall)
                or (i.result_epoch == epoch and i.finished_at > frozen_wall)]
        assert late == [], late
        # (or, unlikely, its result was committed in the few ms before the freeze landed)
        finished_before = [i for i in intents if i.action.kind == "evacuate_host" and i.at > off_wall
                           and i.result_epoch == epoch]
        assert refused_writes or finished_before, "the frozen leader attempted no write: nothing was shown"
        taken_over = [i for i in intents if i.epoch == epoch and i.result_epoch not in (None, epoch)]
    print(f"  intents of epoch {epoch} the new leader finished: {[(i.action.kind, i.result_epoch) for i in taken_over]}; "
          f"writes refused: {len(refused_writes)}")
    assert all(len(lab.where_running(u)) == 1 for u in dbs)
    assert sampler.duplicates == [], refusals


def post_load(stack: Stack, stop: threading.Event, accepted: list[str], refused: list[int]) -> None:
    """Webhook posts, round robin over the replicas, each a new alert (a VM outside the inventory: stored,
    marked ignored); the fingerprints of those answered 200 go to `accepted`."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {ALERTMANAGER_TOKEN}"
    n = 0
    while not stop.is_set() and n < 5000:
        replica = stack.replicas[n % len(stack.replicas)]
        n += 1
        fingerprint = uuidlib.uuid4().hex[:16]
        alert = {"status": "firing", "fingerprint": fingerprint, "startsAt": "2026-12-01T10:00:00Z",
                 "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "annotations": {},
                 "labels": {"alertname": "HypervisorVMDown", "remediation": "vm_down", "severity": "critical",
                            "host": "h3", "vm": f"load-{n}", "uuid": str(uuidlib.uuid4())}}
        try:
            r = session.post(f"{replica.url}/api/v1/alerts", timeout=15, json={
                "version": "4", "status": "firing", "receiver": "remediator", "alerts": [alert]})
        except requests.RequestException:
            refused.append(0)
            continue
        (accepted.append(fingerprint) if r.status_code == 200 else refused.append(r.status_code))
        time.sleep(0.01)


def test_postgresql_restarted_under_webhook_load_loses_nothing_accepted_and_the_leader_resumes(cluster):
    lab, stack, sampler, pg, uuids = cluster
    accepted: list[str] = []
    refused: list[int] = []
    stop = threading.Event()
    posters = [threading.Thread(target=post_load, args=(stack, stop, accepted, refused)) for _ in range(2)]
    for t in posters:
        t.start()
    try:
        time.sleep(2.0)
        before = len(accepted)
        away_s = pg.restart("immediate")  # a crash for the data: WAL recovery on start
        time.sleep(3.0)
    finally:
        stop.set()
        for t in posters:
            t.join(30)
    leader = wait_leader(stack, timeout=30)
    with store_of(stack) as store:
        stored = {a.alert.fingerprint for a in store.recent_alerts(limit=100000)}
    lost = [f for f in accepted if f not in stored]
    print(f"\nreplicas: PostgreSQL restarted (down {away_s:.2f} s) under {len(accepted)} accepted webhook posts "
          f"({before} before it), {len(refused)} refused (503 or no answer: Alertmanager retries those); "
          f"lost {len(lost)}; r{leader} leads at epoch {stack.cluster(leader)['epoch']}")
    assert accepted and lost == []
    # the leader acts again: a guest that crashes now is restarted
    name = APPS[0]
    host = lab.where_running(uuids[name])[0]
    lab.crash_guest(host, name)
    wait_for(lambda: lab.where_running(uuids[name]) == [host], 60, f"{name} running again after the restart",
             on_timeout=stack.log_tail)
    assert sampler.duplicates == []
