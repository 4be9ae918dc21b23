"""`make demo`: a data center on this machine heals itself, and you watch it.

    python -m lab.demo            # the scenario, then the stack stays up until Ctrl-C
    python -m lab.demo --once     # the scenario, then tear down; exit 0 only if every protected
                                  # guest ends up running exactly once

Three lab hosts with twelve tiny guests (nine protected, with priorities and an anti-affinity
group `web`), an exporter per host, Prometheus with rules/, Alertmanager routing with
rules/alertmanager.yml, and the remediator (`remediator serve`), all on the shipped defaults.
Then two faults: a guest's qemu is killed, and a host loses power. Each incident's progress
(detected, verified, fenced, placed, running) is printed as it happens, with seconds since the
fault, read from the remediator's own API; then the placement before and after.
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from lab import Lab
from lab.guests import ha_metadata
from lab.sampler import DuplicateSampler
from lab.stack import OPERATOR_TOKEN, Stack
from lab.timeline import MOMENTS, moments, recovery_actions, verification

# (host, guest, priority, anti-affinity group); priority None: not protected.
GUESTS = [
    ("h1", "web-1", 100, "web"), ("h1", "db-1", 90, None), ("h1", "app-1", 50, None), ("h1", "batch-1", None, None),
    ("h2", "web-2", 100, "web"), ("h2", "db-2", 90, None), ("h2", "app-2", 50, None), ("h2", "batch-2", None, None),
    ("h3", "db-3", 90, None), ("h3", "app-3", 50, None), ("h3", "app-4", 10, None), ("h3", "batch-3", None, None),
]
CRASHED = ("h2", "app-2")
POWER_LOSS = "h1"
INCIDENT_TIMEOUT_S = 90.0


def say(text: str = "") -> None:
    print(text, flush=True)


def placement(lab: Lab, names: dict[str, str]) -> dict[str, list[str]]:
    """host -> guests running there now (libvirt's word, through each host's own socket); off hosts: []."""
    table = {}
    for host in lab.hosts:
        running = lab.running(host, inside=True) if lab.is_on(host) else {}
        table[host.name] = sorted(names.get(u, u) for u in running)
    return table


def print_placement(title: str, table: dict[str, list[str]], protected: set[str], lab: Lab) -> None:
    say(f"\n{title}")
    say(f"  {'host':<5} {'power':<6} guests (* protected)")
    for host, guests in table.items():
        power = "on" if lab.is_on(host) else "OFF"
        say(f"  {host:<5} {power:<6} " + (", ".join(g + ("*" if g in protected else "") for g in guests) or "-"))


def follow(stack: Stack, subject: str, fault_at: float, label: str, names: dict[str, str]) -> dict:
    """Print each moment of the subject's incident as it is reached; return the closed incident's detail."""
    say(f"\n{label}: following incident {subject}")
    shown: set[str] = set()
    deadline = time.monotonic() + INCIDENT_TIMEOUT_S
    while time.monotonic() < deadline:
        detail = stack.incident(subject)
        if detail:
            reached = moments(detail)
            for name in MOMENTS:
                if name in reached and name not in shown:
                    shown.add(name)
                    say(f"  +{reached[name] - fault_at:6.2f} s  {name:<9} {describe(name, detail, names)}")
            if detail["incident"].get("closed_at"):
                say(f"  incident {detail['incident']['id']} {detail['incident']['state']}: "
                    f"{detail['incident']['reason']}")
                return detail
        time.sleep(0.2)
    raise TimeoutError(f"{subject}: no closed incident within {INCIDENT_TIMEOUT_S:g} s\n{stack.log_tail()}")


def describe(moment: str, detail: dict, names: dict[str, str]) -> str:
    """One line on a moment; `names` maps UUIDs to guest names."""
    incident, history, actions = detail["incident"], detail["history"], detail["actions"]
    data = incident.get("data") or {}
    if moment == "detected":
        return f"{data.get('alertname', 'alert')} received by the remediator"
    if moment == "acting":
        return f"first action: {actions[0]['action']['kind']}"
    if moment == "verified":
        done = verification(history)
        return f"{done['event']['kind']}: {done['reason']}" if done else ""
    if moment == "fenced":
        return f"{incident['host']} proven off (fence_ipmilan off, then status off)"
    if moment == "placed":
        kind = recovery_actions(actions)[0]["action"]["kind"]
        return {"start_vm": "start_vm: start it again on its own host",
                "evacuate_host": "evacuate_host: start its protected guests on the least-loaded hosts with room"
                }.get(kind, kind)
    if moment == "running":
        where = data.get("placement") or {}
        return ("running: " + ", ".join(f"{names.get(vm, vm)} -> {host}" for vm, host in where.items())
                + f" (load from {data.get('load_source', '?')})") if where else "running again"
    return ""


def run(once: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="remediator-demo-") as workdir:
        say("Bringing up the lab: 3 hypervisor hosts (network namespaces, own libvirtd, IPMI BMC each)...")
        started = time.monotonic()
        with Lab(3) as lab:
            uuids = {}
            for host, name, priority, group in GUESTS:
                meta = ha_metadata(priority=priority, group=group) if priority is not None else None
                uuids[lab.define_guest(host, name, metadata=meta)] = name
            protected = {name for _, name, priority, _ in GUESTS if priority is not None}
            protected_uuids = {u for u, n in uuids.items() if n in protected}
            say(f"  {len(GUESTS)} guests running ({len(protected)} protected) after {time.monotonic() - started:.1f} s")
            say("Starting exporters, Prometheus (rules/), Alertmanager (rules/alertmanager.yml), remediator...")
            with Stack(lab, Path(workdir) / "stack") as stack, DuplicateSampler(lab) as sampler:
                show_endpoints(lab, stack)
                stack.wait_watching(protected_uuids)
                print_placement("Placement before:", placement(lab, uuids), protected, lab)

                host, name = CRASHED
                say(f"\nFault 1: {name}'s qemu killed on {host} (a crashed guest)")
                fault_at = time.time()
                lab.crash_guest(host, name)
                crashed_uuid = next(u for u, n in uuids.items() if n == name)
                follow(stack, f"vm:{crashed_uuid}", fault_at, "guest crash", uuids)

                say(f"\nFault 2: {POWER_LOSS} loses power (every process on it killed; its BMC stays up)")
                fault_at = time.time()
                lab.power_off(POWER_LOSS)
                follow(stack, f"host:{POWER_LOSS}", fault_at, "host power loss", uuids)

                after = placement(lab, uuids)
                print_placement("Placement after:", after, protected, lab)
                ok = verdict(after, protected, sampler)
                if once:
                    return 0 if ok else 1
                say("\nThe stack stays up: explore it with the addresses above. Ctrl-C tears everything down.")
                wait_for_interrupt()
                say("\ntearing down...")
                return 0 if ok else 1


def show_endpoints(lab: Lab, stack: Stack) -> None:
    say(f"  Prometheus    {stack.prometheus.url}")
    say(f"  Alertmanager  http://{stack.alertmanager.address}")
    say(f"  remediator    {stack.url}/api/v1/incidents   (Authorization: Bearer {OPERATOR_TOKEN})")
    for h in lab.hosts:
        say(f"  {h.name}  libvirt {h.uri}  exporter http://{h.address}:9177/metrics  BMC 127.0.0.1:{h.bmc_port}")


def verdict(after: dict[str, list[str]], protected: set[str], sampler: DuplicateSampler) -> bool:
    count = {name: sum(name in guests for guests in after.values()) for name in protected}
    wrong = {name: n for name, n in sorted(count.items()) if n != 1}
    say(f"\nSampled every host {sampler.samples} times (every 200 ms): "
        f"{len(sampler.duplicates)} sightings of a guest running on two hosts.")
    if wrong or sampler.duplicates:
        say("FAIL: " + ", ".join(f"{name} running {n} times" for name, n in wrong.items())
            + (f"; seen twice: {sampler.duplicates[:3]}" if sampler.duplicates else ""))
        return False
    say(f"OK: every protected guest ({len(protected)}) is running exactly once.")
    return True


def wait_for_interrupt() -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="run the scenario, tear down, exit 0 if all is well")
    args = parser.parse_args(argv)
    return run(args.once)


if __name__ == "__main__":
    sys.exit(main())
