"""The world as the engine and `remediator plan` see it: host conditions, capacities, reachability,
and where a VM runs or may still run. Reads through the edges and the store; decides nothing.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable, Iterable

from remediator import placement, storage
from remediator.edges.libvirt import HostUnreachable
from remediator.edges.libvirt_events import Link
from remediator.edges.prometheus import PrometheusUnavailable
from remediator.model import HostCapacity, HostCondition, ProtectedVM
from remediator.store.base import HostState, Store

log = logging.getLogger(__name__)


class Inconclusive(Exception):
    """A reachability question that got no answer either way: ask again later, act on nothing."""


@dataclass(frozen=True)
class Capacities:
    hosts: list[HostCapacity]
    load_source: str  # "prometheus" or "libvirt"
    note: str = ""


class World:
    def __init__(self, config, store: Store, hypervisors, load_source, clock: Callable[[], datetime],
                 watchers=None):
        self.config = config
        self.store = store
        self.hv = hypervisors
        self.load_source = load_source
        self.clock = clock
        # Each host's long-lived watcher connection (edges.libvirt_events.DomainEvents: `link`,
        # `round_trip`), None without one.
        self.watchers = watchers

    # ---- host conditions -------------------------------------------------------------------------

    def host_states(self) -> dict[str, HostState]:
        return self.store.host_states()

    def conditions(self) -> dict[str, HostCondition]:
        return {name: state.condition for name, state in self.store.host_states().items()}

    def condition(self, host: str) -> HostCondition:
        return self.conditions().get(host, HostCondition.UP)

    # ---- where a VM runs -------------------------------------------------------------------------

    def find_running(self, uuid: str) -> tuple[list[str], list[str]]:
        """(hosts running it, hosts that could not be asked), over every host but the fenced ones:
        those are proven off, and asking a partitioned one costs a connect timeout per question."""
        conditions = self.conditions()
        return self.hv.find_running(uuid, [h.name for h in self.config.hosts
                                           if conditions.get(h.name) is not HostCondition.FENCED])

    def may_still_run_it(self, uuid: str, unknown: Iterable[str], home: str | None = None) -> list[str]:
        """Of the hosts that could not be asked, those where the VM is or was defined (or its recorded
        home), and which are not fenced: the VM may be running there, unseen."""
        vm = self.store.get_vm(uuid)
        had_it = set(self.store.hosts_defining(uuid)) | {h for h in (home, vm.host if vm else None) if h}
        conditions = self.conditions()
        return sorted(h for h in set(unknown) if h in had_it and conditions.get(h) is not HostCondition.FENCED)

    def remember_host(self, uuid: str, host: str) -> None:
        """The VM now lives on `host` (started or migrated there by the engine)."""
        self.store.note_vm_location(uuid, host, True, self.clock())
        vm = self.store.get_vm(uuid)
        if vm is not None and vm.host != host:
            self.store.upsert_vm(replace(vm, host=host), self.clock())

    def running_on(self, host: str) -> list[ProtectedVM]:
        """The VMs alive on `host` as placement sees them (sizes from libvirt, priority from the inventory)."""
        known = {vm.uuid: vm for vm in self.store.list_vms()}
        vms = []
        for d in self.hv.domains(host):
            if d.alive:
                base = known.get(d.uuid) or ProtectedVM(d.uuid, d.name, host, d.vcpus, d.memory_bytes, protected=False)
                vms.append(replace(base, vcpus=d.vcpus, memory_bytes=d.memory_bytes))
        return vms

    # ---- reachability ----------------------------------------------------------------------------

    def probe_hosts(self) -> dict[str, bool]:
        """Whether libvirt answers on every host that is not fenced or in maintenance, in parallel."""
        conditions = self.conditions()
        names = [h.name for h in self.config.hosts
                 if conditions.get(h.name) not in (HostCondition.FENCED, HostCondition.MAINTENANCE)]
        with ThreadPoolExecutor(max_workers=min(32, max(1, len(names))), thread_name_prefix="probe") as pool:
            return dict(zip(names, pool.map(self.answers, names)))

    def link(self, host: str) -> Link:
        return self.watchers.link(host) if self.watchers is not None else Link.UNKNOWN

    def answers(self, host: str) -> bool:
        """Whether libvirt on the host answers the remediator. The connection it already holds comes
        first: one whose keepalive failed just now (LOST) is proof of a cut, with no fresh connect
        timeout to pay; one still up is asked a real round trip, because an alert can arrive before
        the keepalive has noticed a cut: a living host answers it even through a slow link (whose
        scrapes time out), a cut-off one fails it when the keepalive closes the connection. Never a
        fresh connect while that connection exists (through a slow link it would not finish in
        time: a false "unreachable"). Without a watcher, or with a loss too old to trust (the link
        may have healed since: edges.libvirt_events.LOSS_TRUSTED_FOR_S), one fresh probe decides.
        Raises Inconclusive when the watcher did not answer within its bound: neither yes nor no."""
        link = self.link(host)
        if link is Link.ANSWERS:
            link = self.watchers.round_trip(host)
            if link is Link.UNKNOWN:
                raise Inconclusive(f"the kept-alive connection to {host} gave no answer within its bound")
        if link is not Link.UNKNOWN:
            return link is Link.ANSWERS
        return self.hv.is_reachable(host)

    def note_reachability(self, asked: set[str], unreachable: set[str]) -> bool:
        """Remember which of the hosts just asked did not answer (since when); True when that changed."""
        return self.store.note_reachability(asked, unreachable, self.clock())

    def unreachable(self) -> set[str]:
        return set(self.store.unreachable_hosts())

    # ---- capacity --------------------------------------------------------------------------------

    def capacities(self) -> Capacities:
        """Every host's capacity, allocation (libvirt, now) and load (Prometheus, one query)."""
        names = [h.name for h in self.config.hosts]
        load, source, note = {}, "prometheus", ""
        if self.load_source is not None:
            try:
                load = self.load_source.host_load(names)
            except PrometheusUnavailable as err:
                source, note = "libvirt", f" (Prometheus unavailable: {err}; placed by libvirt allocation)"
        else:
            source = "libvirt"
        conditions = self.conditions()
        hosts = []
        for name in names:
            condition = conditions.get(name, HostCondition.UP)
            hl = load.get(name)
            domains, cpus, memory = [], 0, 0
            # Only UP hosts take VMs; a cordoned one still runs some and is measured for the record.
            if condition in (HostCondition.UP, HostCondition.CORDONED, HostCondition.MAINTENANCE):
                try:
                    domains = self.hv.domains(name)
                    if hl and hl.cpus and hl.memory_bytes:
                        cpus, memory = hl.cpus, hl.memory_bytes
                    else:
                        cpus, memory = self.hv.capacity(name)
                except HostUnreachable:
                    condition = HostCondition.DOWN
            alive = [d for d in domains if d.alive]
            hosts.append(HostCapacity(
                name=name, cpus=cpus, memory_bytes=memory,
                vcpus_allocated=sum(d.vcpus for d in alive), memory_allocated_bytes=sum(d.memory_bytes for d in alive),
                load1=hl.load1 if hl else None, memory_available_bytes=hl.memory_available_bytes if hl else None,
                condition=condition, vms=frozenset(d.uuid for d in domains),
                shared_storage_ok=hl.storage_ok if hl else None))
        self.store.set_host_loads({h.name: (h.load1, h.memory_available_bytes) for h in hosts}, self.clock(), source)
        return Capacities(hosts, source, note)

    def overcommit(self) -> placement.Overcommit:
        o = self.config.policy.overcommit
        return placement.Overcommit(cpu=o.cpu, memory=o.memory)

    def groups(self) -> dict[str, str | None]:
        return {vm.uuid: vm.group for vm in self.store.list_vms()}

    def storage_kind(self, vm: ProtectedVM) -> str:
        """Where the VM's disks are: storage.SHARED, LOCAL or NONE (from its last known definition). Without
        `storage.shared_paths` the remediator knows nothing of storage: NONE, every disk taken as reachable."""
        if not self.config.storage.shared_paths:
            return storage.NONE
        return storage.kind_of(vm.xml, self.config.storage.shared_paths)

    def place(self, vms: Iterable[ProtectedVM], exclude: Iterable[str]) -> tuple[placement.Plan, Capacities]:
        caps = self.capacities()
        vms = list(vms)
        return placement.place(caps.hosts, vms, self.overcommit(), group_of=self.groups(), exclude=set(exclude),
                               storage_of={vm.uuid: self.storage_kind(vm) for vm in vms}), caps
