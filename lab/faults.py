"""Lab faults a test injects into a host, as a mixin of Lab: a guest's crash, power loss and power
on, a libvirtd restart, a partition and its healing, packet loss, a refused start, a damaged boot,
and the host's BMC process (killed, started again on its port).

Kept apart from lab.py (lifecycle, lookups, guests, reporting) so each stays readable, like
lab/simulate.py (faults of a host's own making) and lab/storage.py. `self` is a Lab.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from lab import host as hostmod, keeper, power, procs, virt
from lab.host import LabHost


class HostFaults:
    hosts: list[LabHost]
    bridge: str | None
    state_file: Path | None
    boot_timeout: float

    def host(self, name: str | LabHost) -> LabHost:  # provided by Lab
        raise NotImplementedError

    def _save(self) -> None:  # provided by Lab
        raise NotImplementedError

    @property
    def keeper_socket(self) -> str:  # provided by Lab
        raise NotImplementedError

    def crash_guest(self, host: str | LabHost, vm_name: str) -> int:
        """kill -9 the guest's qemu; libvirt then shows it shut off (crashed). Returns the pid."""
        h = self.host(host)
        pid = int((h.run_dir / "qemu" / f"{vm_name}.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        return pid

    def power_off(self, host: str | LabHost) -> None:
        """Power loss: kill -9 every process of the host's namespace."""
        power.power_loss(self.host(host))

    def restart_libvirtd(self, host: str | LabHost, down_s: float = 2.0) -> None:
        """libvirtd stopped (SIGTERM to its recorded pid) and started again after `down_s`; the
        guests' QEMUs keep running, as on a package upgrade. Returns once it answers again."""
        h = self.host(host)
        pid = hostmod.libvirtd_pid(h)
        if pid is None:
            raise RuntimeError(f"{h.name}: libvirtd has no pid file")
        start = procs.start_time(pid)
        os.kill(pid, signal.SIGTERM)
        procs.wait_gone(pid, start, 10.0)
        time.sleep(down_s)
        power.start_libvirtd(h, self.keeper_socket)
        power.wait_listening(h, self.boot_timeout)
        virt.wait_ready(h.uri, self.boot_timeout)

    def power_on(self, host: str | LabHost) -> None:
        """Boot: libvirtd (+ services); returns when libvirtd answers. Old guests stay shut off."""
        h = self.host(host)
        power.boot(h, self.keeper_socket, self.boot_timeout)
        virt.wait_ready(h.uri, self.boot_timeout)
        virt.load_capabilities(h.uri)

    def is_on(self, host: str | LabHost) -> bool:
        return power.is_on(self.host(host))

    def partition(self, host: str | LabHost) -> None:
        """Link down (the switch port): daemon and guests keep running, unreachable from outside."""
        hostmod.set_link(self.host(host), up=False)

    def heal(self, host: str | LabHost, timeout: float = 10.0) -> None:
        """Link up again; returns once the host's libvirtd answers at its address (if it is on).

        The bridge's neighbour entry for the host went FAILED while the link was down, and until
        it is resolved again connects fail with "No route to host": forget it, then wait."""
        h = self.host(host)
        hostmod.set_link(h, up=True)
        hostmod.forget_neighbour(h, self.bridge)
        if self.is_on(h):
            virt.wait_ready(h.uri, timeout)

    def packet_loss(self, host: str | LabHost, percent: int) -> None:
        """Drop `percent` % of the packets on the host's link, both ways (nftables in its netns)."""
        hostmod.set_packet_loss(self.host(host), percent)

    def clear_packet_loss(self, host: str | LabHost) -> None:
        hostmod.set_packet_loss(self.host(host), 0)

    def refuse_start(self, host: str | LabHost, vm_name: str, refuse: bool = True) -> None:
        """Make every start of vm_name on host fail (a libvirt hook refuses it), or allow it again."""
        hostmod.refuse_start(self.host(host), vm_name, refuse)

    def kill_bmc(self, host: str | LabHost) -> None:
        h = self.host(host)
        if procs.kill(h.bmc_pid, h.bmc_start):
            procs.wait_gone(h.bmc_pid, h.bmc_start, 5.0)
        h.bmc_pid = h.bmc_start = None
        self._save()

    def start_bmc(self, host: str | LabHost, timeout: float = 10.0) -> None:
        """Start the host's BMC (again on its recorded port, so its address does not change)."""
        h = self.host(host)
        if procs.alive(h.bmc_pid, h.bmc_start):
            return
        port_file = self.state_file.parent / f"{h.name}.bmc-port"
        port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "lab.bmc", "--state", str(self.state_file), "--host", h.name,
                "--port", str(h.bmc_port), "--port-file", str(port_file),
                "--user", h.bmc_user, "--password", h.bmc_password]
        pid = keeper.spawn(self.keeper_socket, argv, str(self.state_file.parent / f"{h.name}.bmc.log"))
        h.bmc_pid, h.bmc_start = pid, procs.start_time(pid)
        self._save()
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if not procs.alive(pid, h.bmc_start) or time.monotonic() > deadline:
                log = self.state_file.parent / f"{h.name}.bmc.log"
                raise RuntimeError(f"BMC of {h.name} did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.01)
        h.bmc_port = int(port_file.read_text())
        self._save()

    def bmc_alive(self, host: str | LabHost) -> bool:
        h = self.host(host)
        return procs.alive(h.bmc_pid, h.bmc_start)

    def damage_boot(self, host: str | LabHost) -> None:
        """Remove the fake kernel and initrd from host.boot_dir (the exporter's boot check)."""
        hostmod.damage_boot(self.host(host))

    def repair_boot(self, host: str | LabHost) -> None:
        hostmod.repair_boot(self.host(host))
