"""Lab faults of a host's own making, as a mixin of Lab: refused migrations and simulated load.

Kept apart from lab.py (lifecycle, lookups, power and network faults) so each stays readable.
`self` is a Lab: it has hosts and host(name).
"""
from __future__ import annotations

from lab import figures, host as hostmod
from lab.host import LabHost


class HostSimulation:
    hosts: list[LabHost]

    def host(self, name: str | LabHost) -> LabHost:  # provided by Lab
        raise NotImplementedError

    # ---- migrations --------------------------------------------------------------------
    def refuse_migration(self, host: str | LabHost, vm_name: str, refuse: bool = True) -> None:
        """Make every live migration of vm_name INTO host fail (the destination's libvirt hook
        refuses it at "migrate begin"; the guest keeps running on its source), or allow it again.
        Cold starts of vm_name on host are not affected (refuse_start is for those, and it also
        refuses incoming migrations: docs/lab.md)."""
        hostmod.refuse_migration(self.host(host), vm_name, refuse)

    def refuse_migration_everywhere(self, vm_name: str, refuse: bool = True) -> None:
        """refuse_migration on every host: vm_name cannot be live-migrated at all."""
        for h in self.hosts:
            hostmod.refuse_migration(h, vm_name, refuse)

    # ---- the host's own kernel figures (every lab host shares one kernel) -----------------
    def set_host_load(self, host: str | LabHost, load1: float) -> None:
        """The host's exporter reports hypervisor_host_load1 = load1 from its next scrape on."""
        figures.set_load(self.host(host), load1)

    def set_host_memory_available(self, host: str | LabHost, available_bytes: int) -> None:
        """The host's exporter reports hypervisor_host_memory_available_bytes = available_bytes
        (rounded down to KiB, as /proc/meminfo counts) from its next scrape on."""
        figures.set_memory_available(self.host(host), available_bytes)

    def clear_host_figures(self, host: str | LabHost) -> None:
        """The host's exporter reports this machine's real load and available memory again."""
        figures.clear(self.host(host))
