"""`remediator protect VM` / `remediator unprotect VM`: the protection metadata in the domain's own
definition, written on its host through libvirt (virDomainSetMetadata), the element the exporter and
the inventory sync already read (`<rem:ha xmlns:rem="urn:remediator:ha:1" protected="true" .../>`).

It acts on the hosts directly, with the config's host URIs, not through the service's API: protection is
part of the VM's definition, so whoever may change definitions on the hypervisors (libvirt's own access
control: its socket, SASL or TLS client certificates) may protect a VM. The running service needs no new
credential: its next inventory sync, and Prometheus' next scrape of the exporter, see the change.
"""

from __future__ import annotations

import sys
from typing import TextIO

from remediator.config import Config
from remediator.edges.libvirt import DomainError, HostUnreachable, Hypervisors
from remediator.storage import ha_element


def _locate(hv: Hypervisors, vm: str, out: TextIO) -> list[tuple[str, str, str, bool]]:
    """(host, uuid, name, active) of every definition of the VM (running copies first)."""
    found = []
    for host in hv.hosts:
        try:
            hit = hv.find_domain(host, vm)
        except HostUnreachable as err:
            print(f"remediator: {host} does not answer ({err}): not changed there", file=sys.stderr)
            continue
        if hit is not None:
            found.append((host, *hit))
    return sorted(found, key=lambda f: (not f[3], f[0]))


def set_protection(config: Config, vm: str, *, protect: bool, out: TextIO, priority: int = 0,
                   group: str | None = None, base_image: str | None = None, on_io_error: str | None = None) -> int:
    """Write (protect) or remove the protection element on every host that defines the VM."""
    hv = Hypervisors(config.host_uris, config.libvirt_connect_timeout_s)
    try:
        found = _locate(hv, vm, out)
        if not found:
            print(f"remediator: no host of {config.source} defines a VM named or with UUID {vm!r}", file=sys.stderr)
            return 1
        element = ha_element(priority=priority, group=group, base_image=base_image,
                             on_io_error=on_io_error) if protect else None
        for host, uuid, name, active in found:
            try:
                hv.set_protection(host, uuid, element)
            except (HostUnreachable, DomainError) as err:
                print(f"remediator: {name} on {host}: {err}", file=sys.stderr)
                return 1
            what = (f"protected (priority {priority}" + (f", group {group}" if group else "")
                    + (f", base image {base_image}" if base_image else "")
                    + (f", on I/O error {on_io_error}" if on_io_error else "") + ")") if protect else "unprotected"
            print(f"{name} ({uuid}) on {host}{' (running)' if active else ''}: {what}", file=out)
        print("the exporter's next scrape and the service's next inventory sync see it", file=out)
        return 0
    finally:
        hv.close()
