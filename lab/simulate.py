"""Lab faults of a host's own making, as a mixin of Lab: refused migrations and simulated load.

Kept apart from lab.py (lifecycle, lookups, power and network faults) so each stays readable.
`self` is a Lab: it has hosts and host(name).
"""
from __future__ import annotations

from pathlib import Path

from lab import bootdev, figures, host as hostmod
from lab.bmc import ANSWER_DELAY, NO_BOOTDEV
from lab.host import LabHost


class HostSimulation:
    hosts: list[LabHost]

    def host(self, name: str | LabHost) -> LabHost:  # provided by Lab
        raise NotImplementedError

    def _save(self) -> None:  # provided by Lab
        raise NotImplementedError

    # ---- the BMCs: boot device, power log, a BMC that ignores boot-device requests -------------
    def set_install_delay(self, seconds: float) -> None:
        """How long a PXE boot's install takes from the next power-on on (every host)."""
        self.install_delay_s = seconds
        self._save()

    def next_boot(self, host: str | LabHost) -> bootdev.BootDevice:
        return bootdev.read(self.host(host).dir)

    def power_log(self, host: str | LabHost) -> list[tuple[float, str, str]]:
        """(unix time, via, action) of every power action any BMC of the host carried out."""
        return bootdev.power_log(self.host(host).dir)

    def delay_bmc_answers(self, host: str | LabHost, seconds: float) -> None:
        """The host's IPMI BMC answers each power command `seconds` after carrying it out (0: at once):
        a window in which the command is done and its sender does not know it yet."""
        marker = Path(self.host(host).dir) / ANSWER_DELAY
        if seconds:
            marker.write_text(f"{seconds:g}")
        else:
            marker.unlink(missing_ok=True)

    def refuse_bootdev(self, host: str | LabHost, refuse: bool = True) -> None:
        """The host's IPMI BMC stops answering boot-device requests (get and set), or answers again;
        power control keeps working."""
        marker = Path(self.host(host).dir) / NO_BOOTDEV
        if refuse:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

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
