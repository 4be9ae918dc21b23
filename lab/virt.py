"""The lab's only libvirt user: define/start guests, list them, read their state."""
from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import libvirt

# A partitioned host drops packets: a TCP connect then hangs until the kernel gives up on
# ARP (~30-40 s measured). libvirt.open() has no timeout, so TCP URIs are probed first.
CONNECT_TIMEOUT_S = 3.0

SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: "unknown", libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed", libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated", libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed", libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: "from snapshot",
    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "daemon",
}
STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate", libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked", libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


class HostUnreachable(Exception):
    """The host's libvirtd cannot be reached (powered off, partitioned, not started)."""


def _quiet(_ctx, _err) -> None:
    """libvirt prints every error to stderr by default; the lab raises them instead."""


def connect(uri: str, timeout: float = CONNECT_TIMEOUT_S) -> libvirt.virConnect:
    """Open uri; HostUnreachable when the daemon cannot be reached (within timeout for TCP)."""
    libvirt.registerErrorHandler(_quiet, None)
    parts = urlsplit(uri)
    if parts.scheme.endswith("+tcp"):
        try:
            socket.create_connection((parts.hostname, parts.port or 16509), timeout=timeout).close()
        except OSError as e:
            raise HostUnreachable(f"{uri}: TCP connect: {e or 'timed out'}") from e
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise HostUnreachable(f"{uri}: {e.get_error_message()}") from e


def wait_ready(uri: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect(uri).close()
            return
        except HostUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def define(uri: str, xml: str, start: bool) -> str:
    conn = connect(uri)
    dom = None
    try:
        dom = conn.defineXML(xml)
        if start:
            dom.create()
        return dom.UUIDString()
    finally:
        # A failed start's traceback keeps this frame alive: the domain, and through it the connection,
        # would be freed whenever the exception is, possibly after the lab is gone, and then the free
        # blocks on a dead daemon (seen: pytest hung at exit). Free it now, while the daemon answers.
        dom = None
        conn.close()


def running(uri: str) -> dict[str, str]:
    conn = connect(uri)
    try:
        # RUNNING, not ACTIVE: a domain still starting (paused until libvirt resumes it) is not running yet.
        doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING)
        return {d.UUIDString(): d.name() for d in doms}
    except libvirt.libvirtError as e:
        # The daemon died under the call (a fence or power loss at that moment): "End of file".
        raise HostUnreachable(f"{uri}: {e.get_error_message()}") from e
    finally:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass  # the socket is gone already


def state(uri: str, name: str) -> tuple[str, str]:
    """('running', '...') or ('shutoff', 'crashed') etc.; reason is only named for shut off."""
    conn = connect(uri)
    try:
        st, reason = conn.lookupByName(name).state()
    finally:
        conn.close()
    if st == libvirt.VIR_DOMAIN_SHUTOFF:
        return "shutoff", SHUTOFF_REASONS.get(reason, str(reason))
    return STATES.get(st, str(st)), str(reason)


def all_domains(uri: str) -> dict[str, tuple[str, str]]:
    """name -> (state, reason) for every defined domain."""
    conn = connect(uri)
    try:
        names = [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()
    return {n: state(uri, n) for n in names}


def load_capabilities(uri: str) -> None:
    """Make libvirtd know every QEMU binary's capabilities now, from its cache or by probing them
    (cached under /var/cache/libvirt). Asking for the x86_64 domain only probes qemu-system-x86_64;
    the host's capabilities cover every emulator (qemu-system-i386 too), which libvirtd otherwise
    probes at the first call that needs them: a guest's first start or CPU statistics, 1-4 s late."""
    conn = connect(uri)
    try:
        conn.getDomainCapabilities(None, "x86_64", None, None, 0)
        conn.getCapabilities()
    finally:
        conn.close()
