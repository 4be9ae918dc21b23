"""Network abuse, long (issue 9 point 9): the whole stack through a bad link on one host, recorded.

Every round builds a fresh lab (3 hosts) and Stack (exporters, Prometheus with rules/, Alertmanager,
`remediator serve`) with two protected guests on h1 and one on each other host, then abuses h1's link
(lab.abuse):

    round 1        5 % loss for --seconds, 20 % loss for --seconds, --flaps partitions of 3 s
                   (healed for 3 s each), then 50 % loss for --seconds
    rounds 2..N    50 % loss for --seconds (N = --repeats; a 50 % round may fence h1, so each
                   repeat starts on a fresh lab)

Each phase is followed by 8 s of watching (an alert's `for:` plus delivery). Recorded per phase and in
total: incidents opened, the actions that acted (anything beyond verifying; overload incidents apart,
as they follow the shared machine's load average, not a link), the loss the link had
(nft counters), whether the remediator and every exporter stayed alive, kernel-log segfaults of their
pids, duplicates seen by the 200 ms sampler. Exits 1 if anything crashed, a guest ran twice, or 5 % or
20 % acted. Defaults take ~20 min on 2 cores.

    python -m bench.network_abuse [--seconds 60] [--repeats 10] [--flaps 10] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lab import Lab
from lab.abuse import VMS, Abuse, Phase, define_guests
from lab.sampler import DuplicateSampler
from lab.stack import Stack

REPO = Path(__file__).resolve().parents[1]
CALM_LEVELS = (5, 20)  # no action allowed
HARD_LEVEL = 50


@contextmanager
def abused_stack(workdir: Path) -> Iterator[Abuse]:
    with Lab(3) as lab:
        sampler = DuplicateSampler(lab).start()
        stack = Stack(lab, workdir, vms=VMS)
        try:
            stack.start()
            define_guests(lab, stack)
            yield Abuse(lab, stack, sampler, "h1")
        finally:
            stack.stop()
            sampler.stop()


def run(seconds: float, repeats: int, flaps: int, workdir: Path, log) -> list[dict]:
    phases: list[dict] = []

    def record(round_no: int, phase: Phase) -> None:
        phases.append({"round": round_no, **phase.to_dict(), "crashed": phase.crashed})
        log(f"round {round_no} {phase.fault} {phase.level}: {phase.seconds} s, link {phase.link}, "
            f"incidents {len(phase.incidents)}, acting {phase.acting}, crashed {phase.crashed}")

    for round_no in range(1, repeats + 1):
        with abused_stack(workdir / f"round{round_no}") as abuse:
            if round_no == 1:
                for level in CALM_LEVELS:
                    record(round_no, abuse.loss(level, seconds))
                record(round_no, abuse.flaps(flaps, partition_s=3.0, heal_s=3.0))
            record(round_no, abuse.loss(HARD_LEVEL, seconds))
    return phases


def summary(phases: list[dict]) -> dict:
    def of(fault: str, level: int | None = None) -> list[dict]:
        return [p for p in phases if p["fault"] == fault and (level is None or p["level"] == level)]

    def totals(group: list[dict]) -> dict:
        acting = Counter(entry.split()[-1] for p in group for entry in p["acting"])
        on_load = Counter(entry.split()[-1] for p in group for entry in p["acting_on_load"])
        return {"runs": len(group), "seconds_each": [p["seconds"] for p in group],
                "incidents_opened": sum(len(p["incidents"]) for p in group),
                "runs_that_acted": sum(bool(p["acting"]) for p in group), "actions": dict(acting),
                "overload_actions_not_from_the_link": dict(on_load),
                "link_dropped_share": [round(p["link"]["dropped"] / p["link"]["seen"], 3)
                                       for p in group if p["link"].get("seen")],
                "crashes": sum(bool(p["crashed"]) for p in group),
                "duplicates": sum(p["duplicates"] for p in group)}

    levels = {str(level): totals(of("loss", level)) for level in (*CALM_LEVELS, HARD_LEVEL)}
    # A live migration shows one guest's QEMU on two hosts for a moment (the destination's, paused,
    # receiving): the sampler's duplicates in a phase that rebalanced an overloaded host are counted apart.
    on_load = [p for p in phases if p["acting_on_load"]]
    return {"loss_levels": levels, "partition_flaps": totals(of("flaps")),
            "crashes": sum(bool(p["crashed"]) for p in phases),
            "segfaults": [s for p in phases for s in p["segfaults"]],
            "duplicates": sum(p["duplicates"] for p in phases if p not in on_load),
            "duplicates_in_phases_with_overload_migrations": sum(p["duplicates"] for p in on_load)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.network_abuse", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each loss phase")
    parser.add_argument("--repeats", type=int, default=10, help="rounds, each with a 50 %% loss phase")
    parser.add_argument("--flaps", type=int, default=10, help="partitions of h1 in round 1")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "network-abuse.json")
    args = parser.parse_args(argv)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="network-abuse-") as tmp:
        phases = run(args.seconds, args.repeats, args.flaps, Path(tmp),
                     lambda line: print(f"[{time.monotonic() - started:7.1f} s] {line}", flush=True))
    result = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count()},
        "schedule": {"loss_seconds": args.seconds, "repeats_at_50": args.repeats, "flaps": args.flaps,
                     "flap_partition_s": 3.0, "flap_heal_s": 3.0, "abused_host": "h1",
                     "guests": {"h1": 2, "h2": 1, "h3": 1}},
        "wall_seconds": round(time.monotonic() - started, 1),
        **summary(phases),
        "phases": phases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    calm_acted = any(result["loss_levels"][str(level)]["runs_that_acted"] for level in CALM_LEVELS)
    print(json.dumps({k: v for k, v in result.items() if k != "phases"}, indent=2))
    print(f"written to {args.out}")
    return 1 if result["crashes"] or result["duplicates"] or calm_acted else 0


if __name__ == "__main__":
    sys.exit(main())
