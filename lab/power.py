"""Power of a lab host: on = libvirtd and the host's services run; off = none of its processes.

Shared by the Lab object and the BMC process, so that pressing "power" in either gives
the same machine. Processes are started through the lab's keeper (see keeper.py) so that
a power loss leaves no zombie behind.
"""
from __future__ import annotations

import socket
import time

from lab import keeper, procs
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
