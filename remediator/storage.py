"""Pure: what a VM's disks say about where it can run, and the protection metadata element.

A domain's file disks are either under one of the config's `storage.shared_paths` (reachable from
every host that mounts the shared storage) or host-local. A VM with only shared disks (or none)
restarts anywhere that mounts them; a VM with a host-local disk cannot be started elsewhere with its
disk: when its host is lost it is rebuilt from its declared base image, and its old disk stays behind.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Iterable
from xml.sax.saxutils import quoteattr

HA_PREFIX = "rem"
SHARED, LOCAL, NONE = "shared", "local", "none"


@dataclass(frozen=True)
class Disk:
    path: str  # the source file, as the hosts name it
    format: str  # the driver type (qcow2, raw); "" when the XML says none
    target: str  # vda, hda...


def file_disks(xml: str) -> tuple[Disk, ...]:
    """The domain's writable file disks (not cdroms, not read-only ones)."""
    root = ET.fromstring(xml)
    disks = []
    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        if disk.get("type") != "file" or disk.get("device", "disk") != "disk" or source is None:
            continue
        if disk.find("readonly") is not None or not source.get("file"):
            continue
        driver, target = disk.find("driver"), disk.find("target")
        disks.append(Disk(source.get("file"), driver.get("type", "") if driver is not None else "",
                          target.get("dev", "") if target is not None else ""))
    return tuple(disks)


def is_under(path: str, directories: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in directories)


def kind_of(xml: str, shared_paths: Iterable[str]) -> str:
    """SHARED when every file disk is on shared storage, LOCAL when any is not, NONE without disks."""
    shared_paths = tuple(shared_paths)
    disks = file_disks(xml) if xml else ()
    if not disks:
        return NONE
    return SHARED if all(is_under(d.path, shared_paths) for d in disks) else LOCAL


def local_disks(xml: str, shared_paths: Iterable[str]) -> tuple[Disk, ...]:
    shared_paths = tuple(shared_paths)
    return tuple(d for d in file_disks(xml) if not is_under(d.path, shared_paths))


def ha_element(*, priority: int = 0, group: str | None = None, base_image: str | None = None,
               on_io_error: str | None = None) -> str:
    """The protection element for virDomainSetMetadata, without a namespace: libvirt puts it in the one
    the call names (prefix HA_PREFIX, URI exporter.domains.HA_NAMESPACE) and refuses an element that
    declares its own. The exporter and the inventory read it back with exporter.domains.parse_ha."""
    attrs = {"protected": "true", "priority": str(int(priority))}
    for key, value in (("group", group), ("base-image", base_image), ("on-io-error", on_io_error)):
        if value:
            attrs[key] = value
    body = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
    return f"<ha {body}/>"
