"""Network abuse of the whole stack: packet loss and partition flaps on one host's link, observed.

Issue 9: under 50 % packet loss on one host's link the remediator fenced and evacuated that host
and then died (`segfault ... in libvirt.so`). This drives such faults against a running Stack and
records, for each phase, what a person asks afterwards: did the remediator (and every exporter)
stay alive, did the kernel log a segfault of any of them, which incidents opened and which of them
acted (fence, start, migration: anything beyond verifying), how much the link really lost (the
nftables counters), and whether the never-twice sampler saw a guest on two hosts.

    abuse = Abuse(lab, stack, sampler, "h1")
    phase = abuse.loss(20, seconds=60)          # lab.packet_loss for a minute, then cleared
    phase = abuse.flaps(5, partition_s=3)       # lab.partition / heal, five times
    assert phase.crashed == [] and phase.acting == []

Used by tests/e2e/test_network_abuse.py (short) and bench/network_abuse.py (`make abuse`, long).
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab import procs
from lab.host import packet_loss
from lab.lab import Lab
from lab.sampler import DuplicateSampler
from lab.stack import Stack, wait_for
from remediator.fsm import ActionKind

# The guests of an abuse run: two protected guests on the abused host h1, one on each other host.
PLACEMENT = {"h1": ["app-0", "app-1"], "h2": ["app-2"], "h3": ["app-3"]}
VMS = [{"name": name, "priority": 10} for names in PLACEMENT.values() for name in names]  # Stack(vms=...)

# Actions that only look (or schedule looking again): anything else an incident does is acting.
OBSERVING = frozenset({ActionKind.VERIFY_VM, ActionKind.VERIFY_HOST, ActionKind.SCHEDULE_RETRY,
                       ActionKind.RAISE_FAILED})
# Overload incidents come from the load average, which every lab host reports for the whole shared
# machine (and other work on it): recorded apart, since no link fault can cause them.
LOAD_KINDS = frozenset({"host_overloaded"})
# An alert fires 5 s after its condition held (rules/hypervisor.rules.yml) and reaches the remediator
# ~1 s later: a fault cleared this long ago has had every chance to open an incident.
SETTLE_S = 8.0


@dataclass
class Phase:
    fault: str  # "loss" or "flaps"
    level: int  # loss: percent; flaps: how many partitions
    seconds: float  # from the fault to the end of the settle time
    incidents: list[dict] = field(default_factory=list)  # opened during the phase: id, subject, kind, state, actions
    acting: list[str] = field(default_factory=list)  # "<subject> <action kind>" of every acting action
    acting_on_load: list[str] = field(default_factory=list)  # the same for overload incidents (LOAD_KINDS)
    link: dict = field(default_factory=dict)  # nft counters of the loss: percent, seen, dropped
    remediator_alive: bool = True
    exporters_alive: bool = True
    segfaults: list[str] = field(default_factory=list)  # kernel log lines naming our processes
    duplicates: int = 0

    @property
    def crashed(self) -> list[str]:
        """What died: empty when everything survived the phase."""
        dead = [] if self.remediator_alive else ["remediator"]
        dead += [] if self.exporters_alive else ["exporter"]
        return dead + self.segfaults

    def to_dict(self) -> dict:
        return asdict(self)


def define_guests(lab: Lab, stack: Stack) -> list[str]:
    """PLACEMENT's guests, protected, running; returns once the stack watches every one of them."""
    uuids = [lab.define_guest(host, name, metadata=lab.ha_metadata(protected=True, priority=10))
             for host, names in PLACEMENT.items() for name in names]
    stack.wait_watching(uuids)
    return uuids


class KernelLog:
    """The kernel's messages since this object was made (`dmesg`), to find segfaults."""

    def __init__(self) -> None:
        lines = self._read()
        self.readable = lines is not None
        self._last = lines[-1] if lines else None

    @staticmethod
    def _read() -> list[str] | None:
        proc = subprocess.run(["dmesg"], capture_output=True, text=True)
        return proc.stdout.splitlines() if proc.returncode == 0 else None

    def segfaults(self, pids: set[int]) -> list[str]:
        lines = self._read() or []
        if self._last in lines:
            lines = lines[len(lines) - lines[::-1].index(self._last):]
        return [line for line in lines if "segfault" in line and any(f"[{pid}]" in line for pid in pids)]


def exporter_pids(lab: Lab) -> dict[int, str]:
    """pid -> host of the remediator-exporter processes of every lab host that is on."""
    found = {}
    for host in lab.hosts:
        for pid in procs.netns_pids(host.netns):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"remediator-exporter" in argv:
                found[pid] = host.name
    return found


class Abuse:
    def __init__(self, lab: Lab, stack: Stack, sampler: DuplicateSampler, host: str):
        self.lab, self.stack, self.sampler, self.host = lab, stack, sampler, lab.host(host)

    def loss(self, percent: int, seconds: float, settle: float = SETTLE_S) -> Phase:
        """`percent` % loss on the host's link for `seconds`, cleared, then `settle` seconds watched."""
        def fault() -> dict:
            self.lab.packet_loss(self.host, percent)
            try:
                time.sleep(seconds)
                return packet_loss(self.host)
            finally:
                self.lab.clear_packet_loss(self.host)
        return self._phase("loss", percent, fault, settle)

    def flaps(self, count: int, partition_s: float, heal_s: float = 3.0, settle: float = SETTLE_S) -> Phase:
        """`count` times: the host's link down for `partition_s`, up again (until libvirtd answers)."""
        def fault() -> dict:
            for _ in range(count):
                self.lab.partition(self.host)
                time.sleep(partition_s)
                self.lab.heal(self.host)
                time.sleep(heal_s)
            return {}
        return self._phase("flaps", count, fault, settle)

    def _phase(self, kind: str, level: int, fault, settle: float) -> Phase:
        before = {i["id"] for i in self.stack.incidents()}
        remediator = self.stack.remediator.pid
        exporters = exporter_pids(self.lab)
        kernel = KernelLog()
        duplicates = len(self.sampler.duplicates)
        started = time.monotonic()
        link = fault()
        time.sleep(settle)
        phase = Phase(kind, level, round(time.monotonic() - started, 1), link=link,
                      duplicates=len(self.sampler.duplicates) - duplicates)
        phase.remediator_alive = self.stack.remediator.poll() is None and self._answers()
        # an exporter dies with its host's power (a fence): only one on a host still on is a crash
        phase.exporters_alive = all(procs.alive(pid, None) or not self.lab.is_on(host)
                                    for pid, host in exporters.items())
        phase.segfaults = kernel.segfaults({remediator, *exporters}) if kernel.readable else ["kernel log unreadable"]
        if phase.remediator_alive:
            self._record_incidents(phase, before)
        return phase

    def _record_incidents(self, phase: Phase, before: set[int]) -> None:
        for summary in self.stack.incidents():
            if summary["id"] in before:
                continue
            detail = self.stack.api(f"incidents/{summary['id']}")
            kinds = [a["action"]["kind"] for a in detail["actions"]]
            kind = detail["incident"]["kind"]
            phase.incidents.append({"id": summary["id"], "subject": summary["subject"], "kind": kind,
                                    "state": detail["incident"]["state"], "actions": kinds})
            acting = phase.acting_on_load if kind in LOAD_KINDS else phase.acting
            acting += [f"{summary['subject']} {k}" for k in kinds if k not in OBSERVING]

    def _answers(self) -> bool:
        try:
            wait_for(self.stack._ready, 10, "remediator /readyz")
            return True
        except (AssertionError, RuntimeError):
            return False
