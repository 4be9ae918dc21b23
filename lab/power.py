"""Power of a lab host: on = libvirtd and the host's services run; off = none of its processes.

Shared by the Lab object and the BMC process, so that pressing "power" in either gives
the same machine. Processes are started through the lab's keeper (see keeper.py) so that
a power loss leaves no zombie behind.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

from lab import bootdev, keeper, procs
from lab import host as hostmod
from lab.host import LIBVIRTD_PORT, LabHost, in_host, libvirtd_argv


def is_on(host: LabHost) -> bool:
    return bool(procs.netns_pids(host.netns))


def power_loss(host: LabHost) -> int:
    """kill -9 every process in the host's namespace (libvirtd, its qemu, services)."""
    return procs.kill_netns(host.netns)


def start_libvirtd(host: LabHost, keeper_sock: str) -> int:
    return keeper.spawn(keeper_sock, in_host(host, libvirtd_argv(host.storage)),
                        str(host.log_dir / "libvirtd.console.log"))


def start_service(host: LabHost, keeper_sock: str, name: str, argv: list[str]) -> int:
    return keeper.spawn(keeper_sock, in_host(host, argv), str(host.log_dir / f"{name}.log"))


def wait_listening(host: LabHost, timeout: float) -> None:
    """Until libvirtd accepts TCP connections on the host's address (a refused connect is fast)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.address, LIBVIRTD_PORT), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise TimeoutError(f"libvirtd of {host.name} ({host.address}:{LIBVIRTD_PORT}) "
                                   f"not listening after {timeout} s: {e}; see {host.log_dir}") from e
            time.sleep(0.03)


def boot(host: LabHost, keeper_sock: str, timeout: float = 20.0) -> None:
    """Power on: libvirtd, then (once it listens) every service registered for the host."""
    if is_on(host):
        return
    start_libvirtd(host, keeper_sock)
    wait_listening(host, timeout)
    for svc in host.services:
        start_service(host, keeper_sock, svc["name"], svc["argv"])


def power_on(host: LabHost, keeper_sock: str, *, all_hosts: list[LabHost], cache_seed: Path | None,
             install_delay_s: float, timeout: float = 20.0) -> str:
    """The power button, as a BMC presses it: boot from the next boot device (a once-override is
    consumed). Returns the target booted: "disk" boots the installed system, "pxe" reinstalls it."""
    if is_on(host):
        return "on already"
    target = bootdev.take_for_boot(host.dir)
    if target == "pxe":
        reinstall(host, keeper_sock, all_hosts=all_hosts, cache_seed=cache_seed,
                  install_delay_s=install_delay_s, timeout=timeout)
    else:
        boot(host, keeper_sock, timeout)
    return target


def reinstall(host: LabHost, keeper_sock: str, *, all_hosts: list[LabHost], cache_seed: Path | None,
              install_delay_s: float, timeout: float = 20.0) -> bool:
    """A network install: an installer runs for install_delay_s (the host is on, libvirt does not
    answer), then the host's state is wiped and rebuilt from the clean template (fresh libvirtd
    config, no domains, boot files restored) and it boots. False when the power went during the install."""
    started = time.monotonic()
    pid = keeper.spawn(keeper_sock, in_host(host, ["sleep", f"{install_delay_s:g}"]),
                       str(host.log_dir / "installer.log"))
    start = procs.start_time(pid)
    while procs.alive(pid, start):
        time.sleep(0.05)
    if time.monotonic() - started < install_delay_s - 0.2:
        return False  # the installer was killed: a power loss (or a fence) during the install
    hostmod.wipe_state(host)
    hostmod.prepare_dirs(host, all_hosts, cache_seed, keep_figures=True)
    boot(host, keeper_sock, timeout)
    return True
