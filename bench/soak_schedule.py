"""The soak's injection schedule: what is done to the stack, and when. Pure (no I/O).

Every fault here leaves every host up and every guest running, so anything the remediator does
about it (a fence, a restart, a migration) is a false positive. The table is in fractions of the
soak's duration, so a short development run (`--duration 300`) injects the same things in the same
order, only closer together; the last fault ends by QUIET_FROM, and the rest of the run watches
for late reactions (a re-delivered alert, a repeat after a restart).

Hosts by role: STRESSED carries the CPU stress and the libvirtd restart, DELAYED the delay and
loss (its libvirtd and exporter are reached through the lab's delay proxy), EXPORTER_HOST the
exporter kill.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STRESSED, DELAYED, EXPORTER_HOST = "h2", "h3", "h1"
QUIET_FROM = 0.85
LOSS_PERCENT = 5

# (start, end or None for a moment, action, params): the readable table the schedule is built from.
TABLE: tuple[tuple[float, float | None, str, dict[str, Any]], ...] = (
    (0.03, 0.20, "cpu_stress", {"host": STRESSED}),
    (0.22, 0.32, "delay", {"host": DELAYED, "delay_s": 0.3, "loss_percent": LOSS_PERCENT}),
    (0.32, 0.42, "delay", {"host": DELAYED, "delay_s": 1.0, "loss_percent": LOSS_PERCENT}),
    (0.46, None, "restart_prometheus", {}),
    (0.51, None, "kill_exporter", {"host": EXPORTER_HOST, "down_s": 2.0}),
    (0.56, None, "restart_libvirtd", {"host": STRESSED, "down_s": 2.0}),
    (0.62, None, "restart_alertmanager", {}),
    (0.68, None, "restart_prometheus", {}),
    (0.75, None, "redeliver_alerts", {}),
)


@dataclass(frozen=True)
class Step:
    """One thing to do at `at_s` seconds into the soak; a fault with a length has a start step and an
    end step (`ends` names the start it ends)."""

    at_s: float
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    ends: str | None = None

    @property
    def label(self) -> str:
        what = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.action}({what})" if what else self.action


def build(duration_s: float, table=TABLE) -> list[Step]:
    """The steps of a soak of `duration_s`, in time order (a fault's end before the next start at
    the same moment, so a delay of 1 s follows the 0.3 s one without overlapping it)."""
    if duration_s <= 0:
        raise ValueError(f"a soak needs a positive duration, not {duration_s}")
    steps = []
    for order, (start, end, action, params) in enumerate(table):
        if not 0 <= start < 1 or (end is not None and not start < end <= QUIET_FROM):
            raise ValueError(f"{action} at {start}..{end}: outside 0..{QUIET_FROM} of the run")
        steps.append((start, 1, order, Step(round(start * duration_s, 3), action, dict(params))))
        if end is not None:
            steps.append((end, 0, order, Step(round(end * duration_s, 3), f"end_{action}", dict(params),
                                              ends=action)))
    ordered = [s for *_, s in sorted(steps, key=lambda t: (t[0], t[1], t[2]))]
    check(ordered)
    return ordered


def _key(step: Step) -> tuple[str, str]:
    return (step.ends or step.action, str(step.params.get("host", "")))


def check(steps: list[Step]) -> None:
    """In time order; faults of one kind on one host never overlap, and every one that starts ends."""
    lasting = {s.ends for s in steps if s.ends}
    running: dict[tuple[str, str], Step] = {}
    last = -1.0
    for step in steps:
        if step.at_s < last:
            raise ValueError(f"steps out of order at {step.label}")
        last = step.at_s
        if step.ends is not None:
            if running.pop(_key(step), None) is None:
                raise ValueError(f"{step.label} ends a fault that is not running")
        elif step.action in lasting:
            if _key(step) in running:
                raise ValueError(f"{step.label} starts while {running[_key(step)].label} still runs")
            running[_key(step)] = step
    if running:
        raise ValueError(f"faults never ended: {', '.join(s.label for s in running.values())}")


def active_at(steps: list[Step], t: float, recent_s: float = 30.0) -> list[str]:
    """The injections in effect at t seconds, and those done or ended within recent_s before:
    the likely causes of a reaction at t."""
    lasting = {s.ends for s in steps if s.ends}
    running: dict[tuple[str, str], Step] = {}
    recent = []
    for step in steps:
        if step.at_s > t:
            break
        if step.ends is not None:
            running.pop(_key(step), None)
        elif step.action in lasting:
            running[_key(step)] = step
            continue
        if t - step.at_s <= recent_s:
            recent.append(f"{step.label} {t - step.at_s:.0f} s before")
    return [s.label for s in running.values()] + recent
