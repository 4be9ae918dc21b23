"""A VM's disk recreated from its base image, on the host that will run it, through libvirt's storage API.

The remediator reaches a hypervisor only through libvirt, so the disk is made by the host's own
libvirtd: a storage volume whose backing store is the base image. libvirt's storage driver runs
`qemu-img create -f qcow2 -b BASE -F FMT PATH` on the host for it, and sizes the new overlay as the base.
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
            "<target><format type='qcow2'/></target>"
            f"<backingStore><path>{escape(base)}</path><format type='{escape(base_format)}'/></backingStore>"
            "</volume>")


def recreate_overlay(conn: libvirt.virConnect, path: str, base: str, base_format: str) -> bool:
    """Delete the volume at `path` if there is one, and create it anew as an overlay of `base`.
    True when an old file was replaced."""
    if base_format not in BASE_FORMATS:
        raise ValueError(f"base format {base_format!r} is not one of {sorted(BASE_FORMATS)}")
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
