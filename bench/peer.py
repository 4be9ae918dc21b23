"""Side by side with Pacemaker: the same guests, faults and never-twice sampler, fault for fault.

Systems (lab.pacemaker_config says what each Pacemaker set is and what the tuned one costs):
    pacemaker_defaults   Pacemaker 2.1 + Corosync 3 (knet) as packaged: token 3000 ms, 10 s monitor
    pacemaker_tuned      token 1000 ms, 1 s VirtualDomain monitor, fence_ipmilan power_wait 0, load-threshold 1000%
    pacemaker_tuned_balanced  (only when named) the same with placement-strategy=balanced and utilization
    remediator           the shipped defaults (rules/, the config's defaults), as bench.recovery runs it

Scenarios as in bench.recovery: vm_crash (one guest's qemu killed), host_power_loss and
host_partition (the host running `--guests` guests). Every run gets a fresh 3-host lab; the runs are
interleaved (run 1 of every scenario and system, then run 2, ...; the systems' order rotates each
round) so that a busy spell of the machine falls on all of them. A run's time is the hosts' word:
fault -> every affected guest running, asked through each host's own libvirt socket every 50 ms.
Pacemaker's share is split from its nodes' logs (token lost, membership, fence requested, fenced,
starts); the remediator's from its incident record (lab.timeline). A 200 ms sampler of every host's
QEMU processes counts a guest seen on two hosts at once (`duplicates_observed`, must be 0).

    python -m bench.peer [--runs 3] [--guests 8] [--systems ...] [--scenarios ...]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.recovery import (ORIGIN, inject, percentile, run_host_fault, run_vm_crash,
                            shipped_timings, wait_landed)
from lab import Lab, pacemaker_logs
from lab.pacemaker import Cluster, node_name
from lab.pacemaker_config import DEFAULTS, TUNED, TUNED_BALANCED, Timings
from lab.sampler import DuplicateSampler

REPO = Path(__file__).resolve().parents[1]
PEERS = {"pacemaker_defaults": DEFAULTS, "pacemaker_tuned": TUNED}
SYSTEMS = (*PEERS, "remediator")
EXTRA_PEERS = {"pacemaker_tuned_balanced": TUNED_BALANCED}  # run only when named in --systems
# The faults both systems answer (bench.recovery's host_damaged and host_reprovision have no Pacemaker
# counterpart: nothing in it acts on a damaged host, so each run would only wait out the timeout).
SCENARIOS = ("vm_crash", "host_power_loss", "host_partition")
LOGS_TIMEOUT_S = 30.0  # a node writes "Result of start operation" once the agent returns


@dataclass
class PeerRun:
    system: str
    scenario: str
    total_s: float                                           # fault -> every affected guest running
    duplicates: int
    landed: dict[str, str]                                   # guest -> host it runs on afterwards
    moments_s: dict[str, float] = field(default_factory=dict)  # named steps, seconds since the fault
    throttle: dict[str, str] = field(default_factory=dict)   # Pacemaker: each node's throttle mode at its starts


def pacemaker_run(timings: Timings, scenario: str, guests: int) -> PeerRun:
    names = ["crash-0"] if scenario == "vm_crash" else [f"app-{g}" for g in range(guests)]
    with Lab(3) as lab:
        uuids = {str(uuidlib.uuid4()): n for n in names}
        cluster = Cluster(lab, timings, guests={n: lab.guest_xml(n, uuid=u) for u, n in uuids.items()},
                          prefer=ORIGIN).start()
        survivors = {h.name for h in lab.hosts if h.name != ORIGIN}
        with DuplicateSampler(lab) as sampler:
            time.sleep(1.0)  # a quiet second, as bench.recovery gives the remediator
            fault_at = inject(lab, scenario, names[0])
            landed = wait_landed(lab, uuids, {h.name for h in lab.hosts} if scenario == "vm_crash" else survivors, 120)
            # the sampler keeps watching while the nodes finish logging the starts
            logs = [p for h in lab.hosts if scenario == "vm_crash" or h.name != ORIGIN
                    for p in cluster.log_dirs(h).values()]
            cluster.wait(lambda: set(names) <= pacemaker_logs.starts(logs, fault_at).keys(), LOGS_TIMEOUT_S,
                         "every start logged by a node")
        if scenario != "vm_crash" and lab.is_on(ORIGIN):
            raise AssertionError(f"{timings.name} {scenario}: {ORIGIN} is on after its guests started elsewhere")
        steps = pacemaker_logs.CRASH_STEPS if scenario == "vm_crash" else pacemaker_logs.HOST_STEPS
        found = pacemaker_logs.moments(logs, fault_at, steps, node=node_name(lab.host(ORIGIN)), guest=names[0])
        found["started"] = max(pacemaker_logs.starts(logs, fault_at).values())
        throttle = pacemaker_logs.throttle_modes(logs, found.get("start_initiated", found["started"]))
    found["running"] = max(t for t, _ in landed.values())
    return PeerRun(timings.name, scenario, total_s=found["running"] - fault_at, duplicates=len(sampler.duplicates),
                   landed={n: h for n, (_, h) in sorted(landed.items())},
                   moments_s={k: round(t - fault_at, 3) for k, t in sorted(found.items(), key=lambda kv: kv[1])},
                   throttle=throttle)


def remediator_run(scenario: str, guests: int, workdir: Path) -> PeerRun:
    quiet = lambda _msg: None  # noqa: E731 - bench.recovery's per-run lines; bench.peer prints its own
    if scenario == "vm_crash":
        run = run_vm_crash(1, workdir, quiet)[0]
    else:
        run = run_host_fault(scenario, 1, guests, workdir, quiet)[0]
    return PeerRun("remediator", scenario, total_s=run.total_s, duplicates=run.duplicates, landed=run.landed,
                   moments_s={k: round(v, 3) for k, v in run.moments_s.items()} | {"running": round(run.total_s, 3)})


def spread(landed: dict[str, str]) -> dict[str, int]:
    return dict(sorted(Counter(landed.values()).items()))


def summarize(runs: list[PeerRun], failed: list[str] = ()) -> dict:
    """p50/p95/max over the runs that recovered; a run that did not (every guest running within the
    timeout) is listed in `failed` with its reason and counted, never silently dropped."""
    if not runs:
        return {"runs": 0, "failed_runs": list(failed), "p50_s": None, "p95_s": None, "max_s": None,
                "duplicates_observed": 0}
    totals = [r.total_s for r in runs]
    steps = [k for k in runs[0].moments_s if all(k in r.moments_s for r in runs)]
    return {
        "runs": len(runs), "failed_runs": list(failed), "guests": len(runs[0].landed),
        "p50_s": round(statistics.median(totals), 3), "p95_s": round(percentile(totals, 0.95), 3),
        "max_s": round(max(totals), 3), "duplicates_observed": sum(r.duplicates for r in runs),
        "landed": {"per_run": [spread(r.landed) for r in runs],
                   "total": dict(sorted(sum((Counter(r.landed.values()) for r in runs), Counter()).items()))},
        "breakdown_p50_s": {k: round(statistics.median(r.moments_s[k] for r in runs), 3) for k in steps},
        "throttle_modes_seen": dict(sorted(Counter(m for r in runs for m in r.throttle.values()).items())),
        "each": [{k: v for k, v in asdict(r).items() if k not in ("system", "scenario")} for r in runs],
    }


def versions() -> dict:
    out = {}
    for pkg in ("pacemaker", "corosync", "resource-agents", "fence-agents"):
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        out[pkg] = proc.stdout.strip() or "not installed"
    return out


def table(systems: dict, scenarios: list[str]) -> str:
    head = f"{'scenario':<16}{'system':<26}{'runs':>5}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'dups':>6}  landed (per run)"
    lines = [head, "-" * (len(head) + 20)]
    for scenario in scenarios:
        for system, by_scenario in systems.items():
            s = by_scenario.get(scenario)
            if s and s["runs"]:
                landed = " ".join("/".join(f"{h}:{c}" for h, c in run.items()) for run in s["landed"]["per_run"])
                lines.append(f"{scenario:<16}{system:<26}{s['runs']:>5}{s['p50_s']:>8.2f}{s['p95_s']:>8.2f}"
                             f"{s['max_s']:>8.2f}{s['duplicates_observed']:>6}  {landed}")
            if s and s.get("failed_runs"):
                lines.append(f"{'':<16}{system:<26}failed: " + "; ".join(s["failed_runs"]))
    lines.append("\nwhere the time goes (p50 seconds after the fault):")
    for scenario in scenarios:
        for system, by_scenario in systems.items():
            s = by_scenario.get(scenario)
            if s and s["runs"]:
                steps = ", ".join(f"{k} {v:.2f}" for k, v in s["breakdown_p50_s"].items())
                lines.append(f"  {scenario:<16}{system:<26}{steps}")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The README / docs table of a peer.json: p50 (p95) per scenario and system, duplicates."""
    systems = list(result["systems"])
    scenarios = list(next(iter(result["systems"].values())))
    lines = ["| fault | " + " | ".join(f"`{s}`" for s in systems) + " |", "|---|" + "---|" * len(systems)]
    for scenario in scenarios:
        cells = []
        for system in systems:
            s = result["systems"][system][scenario]
            failed = f", {len(s['failed_runs'])} failed" if s.get("failed_runs") else ""
            cells.append(f"{s['p50_s']:.1f} s (p95 {s['p95_s']:.1f}, {s['duplicates_observed']} dup{failed})"
                         if s["runs"] else f"no run recovered ({len(s['failed_runs'])} failed)")
        guests = next((by[scenario]["guests"] for by in result["systems"].values() if by[scenario]["runs"]), 0)
        lines.append(f"| {scenario} ({guests} guest{'s' if guests > 1 else ''}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario and system (default 3)")
    parser.add_argument("--guests", type=int, default=8, help="guests on the failing host (default 8)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "peer.json")
    parser.add_argument("--markdown", type=Path, metavar="PEER_JSON", help="print the table of a result file, run nothing")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    systems = [s for s in args.systems.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(systems) - set(SYSTEMS) - set(EXTRA_PEERS)) + sorted(set(scenarios) - set(SCENARIOS))
    if unknown or args.runs < 1 or args.guests < 1:
        parser.error(f"unknown systems or scenarios {unknown}" if unknown else "--runs and --guests must be at least 1")

    runs: dict[tuple[str, str], list[PeerRun]] = {}
    failed: dict[tuple[str, str], list[str]] = {}
    started, load_before = time.monotonic(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        for i in range(args.runs):
            order = systems[i % len(systems):] + systems[:i % len(systems)]
            for scenario in scenarios:
                for system in order:
                    try:
                        if system == "remediator":
                            run = remediator_run(scenario, args.guests, Path(tmp) / f"{scenario}-{i}")
                        else:
                            run = pacemaker_run((PEERS | EXTRA_PEERS)[system], scenario, args.guests)
                    except (TimeoutError, AssertionError, RuntimeError) as e:
                        # One system's failed run (its lab is torn down by the with-block) is a result:
                        # recorded with its reason; the other systems' runs go on.
                        failed.setdefault((system, scenario), []).append(f"run {i + 1}: {e}")
                        print(f"run {i + 1}/{args.runs} {scenario:<16}{system:<26}FAILED: {e}", flush=True)
                        continue
                    runs.setdefault((system, scenario), []).append(run)
                    print(f"run {i + 1}/{args.runs} {scenario:<16}{system:<26}{run.total_s:6.2f} s  dups {run.duplicates}"
                          f"  landed {spread(run.landed)}  "
                          + ", ".join(f"{k} {v:.2f}" for k, v in run.moments_s.items())
                          + (f"  throttle {run.throttle}" if run.throttle else ""), flush=True)
    result_systems = {system: {scenario: summarize(runs.get((system, scenario), []), failed.get((system, scenario), []))
                               for scenario in scenarios}
                      for system in systems}
    timings = {name: t.describe() for name, t in (PEERS | EXTRA_PEERS).items() if name in systems}
    if "remediator" in systems:
        timings["remediator"] = shipped_timings()
    result = {
        "cores": os.cpu_count(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - started, 1), "runs": args.runs, "guests": args.guests,
        # the machine's load (1, 5, 15 min) when the bench began and ended: other work shares the cores
        "load_average": {"start": [round(x, 2) for x in load_before], "end": [round(x, 2) for x in os.getloadavg()]},
        "order": "interleaved: each run, every scenario, every system in turn (order rotated per run); a fresh 3-host lab each",
        "versions": versions(), "timings": timings, "systems": result_systems,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + table(result_systems, scenarios))
    print(f"\n{args.runs} runs each, {result['wall_s']:.0f} s; written to {args.output}")
    return 0 if all(s["duplicates_observed"] == 0 and not s["failed_runs"]
                    for by in result_systems.values() for s in by.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
