"""Placement: which host takes which VM. Pure: hosts + VMs in, a plan (or reasons) out.

Rules, in the order they are applied to each VM (highest priority first, then by name, uuid):
1. Only UP hosts, and not those excluded by the caller (the origin of a VM being moved).
2. Never beyond the overcommit ratios: allocated vCPUs <= cpus * cpu ratio, allocated memory <=
   memory * memory ratio; and never more memory than the host reports available, when it does.
3. Anti-affinity: a VM never joins a host that holds another member of its group.
   Storage: a VM whose disks are on shared storage never goes to a host whose shared-storage check
   fails (a host-local VM is not placed here at all: it is rebuilt, remediator/storage.py).
4. Least loaded first: load1 per CPU when Prometheus gave it, else the share of CPUs allocated.
   Loads within LOAD_TOLERANCE per CPU of the least loaded count as equal (load1 is a one-minute
   average: such differences are noise), and among those the smaller allocated share goes first.
   Each placed VM raises its host's estimate (its vCPUs counted as busy), so a batch spreads.
5. Ties go to the host name, so the same inputs always give the same plan.
A VM no host can take gets a reason naming why each host refused it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field, replace
from heapq import heapify, heappop
from operator import itemgetter
from typing import Collection, Iterable, Mapping, Sequence

from remediator.model import HostCapacity, HostCondition, ProtectedVM


@dataclass(frozen=True)
class Overcommit:
    cpu: float = 4.0
    memory: float = 1.0


@dataclass(frozen=True)
class Plan:
    assignments: Mapping[str, str]  # VM uuid -> host, in placement order
    unplaced: Mapping[str, str]  # VM uuid -> why no host could take it
    hosts: Mapping[str, HostCapacity] = field(default_factory=dict)  # estimates after the plan

    @property
    def complete(self) -> bool:
        return not self.unplaced


LOAD_TOLERANCE = 0.05  # load1 per CPU


def allocated_share(host: HostCapacity) -> float:
    return host.vcpus_allocated / max(host.cpus, 1)


def by_preference(hosts: Iterable[HostCapacity]) -> list[HostCapacity]:
    """Least loaded first; hosts within LOAD_TOLERANCE of the least loaded of those left are
    ordered by allocated share, then name."""
    left = sorted(hosts, key=lambda h: (load_score(h), h.name))
    ordered = []
    while left:
        floor = load_score(left[0]) + LOAD_TOLERANCE
        near = [h for h in left if load_score(h) <= floor]
        ordered += sorted(near, key=lambda h: (allocated_share(h), load_score(h), h.name))
        left = left[len(near):]
    return ordered


def load_score(host: HostCapacity) -> float:
    """How busy a host is, per CPU: measured load when known, else the allocated share."""
    cpus = max(host.cpus, 1)
    if host.load1 is not None:
        return host.load1 / cpus
    return allocated_share(host)


def placement_order(vms: Iterable[ProtectedVM]) -> list[ProtectedVM]:
    """Highest priority first; name and uuid make the order total."""
    return sorted(vms, key=lambda vm: (-vm.priority, vm.name, vm.uuid))


def refusal(host: HostCapacity, vm: ProtectedVM, ratios: Overcommit, group_of: Mapping[str, str | None],
            exclude: Collection[str], storage: str = "none") -> str | None:
    """Why `host` cannot take `vm` now, or None when it can. `storage`: where its disks are
    (remediator.storage: shared, local, none)."""
    if host.name in exclude:
        return "excluded (its origin)"
    if host.condition is not HostCondition.UP:
        return f"{host.condition}"
    if storage == "shared" and host.shared_storage_ok is False:
        return "its shared-storage check fails (the VM's disks are there)"
    cpu_limit = host.cpus * ratios.cpu
    if host.vcpus_allocated + vm.vcpus > cpu_limit:
        return f"vCPUs {host.vcpus_allocated}+{vm.vcpus} over {cpu_limit:g} (ratio {ratios.cpu:g})"
    mem_limit = host.memory_bytes * ratios.memory
    if host.memory_allocated_bytes + vm.memory_bytes > mem_limit:
        return (f"memory {_mib(host.memory_allocated_bytes)}+{_mib(vm.memory_bytes)} MiB over "
                f"{_mib(int(mem_limit))} MiB (ratio {ratios.memory:g})")
    if host.memory_available_bytes is not None and vm.memory_bytes > host.memory_available_bytes:
        return f"only {_mib(host.memory_available_bytes)} MiB available, needs {_mib(vm.memory_bytes)} MiB"
    if vm.group:
        clash = sorted(u for u in host.vms if u != vm.uuid and group_of.get(u) == vm.group)
        if clash:
            return f"anti-affinity group {vm.group!r} already there ({clash[0]})"
    return None


def place(hosts: Sequence[HostCapacity], vms: Iterable[ProtectedVM], ratios: Overcommit = Overcommit(), *,
          group_of: Mapping[str, str | None] | None = None, exclude: Collection[str] = (),
          storage_of: Mapping[str, str] | None = None) -> Plan:
    """Assign each VM to the least-loaded host that may take it, updating estimates as it goes.

    `group_of` maps the uuid of every VM known to be on the hosts to its anti-affinity group (VMs of
    the batch are added as they are placed). `exclude` names hosts that must take none of them.
    `storage_of` maps a VM's uuid to where its disks are (shared, local, none; absent: none).

    The hosts stay ranked by (load score, name) between VMs: a placement changes one host's estimate,
    so only that host moves in the ranking (a bisect), and `by_preference`'s order is walked band by
    band only as far as the first host that takes the VM. The decisions are exactly those of sorting
    every host for every VM (tests/core/test_placement.py checks it against that reference); a
    1,000-VM evacuation over 1,000 hosts takes a fraction of a second instead of seconds.
    """
    storage_of = storage_of or {}
    groups = dict(group_of or {})
    state = {h.name: h for h in hosts}
    ranked = sorted((load_score(h), h.name) for h in state.values())
    within_band = {h.name: _band_key(h) for h in state.values()}
    assignments: dict[str, str] = {}
    unplaced: dict[str, str] = {}
    for vm in placement_order(vms):
        groups.setdefault(vm.uuid, vm.group)
        storage = storage_of.get(vm.uuid, "none")
        best = _first_taker(ranked, within_band, state, vm, ratios, groups, exclude, storage)
        if best is None:
            refusals = {h.name: refusal(h, vm, ratios, groups, exclude, storage) for h in state.values()}
            listed = "; ".join(f"{name}: {why}" for name, why in sorted(refusals.items())) or "no hosts"
            unplaced[vm.uuid] = f"no host can take {vm.name}: {listed}"
            continue
        assignments[vm.uuid] = best.name
        placed = state[best.name] = with_vm(best, vm)
        within_band[best.name] = _band_key(placed)
        del ranked[bisect_left(ranked, (load_score(best), best.name))]
        insort(ranked, (load_score(placed), placed.name))
    return Plan(assignments, unplaced, state)


def _band_key(host: HostCapacity) -> tuple[float, float, str]:
    """The order within a band of near-equal load (by_preference's second sort)."""
    return allocated_share(host), load_score(host), host.name


def _first_taker(ranked: list[tuple[float, str]], within_band: Mapping[str, tuple[float, float, str]],
                 state: Mapping[str, HostCapacity], vm: ProtectedVM, ratios: Overcommit,
                 groups: Mapping[str, str | None], exclude: Collection[str], storage: str) -> HostCapacity | None:
    """The first host in `by_preference` order that may take `vm`: bands of hosts within LOAD_TOLERANCE
    of the least loaded of those left (a prefix of `ranked`), each ordered by allocated share. A band
    is a heap, popped only until a host takes the VM (usually the first): no full sort per VM."""
    start = 0
    while start < len(ranked):
        end = bisect_right(ranked, ranked[start][0] + LOAD_TOLERANCE, lo=start, key=itemgetter(0))
        band = [within_band[name] for _, name in ranked[start:end]]
        heapify(band)
        while band:
            host = state[heappop(band)[2]]
            if refusal(host, vm, ratios, groups, exclude, storage) is None:
                return host
        start = end
    return None


def with_vm(host: HostCapacity, vm: ProtectedVM) -> HostCapacity:
    """The host's estimates once `vm` runs there: allocation, availability, and load (vCPUs as busy)."""
    return replace(
        host,
        vcpus_allocated=host.vcpus_allocated + vm.vcpus,
        memory_allocated_bytes=host.memory_allocated_bytes + vm.memory_bytes,
        memory_available_bytes=None if host.memory_available_bytes is None
        else host.memory_available_bytes - vm.memory_bytes,
        load1=None if host.load1 is None else host.load1 + vm.vcpus,
        vms=host.vms | {vm.uuid},
    )


def without_vm(host: HostCapacity, vm: ProtectedVM) -> HostCapacity:
    return replace(
        host,
        vcpus_allocated=max(0, host.vcpus_allocated - vm.vcpus),
        memory_allocated_bytes=max(0, host.memory_allocated_bytes - vm.memory_bytes),
        memory_available_bytes=None if host.memory_available_bytes is None
        else host.memory_available_bytes + vm.memory_bytes,
        load1=None if host.load1 is None else max(0.0, host.load1 - vm.vcpus),
        vms=host.vms - {vm.uuid},
    )


@dataclass(frozen=True)
class Move:
    uuid: str
    src: str
    dst: str


@dataclass(frozen=True)
class RebalancePlan:
    moves: tuple[Move, ...]
    load_after: float  # the source's estimated load per CPU once the moves are done
    reason: str


def memory_used_share(host: HostCapacity) -> float:
    """The share of the host's memory in use: 1 - available / total (the kernel's MemAvailable),
    or the allocated share when no measured figure is known."""
    total = max(host.memory_bytes, 1)
    if host.memory_available_bytes is not None:
        return 1.0 - host.memory_available_bytes / total
    return host.memory_allocated_bytes / total


# What an overload alert's `reason` label measures (rules/hypervisor.rules.yml), and how to score it.
OVERLOAD_SCORES = {"load": load_score, "memory": memory_used_share}


def rebalance(hosts: Sequence[HostCapacity], source: str, vms_on_source: Iterable[ProtectedVM],
              threshold: float, ratios: Overcommit = Overcommit(), *,
              group_of: Mapping[str, str | None] | None = None, resource: str = "load") -> RebalancePlan:
    """Live-migration moves off an overloaded `source`: lowest priority first, each to the least
    loaded host that may take it, until the source's score is at or under `threshold`.

    `resource` is "load" (load1 per CPU) or "memory" (share of memory in use). A moved VM is assumed
    to take its vCPUs' worth of load and its memory with it (the estimates `place` adds). Moves that
    do not leave the destination below the source are not made: they would only move the problem.
    """
    score = OVERLOAD_SCORES[resource]
    state = {h.name: h for h in hosts}
    src = state[source]
    groups = dict(group_of or {})
    moves: list[Move] = []
    candidates = sorted(vms_on_source, key=lambda vm: (vm.priority, vm.name, vm.uuid))
    for vm in candidates:
        if score(src) <= threshold:
            break
        plan = place(list(state.values()), [vm], ratios, group_of=groups, exclude={source})
        dst_name = plan.assignments.get(vm.uuid)
        if dst_name is None:
            continue
        if score(with_vm(state[dst_name], vm)) >= score(src):
            continue
        moves.append(Move(vm.uuid, source, dst_name))
        state[dst_name] = with_vm(state[dst_name], vm)
        src = without_vm(src, vm)
        state[source] = src
    after = score(src)
    unit = "per CPU" if resource == "load" else "of memory in use"
    if after <= threshold:
        reason = f"{len(moves)} move(s) bring {source} to {after:.2f} {unit} (threshold {threshold:g})"
    else:
        reason = (f"{len(moves)} move(s) leave {source} at {after:.2f} {unit}, over {threshold:g}: "
                  f"no other host can take more")
    return RebalancePlan(tuple(moves), after, reason)


def _mib(n: int) -> int:
    return n // (1024 * 1024)
