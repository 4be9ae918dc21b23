"""The storm policy, pure: when too many hosts look out at once, hold fencing and evacuation.

When more than `threshold` of the hosts are out at once, the likelier cause is the network or the
monitoring, not the hosts: fencing them all would turn a blip into an outage (Medik8s calls this
maxUnhealthy; Proxmox and XCP-ng users' top complaint is the false fence). The hold lifts by itself
when the share drops. An operator's release covers the hosts that were out when it was given: a
host failing beyond those holds again, and a release ends once the share drops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Mapping


@dataclass(frozen=True)
class Verdict:
    active: bool  # hold fencing and evacuation
    over: bool  # the share of hosts out is over the threshold (whatever the release says)
    share: float
    out: tuple[str, ...]
    release_stands: bool  # False: the stored release no longer applies and is to be dropped
    reason: str


def evaluate(hosts: Collection[str], out: Collection[str], threshold: float,
             release: Mapping[str, Any] | None) -> Verdict:
    """`out`: the hosts counted out (down, fenced, cordoned, with a host-down alert or incident, or
    unreachable when last asked). `release`: an operator's {"by", "hosts", ...}, or None."""
    names = set(hosts)
    out_here = tuple(sorted(set(out) & names))
    share = len(out_here) / len(names) if names else 0.0
    over = share > threshold
    listed = ", ".join(out_here)
    if not over:
        return Verdict(False, False, share, out_here, False,
                       f"share of hosts out {share:.2f} <= {threshold:.2f}" + (f" ({listed})" if listed else ""))
    reason = f"{len(out_here)} of {len(names)} hosts out ({listed}): share {share:.2f} > {threshold:.2f}"
    if release is None:
        return Verdict(True, True, share, out_here, False, reason)
    covered = set(release.get("hosts") or ())
    beyond = sorted(set(out_here) - covered)
    if beyond:
        return Verdict(True, True, share, out_here, False,
                       f"{reason}; the release by {release.get('by')} covered {', '.join(sorted(covered)) or 'none'}, "
                       f"not {', '.join(beyond)}: holding again")
    return Verdict(False, True, share, out_here, True, f"{reason}; released by {release.get('by')}")
