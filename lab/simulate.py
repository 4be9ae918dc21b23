"""Lab faults of a host's own making, as a mixin of Lab: refused migrations, simulated load, and
delay on a host's traffic (lab/delay_proxy.py).

Kept apart from lab.py (lifecycle, lookups, guests) and lab/faults.py (power and network faults) so each stays readable.
`self` is a Lab: it has hosts and host(name).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from lab import bootdev, delay_proxy, figures, host as hostmod
from lab.bmc import ANSWER_DELAY, NO_BOOTDEV
from lab.host import LabHost

LIBVIRTD_PORT = 16509


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
    def add_service(self, host: str | LabHost, name: str, argv: list[str]) -> None:  # provided by Lab
        raise NotImplementedError

    # ---- delay on the host's traffic (no netem on this kernel) ----------------------------
    def add_delay_proxy(self, host: str | LabHost, ports: tuple[int, ...] = (LIBVIRTD_PORT,),
                        timeout: float = 10.0) -> None:
        """Every TCP connection from outside to these ports of the host goes through a delaying proxy
        in the host from now on (0 delay until set_delay). Add it before anything connects: an
        established connection keeps its direct path."""
        h = self.host(host)
        delay_proxy.write_delay(self._delay_file(h), 0.0)
        self.add_service(h, "delay-proxy", [
            sys.executable, str(Path(delay_proxy.__file__).resolve()), "--address", h.address,
            "--ports", ",".join(map(str, ports)), "--delay-file", str(self._delay_file(h))])
        deadline = time.monotonic() + timeout
        log = h.log_dir / "delay-proxy.log"
        while not (log.exists() and "delay proxy on" in log.read_text()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{h.name}: the delay proxy did not start: {log}")
            time.sleep(0.05)
        delay_proxy.install_redirect(h.netns, list(ports))

    def set_delay(self, host: str | LabHost, seconds: float) -> None:
        """What the host sends out through its delay proxy is held `seconds` (0: none) from now on."""
        h = self.host(host)
        if not any(s["name"] == "delay-proxy" for s in h.services):
            raise RuntimeError(f"{h.name} has no delay proxy: add_delay_proxy() first")
        delay_proxy.write_delay(self._delay_file(h), seconds)

    @staticmethod
    def _delay_file(h: LabHost) -> Path:
        return Path(h.dir) / "delay_ms"

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
