"""A VM's disk recreated from its base image, on the host that will run it, through libvirt's storage API.

The remediator reaches a hypervisor only through libvirt, so the disk is made by the host's own
libvirtd: a storage volume whose backing store is the base image. libvirt's storage driver runs
`qemu-img create -f qcow2 -b BASE -o backing_fmt=FMT,compat=1.1 PATH` on the host for it (backing_fmt is
`-F`'s long form; seen in libvirtd's debug log, libvirt 9.0), and sizes the new overlay as the base.
The volume lives in the storage pool whose directory holds the disk; when no pool of the host covers
that directory, a transient `dir` pool is started for it (it vanishes when libvirtd restarts, leaving
the files as they are).
"""

from __future__ import annotations

import hashlib
import posixpath
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import libvirt

BASE_FORMATS = frozenset({"qcow2", "raw"})


def _pool_path(pool: libvirt.virStoragePool) -> str | None:
    target = ET.fromstring(pool.XMLDesc(0)).find("target/path")
    return posixpath.normpath(target.text) if target is not None and target.text else None


def pool_for(conn: libvirt.virConnect, directory: str) -> libvirt.virStoragePool:
    """The active pool of `directory`, or a transient dir pool started for it."""
    directory = posixpath.normpath(directory)
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        if _pool_path(pool) == directory:
            return pool
    name = "remediator-" + hashlib.sha1(directory.encode()).hexdigest()[:12]
    xml = f"<pool type='dir'><name>{name}</name><target><path>{escape(directory)}</path></target></pool>"
    return conn.storagePoolCreateXML(xml, 0)


def volume_xml(name: str, base: str, base_format: str) -> str:
    """A qcow2 overlay of `base`; capacity 0 = the base's size."""
    return (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>0</capacity>"
            "<target><format type='qcow2'/><compat>1.1</compat></target>"
            f"<backingStore><path>{escape(base)}</path><format type='{escape(base_format)}'/></backingStore>"
            "</volume>")


class DiskInUse(RuntimeError):
    """Another domain of the host uses the path: its disk is never replaced."""


def users_of(conn: libvirt.virConnect, path: str, but: str) -> list[str]:
    """Names of the host's domains other than UUID `but` whose disks include `path`."""
    users = []
    for dom in conn.listAllDomains():
        if dom.UUIDString() == but:
            continue
        sources = ET.fromstring(dom.XMLDesc(0)).findall("devices/disk/source")
        if any(posixpath.normpath(s.get("file") or "") == posixpath.normpath(path) for s in sources):
            users.append(dom.name())
    return users


def recreate_overlay(conn: libvirt.virConnect, path: str, base: str, base_format: str, owner: str) -> bool:
    """Delete the volume at `path` if there is one, and create it anew as an overlay of `base`, for the
    domain of UUID `owner`. True when an old file was replaced. DiskInUse when another domain uses it."""
    if base_format not in BASE_FORMATS:
        raise ValueError(f"base format {base_format!r} is not one of {sorted(BASE_FORMATS)}")
    users = users_of(conn, path, but=owner)
    if users:
        raise DiskInUse(f"{path} is a disk of {', '.join(users)} too: not replaced")
    pool = pool_for(conn, posixpath.dirname(path))
    pool.refresh(0)  # files made or removed behind libvirt's back
    name = posixpath.basename(path)
    replaced = False
    try:
        old = pool.storageVolLookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
    else:
        old.delete(0)
        replaced = True
    pool.createXML(volume_xml(name, base, base_format), 0)
    return replaced
