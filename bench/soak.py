"""`make soak`: the whole stack on a 3-host lab with 12 protected guests, for 30 minutes, while the
faults of bench/soak_schedule.py are injected (CPU stress, delay and loss, restarts of Prometheus,
Alertmanager, an exporter and a libvirtd, every alert delivered twice). None of them stops a host or
a guest, so every fence, restart, migration and incident is a false positive: the target is 0.

Counted two ways, each with its cause (the injections in effect at that moment):
- the remediator's own record: every incident it opened, and every fence, start or migration it
  attempted (GET /api/v1/incidents/<id>);
- the ground truth, every second: each guest's QEMU (host and pid; a new pid is a restart, another
  host a move), each host's power, and the lab's DuplicateSampler (a UUID on two hosts at once).

The lab host DELAYED is reached through the lab's delay proxy (libvirtd and exporter; lab/delay_proxy.py);
every host's load figure is pinned (lab hosts share this machine's kernel, and other work on it
would otherwise look like an overload of every host); the machine's real load average is recorded.

    python -m bench.soak [--duration 1800] [--output bench/results/soak.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.soak_inject import Injectors, WebhookCapture, capture_alertmanager
from bench.soak_schedule import DELAYED, Step, active_at, build
from lab import Lab
from lab.guests import ha_metadata
from lab.sampler import DuplicateSampler
from lab.stack import EXPORTER_PORT, Stack

REPO = Path(__file__).resolve().parents[1]
GUESTS_PER_HOST = 4
PINNED_LOAD1 = 0.2  # per host, well under the overload rule's 1.5 per CPU
LIBVIRTD_PORT = 16509
FENCES = {"fence_host"}
RESTARTS = {"start_vm", "start_vm_elsewhere", "rebuild_vm", "evacuate_host"}
MIGRATIONS = {"migrate_away", "rebalance_host"}


class GroundTruth:
    """Each protected guest's QEMU (host, pid) and each host's power, compared with the last sample."""

    def __init__(self, lab: Lab, sampler: DuplicateSampler, uuids: dict[str, str]):
        self.lab, self.sampler, self.names = lab, sampler, uuids
        self.last = self._where()
        self.changes: list[dict] = []
        missing = set(uuids) - set(self.last)
        if missing:
            raise RuntimeError(f"guests not running at the start: {sorted(uuids[u] for u in missing)}")

    def _where(self) -> dict[str, tuple[str, int]]:
        return {uuid: (host, pid) for host, running in self.sampler.snapshot().items()
                for uuid, pid in running.items() if uuid in self.names}

    def sample(self, t: float) -> None:
        now = self._where()
        for uuid in self.names:
            before, after = self.last.get(uuid), now.get(uuid)
            if before == after:
                continue
            kind = ("down" if after is None else "started" if before is None
                    else "moved" if before[0] != after[0] else "restarted")
            self.changes.append({"t_s": round(t, 1), "guest": self.names[uuid], "kind": kind,
                                 "from": before and before[0], "to": after and after[0]})
        self.last = now
        for h in self.lab.hosts:
            if not self.lab.is_on(h) and not any(c.get("host") == h.name for c in self.changes):
                self.changes.append({"t_s": round(t, 1), "host": h.name, "kind": "powered off"})


def remediator_record(stack: Stack, t0_epoch: float, schedule: list[Step]) -> dict:
    """Every incident the remediator opened and every action it took, each with its likely cause."""
    incidents, actions = [], []
    for summary in stack.incidents():
        detail = stack.api(f"incidents/{summary['id']}")
        inc = detail["incident"]
        t = datetime.datetime.fromisoformat(inc["opened_at"]).timestamp() - t0_epoch
        cause = active_at(schedule, t)
        incidents.append({"id": inc["id"], "subject": inc["subject"], "kind": inc["kind"], "state": inc["state"],
                          "opened_by": (inc.get("data") or {}).get("opened_by"), "t_s": round(t, 1),
                          "reason": inc["reason"], "cause": cause})
        for a in detail["actions"]:
            kind = a["action"]["kind"]
            if kind in FENCES | RESTARTS | MIGRATIONS:
                actions.append({"incident": inc["id"], "kind": kind, "ok": a.get("ok"), "detail": a.get("detail"),
                                "cause": cause})
    return {"incidents": incidents, "actions": actions}


def count(actions: list[dict], kinds: set[str], truth: list[dict], truth_kinds: set[str]) -> int:
    """The larger of what the remediator says it did and what the world shows happened."""
    return max(sum(1 for a in actions if a["kind"] in kinds), sum(1 for c in truth if c["kind"] in truth_kinds))


def run(duration_s: float, workdir: Path, log) -> dict:
    schedule = build(duration_s)
    done: list[dict] = []
    loads: list[tuple[float, float]] = []
    with Lab(3) as lab:
        lab.add_delay_proxy(DELAYED, (LIBVIRTD_PORT, EXPORTER_PORT))
        for h in lab.hosts:
            lab.set_host_load(h, PINNED_LOAD1)
        uuids = {lab.define_guest(h, f"{h.name}-g{g}", metadata=ha_metadata(priority=10 * g)): f"{h.name}-g{g}"
                 for h in lab.hosts for g in range(GUESTS_PER_HOST)}
        capture = WebhookCapture()
        with Stack(lab, workdir) as stack, DuplicateSampler(lab) as sampler:
            capture_alertmanager(stack, capture)
            stack.wait_watching(uuids, timeout=60)
            truth = GroundTruth(lab, sampler, uuids)
            inject = Injectors(lab, stack, capture)
            log(f"soak: {len(uuids)} protected guests on {len(lab.hosts)} hosts, {duration_s:.0f} s, "
                f"{len(schedule)} steps; load average {os.getloadavg()[0]:.1f}")
            t0, t0_epoch = time.monotonic(), time.time()

            def wait_until(t: float) -> None:
                while (left := t0 + t - time.monotonic()) > 0:
                    time.sleep(min(1.0, left))
                    now = time.monotonic() - t0
                    truth.sample(now)
                    if not loads or now - loads[-1][0] >= 10:
                        loads.append((round(now, 1), os.getloadavg()[0]))

            try:
                for step in schedule:
                    wait_until(step.at_s)
                    started = time.monotonic() - t0
                    entry = {"at_s": step.at_s, "started_s": round(started, 2), "step": step.label}
                    try:
                        entry["result"] = inject.do(step.action, step.params)
                    except Exception as err:  # recorded: a fault that did not happen is a finding too
                        entry["error"] = f"{type(err).__name__}: {err}"
                        log(traceback.format_exc())
                    entry["took_s"] = round(time.monotonic() - t0 - started, 2)
                    log(f"soak {started:7.1f} s: {step.label} -> {entry.get('result', entry.get('error'))}")
                    done.append(entry)
                wait_until(duration_s)
            finally:
                inject.end_all()
            record = remediator_record(stack, t0_epoch, schedule)
            duplicates = [{"t_s": round(d.at - t0, 1), "uuid": d.uuid, "hosts": list(d.hosts)}
                          for d in sampler.duplicates]
        capture.close()
    actions, changes = record["actions"], truth.changes
    return {
        "duration_s": round(time.monotonic() - t0, 1),
        "false_fences": count(actions, FENCES, changes, {"powered off"}),
        "false_restarts": count(actions, RESTARTS, changes, {"restarted", "down", "started"}),
        "false_migrations": count(actions, MIGRATIONS, changes, {"moved"}),
        "incidents_opened": len(record["incidents"]),
        "duplicates": len(duplicates),
        "hosts": 3, "protected_guests": len(uuids), "delayed_host": DELAYED,
        "pinned_host_load1": PINNED_LOAD1,
        "load_average": {"start": loads[0][1] if loads else None, "end": os.getloadavg()[0],
                         "min": min(v for _, v in loads), "max": max(v for _, v in loads),
                         "mean": round(sum(v for _, v in loads) / len(loads), 2), "cores": os.cpu_count(),
                         "samples": loads} if loads else {},
        "schedule": [{"at_s": s.at_s, "step": s.label} for s in schedule],
        "injected": done,
        "incidents": record["incidents"],
        "actions": actions,
        "ground_truth_changes": changes,
        "duplicates_seen": duplicates,
        "alert_payloads_captured": len(capture.payloads),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Soak: the stack under injected faults; every action is false.")
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800: 30 minutes)")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        result = run(args.duration, Path(workdir), log)
    result["measured_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    quiet = not any(result[k] for k in ("false_fences", "false_restarts", "false_migrations", "duplicates"))
    log(f"soak: {result['duration_s']:.0f} s, fences {result['false_fences']}, restarts {result['false_restarts']}, "
        f"migrations {result['false_migrations']}, incidents {result['incidents_opened']}, duplicates "
        f"{result['duplicates']}, load average mean {result['load_average'].get('mean')}: {args.output}")
    return 0 if quiet else 1


if __name__ == "__main__":
    sys.exit(main())
