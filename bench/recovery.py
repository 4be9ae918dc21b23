"""Recovery on the real stack: seconds from a fault until every affected guest runs again.

Scenarios, each run `--runs` times with the shipped default timings (rules/prometheus.yml,
rules/hypervisor.rules.yml, rules/alertmanager.yml, the remediator's config defaults):

    vm_crash         one protected guest's qemu killed; it must run again (on its host).
    host_power_loss  a host with `--guests` protected guests loses power (every process killed).
    host_partition   the same host's link goes down instead: libvirtd and the guests keep running,
                     so it must be fenced before any guest starts elsewhere.
    host_damaged     the same host's boot files are removed: it still answers, so it is cordoned and
                     its guests live-migrate away (each migration's downtime is recorded).
    host_reprovision the same, then the host is reinstalled over PXE by its policy and activated:
                     damage -> back in the pool (bench/reprovision.py).

"Runs" is the hosts' word, not the remediator's: libvirt on the host lists the guest as running,
asked every 50 ms through the host's own socket. Each run's time is split at the moments the
remediator recorded (lab.timeline): detection (fault -> alert received by the remediator),
decision (-> first action recorded), action (-> every guest running); for the host scenarios also
verify, fence and start. A 200 ms sampler of every host runs through each run and counts any UUID
seen on two hosts at once (`duplicates_observed`, must be 0).

The peer bar is the design this product descends from (3RC): a crashed machine recovered in under
3 minutes, a critically damaged host in under 7; each scenario's `ratio_to_3rc` is p50 / that bar.

vm_crash uses one lab and stack for all its runs, a different guest each run (so no run waits on
Alertmanager's group of the previous one); each host scenario run gets a fresh lab and stack, since
the fenced host stays out until an operator brings it back.

    python -m bench.recovery [--runs 5] [--guests 8] [--scenarios vm_crash,host_power_loss,host_partition]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from lab import HostUnreachable, Lab, virt
from lab.guests import ha_metadata
from lab.sampler import DuplicateSampler
from lab.stack import RULES, Stack, wait_for
from lab.timeline import moments
from bench.reprovision import run_host_reprovision
from remediator.config import Policy

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("vm_crash", "host_power_loss", "host_partition", "host_damaged", "host_reprovision")
# The same with the fast path off (policy.fast_path: false): detection by the alert path only.
ALERT_ONLY = "_alert_only"


def base_of(scenario: str) -> str:
    return scenario.removesuffix(ALERT_ONLY)


def policy_of(scenario: str) -> dict | None:
    return {"fast_path": False} if scenario.endswith(ALERT_ONLY) else None
BAR_3RC_S = {"vm_crash": 180.0, "host_power_loss": 420.0, "host_partition": 420.0, "host_damaged": 420.0}
TARGET_P50_S = {"vm_crash": 5.0, "host_power_loss": 15.0, "host_partition": 20.0, "host_damaged": 30.0}
SUBJECT = {"host_power_loss": "host:h1", "host_partition": "host:h1", "host_damaged": "host:h1:damaged"}
TARGET_REMEDIATOR_S = 1.0  # alert received -> all guests running, host scenarios
WATCH_INTERVAL_S = 0.05
ORIGIN = "h1"


@dataclass
class Run:
    scenario: str
    total_s: float  # fault -> every affected guest running again
    detection_s: float  # fault -> alert received by the remediator
    decision_s: float  # alert received -> first action recorded
    action_s: float  # first action -> every guest running
    remediator_s: float  # alert received -> every guest running (the remediator's own share)
    steps_s: dict[str, float] = field(default_factory=dict)  # verify, fence, start (host scenarios)
    guests_s: dict[str, float] = field(default_factory=dict)  # guest name -> fault -> running
    moments_s: dict[str, float] = field(default_factory=dict)  # lab.timeline moments, seconds since the fault
    migration_downtime_ms: dict[str, float] = field(default_factory=dict)  # guest -> libvirt's downtime (live moves)
    duplicates: int = 0
    started_at: float = 0.0  # epoch of the fault
    landed: dict[str, str] = field(default_factory=dict)  # guest name -> host it runs on afterwards


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def shipped_timings() -> dict:
    """The defaults this bench runs with, read from the files it runs (so the record cannot drift)."""
    prom = yaml.safe_load((RULES / "prometheus.yml").read_text())["global"]
    groups = yaml.safe_load((RULES / "hypervisor.rules.yml").read_text())["groups"]
    rules = {r["alert"]: r.get("for", "0s") for g in groups for r in g["rules"] if "alert" in r}
    routes = yaml.safe_load((RULES / "alertmanager.yml").read_text())["route"]["routes"]
    route = next(r for r in routes if r["receiver"] == "remediator")
    return {"scrape_interval": prom["scrape_interval"], "evaluation_interval": prom["evaluation_interval"],
            "alert_rules_interval": groups[0].get("interval", prom["evaluation_interval"]),
            "for": rules, "group_wait": route["group_wait"], "group_interval": route["group_interval"], "remediator_policy": "config defaults"}


def wait_landed(lab: Lab, names: dict[str, str], hosts: set[str], timeout: float) -> dict[str, tuple[float, str]]:
    """Epoch time and host where each guest (uuid -> name) was first seen running on one of `hosts`;
    waits for all.

    Running is libvirt's word (state running: started and resumed), asked through each host's own
    socket, which answers while the host is cut off; a QEMU process alone may still be starting."""
    seen: dict[str, tuple[float, str]] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(names):
        if time.monotonic() > deadline:
            missing = sorted(names[u] for u in names if u not in seen)
            raise TimeoutError(f"not running within {timeout} s: {', '.join(missing)}")
        for host in sorted(hosts):
            try:
                running = lab.running(host, inside=True)
            except HostUnreachable:
                continue  # powered off
            now = time.time()
            for uuid in running.keys() & names.keys():
                seen.setdefault(uuid, (now, host))
        time.sleep(WATCH_INTERVAL_S)
    return {names[u]: at for u, at in seen.items()}


def inject(lab: Lab, scenario: str, guest: str | None = None) -> float:
    """The scenario's fault on ORIGIN (for vm_crash: `guest`'s qemu killed, returning once libvirt
    sees it down); returns its epoch time."""
    fault_at = time.time()
    if scenario == "vm_crash":
        uuid = next(u for u, n in lab.running(ORIGIN, inside=True).items() if n == guest)
        lab.crash_guest(ORIGIN, guest)
        wait_for(lambda: uuid not in lab.running(ORIGIN, inside=True), 5, f"{guest} seen down by libvirt")
    elif scenario == "host_power_loss":
        lab.power_off(ORIGIN)
    elif scenario == "host_partition":
        lab.partition(ORIGIN)
    elif scenario == "host_damaged":
        lab.damage_boot(ORIGIN)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    return fault_at


def closed_incident(stack: Stack, subject: str, timeout: float = 30.0) -> dict:
    """The incident of `subject` once it is closed, with its history and actions."""
    def closed():
        detail = stack.incident(subject)
        return detail if detail and detail["incident"].get("closed_at") else None
    wait_for(closed, timeout, f"incident of {subject} closed", on_timeout=stack.log_tail)
    return closed()


def split(scenario: str, fault_at: float, landed: dict[str, tuple[float, str]], detail: dict,
          duplicates: int) -> Run:
    m = moments(detail)
    running = {n: t for n, (t, _) in landed.items()}
    done = max(running.values())
    steps = {}
    if "fenced" in m:
        steps = {"verify_s": m["verified"] - m["acting"], "fence_s": m["fenced"] - m["verified"],
                 "start_s": done - m["fenced"]}
    return Run(scenario, total_s=done - fault_at, detection_s=m["detected"] - fault_at,
               decision_s=m["acting"] - m["detected"], action_s=done - m["acting"],
               remediator_s=done - m["detected"], steps_s=steps,
               guests_s={n: t - fault_at for n, t in sorted(running.items())},
               moments_s={k: t - fault_at for k, t in m.items()}, duplicates=duplicates,
               started_at=fault_at, landed={n: h for n, (_, h) in sorted(landed.items())},
               migration_downtime_ms=dict(detail["incident"]["data"].get("migration_downtime_ms") or {}))


def run_vm_crash(runs: int, workdir: Path, log, scenario: str = "vm_crash") -> list[Run]:
    results = []
    with Lab(3) as lab:
        names = [f"crash-{i}" for i in range(runs)]
        uuids = {lab.define_guest(ORIGIN, n, metadata=ha_metadata(priority=100)): n for n in names}
        with Stack(lab, workdir / scenario, policy=policy_of(scenario)) as stack, DuplicateSampler(lab) as sampler:
            stack.wait_watching(uuids)
            for i, (uuid, name) in enumerate(uuids.items()):
                before = len(sampler.duplicates)
                fault_at = inject(lab, "vm_crash", name)
                running = wait_landed(lab, {uuid: name}, {h.name for h in lab.hosts}, 60)
                detail = closed_incident(stack, f"vm:{uuid}")
                run = split(scenario, fault_at, running, detail, len(sampler.duplicates) - before)
                log(f"{scenario} run {i + 1}/{runs}: {run.total_s:.2f} s (detection {run.detection_s:.2f}, "
                    f"decision {run.decision_s:.3f}, action {run.action_s:.2f})")
                results.append(run)
                time.sleep(1.0)
    return results


def run_host_fault(scenario: str, runs: int, guests: int, workdir: Path, log) -> list[Run]:
    results = []
    for i in range(runs):
        with Lab(3) as lab:
            names = [f"app-{g}" for g in range(guests)]
            uuids = {lab.define_guest(ORIGIN, n, metadata=ha_metadata(priority=10 * g)): n
                     for g, n in enumerate(names)}
            with Stack(lab, workdir / f"{scenario}-{i}", policy=policy_of(scenario)) as stack, \
                    DuplicateSampler(lab) as sampler:
                stack.wait_watching(uuids)
                time.sleep(1.0)  # a quiet second: every rule evaluated on a healthy lab
                fault_at = inject(lab, base_of(scenario))
                others = {h.name for h in lab.hosts if h.name != ORIGIN}
                running = wait_landed(lab, uuids, others, 120)
                detail = closed_incident(stack, SUBJECT[base_of(scenario)])
                run = split(scenario, fault_at, running, detail, len(sampler.duplicates))
                if base_of(scenario) != "host_damaged" and lab.is_on(ORIGIN):
                    raise AssertionError(f"{scenario}: {ORIGIN} is still on after its guests started elsewhere")
                if base_of(scenario) == "host_damaged" and (len(run.migration_downtime_ms) != guests
                                                   or detail["incident"]["data"].get("cold_restarts")):
                    raise AssertionError(f"host_damaged: not every guest moved live: {detail['incident']['data']}")
        log(f"{scenario} run {i + 1}/{runs}: {run.total_s:.2f} s (detection {run.detection_s:.2f}, "
            f"decision {run.decision_s:.3f}, action {run.action_s:.2f}: "
            + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in run.steps_s.items()) + ")")
        results.append(run)
    return results


def remove_all_domains(conn) -> None:
    # In a function of its own: a domain object outliving its connection's close() would close the
    # connection later, from the garbage collector, by a call to a daemon the lab has torn down
    # (it blocks forever: these connections have no keepalive).
    for dom in conn.listAllDomains():
        dom.destroy()
        dom.undefine()


def run_start_floor(runs: int, guests: int, log) -> dict:
    """The evacuation's floor: the same guests defined and started straight through libvirt on the two
    surviving hosts, as many at a time as the remediator's default `max_concurrent_actions`, with no
    remediator, Prometheus or exporter. What the start step costs on this machine, whoever starts."""
    workers = Policy().max_concurrent_actions
    times = []
    with Lab(3) as lab:
        targets = [h.name for h in lab.hosts if h.name != ORIGIN]
        conns = {h: virt.connect(lab.host(h).uri) for h in targets}
        try:
            for i in range(runs):
                xmls = [(targets[g % len(targets)], lab.guest_xml(f"floor{i}-{g}")) for g in range(guests)]
                started = time.monotonic()
                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(lambda hx: conns[hx[0]].defineXML(hx[1]).create(), xmls))
                times.append(time.monotonic() - started)
                for conn in conns.values():
                    remove_all_domains(conn)
                time.sleep(0.5)
        finally:
            for conn in conns.values():
                conn.close()
    log(f"start floor: {guests} guests, {workers} at a time, straight through libvirt: "
        f"p50 {statistics.median(times):.2f} s")
    return {"guests": guests, "workers": workers, "runs": runs, "p50_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3)}


def summarize(scenario: str, runs: list[Run]) -> dict:
    def stats(key: str) -> dict:
        values = [getattr(r, key) for r in runs]
        return {"p50": round(statistics.median(values), 3), "p95": round(percentile(values, 0.95), 3),
                "max": round(max(values), 3)}
    total = stats("total_s")
    summary = {
        "scenario": scenario, "runs": len(runs),
        "guests": len(runs[0].guests_s) if runs else 0,
        "p50_s": total["p50"], "p95_s": total["p95"], "max_s": total["max"],
        "detection_s": stats("detection_s"), "decision_s": stats("decision_s"), "action_s": stats("action_s"),
        "remediator_s": stats("remediator_s"),
        "duplicates_observed": sum(r.duplicates for r in runs),
        "target_p50_s": TARGET_P50_S[base_of(scenario)], "target_met": total["p50"] <= TARGET_P50_S[base_of(scenario)],
        "bar_3rc_s": BAR_3RC_S[base_of(scenario)], "ratio_to_3rc": round(total["p50"] / BAR_3RC_S[base_of(scenario)], 4),
    }
    if runs and runs[0].steps_s:
        summary["steps_s"] = {k: round(statistics.median(r.steps_s[k] for r in runs), 3) for k in runs[0].steps_s}
    downtimes = [d for r in runs for d in r.migration_downtime_ms.values()]
    if downtimes:
        summary["migration_downtime_ms"] = {"p50": round(statistics.median(downtimes), 1),
                                            "max": round(max(downtimes), 1), "migrations": len(downtimes)}
    if base_of(scenario) in ("host_power_loss", "host_partition"):
        summary["target_remediator_s"] = TARGET_REMEDIATOR_S
        summary["remediator_target_met"] = summary["remediator_s"]["p50"] <= TARGET_REMEDIATOR_S
    summary["each"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(r).items()
                        if k not in ("scenario", "guests_s", "started_at", "landed")} for r in runs]
    return summary


def plot_timeline(run: Run, path: Path) -> None:
    """One host power loss: a bar per guest from the fault to running, split at the remediator's moments."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = run.moments_s
    phases = [("detection: fault -> alert received", 0.0, m["detected"], "#bbbbbb"),
              ("verify: libvirt unreachable too", m["acting"], m["verified"], "#f0a202"),
              ("fence: BMC off, status off", m["verified"], m["fenced"], "#d1495b")]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(run.guests_s) + 2.2))
    for row, (guest, done) in enumerate(run.guests_s.items()):
        for label, a, b, color in phases + [("start elsewhere: define + start", m["fenced"], done, "#2e86ab")]:
            ax.barh(row, b - a, left=a, color=color, height=0.6, label=label if row == 0 else None)
        ax.text(done + 0.05, row, f"{done:.2f} s", va="center", fontsize=8)
    ax.set_yticks(range(len(run.guests_s)), list(run.guests_s))
    ax.set_xlabel("seconds since the host lost power")
    ax.set_xlim(0, max(run.guests_s.values()) * 1.12)
    ax.set_title(f"Host power loss: {len(run.guests_s)} protected guests running on other hosts in "
                 f"{run.total_s:.2f} s (remediator's share {run.remediator_s:.2f} s)", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summaries: list[dict]) -> str:
    head = (f"{'scenario':<16}{'runs':>5}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'detect':>8}{'decide':>8}"
            f"{'act':>8}{'remed.':>8}{'dups':>6}{'target':>8}{'x 3RC':>8}")
    lines = [head, "-" * len(head)]
    for s in summaries:
        if "detection_s" not in s:  # host_reprovision: its own figures
            lines.append(f"{s['scenario']:<16}{s['runs']:>5}{s['p50_s']:>8.2f}{'':>8}{s['max_s']:>8.2f}  guests moved "
                         f"{s['guests_moved_p50_s']:.2f} s, install {s['install_delay_s']:g} s, phases "
                         f"{s['phases_p50_s']}, dups {s['duplicates_observed']}, x 3RC {s['ratio_to_3rc']:.3f}")
            continue
        lines.append(f"{s['scenario']:<16}{s['runs']:>5}{s['p50_s']:>8.2f}{s['p95_s']:>8.2f}{s['max_s']:>8.2f}"
                     f"{s['detection_s']['p50']:>8.2f}{s['decision_s']['p50']:>8.3f}{s['action_s']['p50']:>8.2f}"
                     f"{s['remediator_s']['p50']:>8.2f}{s['duplicates_observed']:>6}"
                     f"{('<=' if s['target_met'] else '> ') + format(s['target_p50_s'], 'g'):>8}"
                     f"{s['ratio_to_3rc']:>8.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each scenario (default 5)")
    parser.add_argument("--guests", type=int, default=8, help="protected guests on the failing host (default 8)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--merge", action="store_true",
                        help="keep the other scenarios already in recovery.json (run some, update those)")
    parser.add_argument("--output-dir", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted({s for s in scenarios if base_of(s) not in SCENARIOS})
    if unknown or args.runs < 1 or args.guests < 1:
        parser.error(f"unknown scenarios {unknown}" if unknown else "--runs and --guests must be at least 1")

    def log(msg: str) -> None:
        print(msg, flush=True)

    summaries, plotted, floor = [], None, None
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        if any(s in ("host_power_loss", "host_partition") for s in scenarios):
            floor = run_start_floor(args.runs, args.guests, log)
        for scenario in scenarios:
            if scenario == "host_reprovision":
                summaries.append(run_host_reprovision(args.runs, args.guests, Path(tmp), wait_landed, log))
                continue
            if base_of(scenario) == "vm_crash":
                runs = run_vm_crash(args.runs, Path(tmp), log, scenario)
            else:
                runs = run_host_fault(scenario, args.runs, args.guests, Path(tmp), log)
            summaries.append(summarize(scenario, runs))
            if scenario == "host_power_loss":
                plotted = runs[len(runs) // 2]
    result = {"cores": os.cpu_count(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "timings": shipped_timings(), "start_floor": floor, "scenarios": {s["scenario"]: s for s in summaries}}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "recovery.json"
    if args.merge and out.exists():
        previous = json.loads(out.read_text())
        result["scenarios"] = {**previous.get("scenarios", {}), **result["scenarios"]}
        result["start_floor"] = floor or previous.get("start_floor")
        result["date"] = previous.get("date", result["date"])  # of the others; a merged scenario has its own
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + table(summaries))
    if floor:
        print(f"\nstart floor ({floor['guests']} guests straight through libvirt, {floor['workers']} at a time, "
              f"no remediator): p50 {floor['p50_s']:.2f} s")
    print(f"\nwritten to {out}")
    if plotted is not None:
        png = args.output_dir / "recovery-host-power-loss.png"
        plot_timeline(plotted, png)
        print(f"timeline of one host power loss run: {png}")
    return 0 if all(s["duplicates_observed"] == 0 for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
