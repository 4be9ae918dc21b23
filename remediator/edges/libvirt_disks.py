"""The hypervisors' disks and domain metadata, through libvirt: a mixin of edges.libvirt.Hypervisors.

- A start refused because the disk is leased or locked by another QEMU (virtlockd's lease, or QEMU's
  own image lock, whichever sees it first) raises `DiskLocked`: the VM runs somewhere, holding its disk.
- `set_protection`: the protection element in a domain's <metadata> (virDomainSetMetadata), so the
  exporter's next scrape and the next inventory sync see it.
"""

from __future__ import annotations

import libvirt

from exporter.domains import HA_NAMESPACE
from remediator.storage import HA_PREFIX

# What libvirt and QEMU say when a disk is already in use by another QEMU: virtlockd's refusal
# (VIR_ERR_RESOURCE_BUSY, "Lockspace resource ... is locked") and QEMU's own image lock.
LOCK_MESSAGES = ('Failed to get "write" lock', "Is another process using the image", "is locked")


def is_disk_locked(err: libvirt.libvirtError) -> bool:
    message = err.get_error_message() or ""
    return err.get_error_code() == libvirt.VIR_ERR_RESOURCE_BUSY or any(m in message for m in LOCK_MESSAGES)


class DiskOps:
    """Needs `_call(host, what, fn)` (edges.libvirt.Hypervisors)."""

    def _call(self, host: str, what: str, fn):  # provided by Hypervisors
        raise NotImplementedError

    def domain_state(self, host: str, uuid: str) -> tuple[int, int] | None:
        """libvirt's (state, reason) codes of the domain on the host; None when not defined there."""
        def fetch(conn):
            try:
                return tuple(conn.lookupByUUIDString(uuid).state())
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise

        return self._call(host, f"state of {uuid}", fetch)

    def resume(self, host: str, uuid: str) -> None:
        def run(conn):
            dom = conn.lookupByUUIDString(uuid)
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()

        self._call(host, f"resume {uuid}", run)

    def find_domain(self, host: str, name_or_uuid: str) -> tuple[str, str, bool] | None:
        """(uuid, name, active) of the domain called so (or with that UUID) on the host; None if absent."""
        def fetch(conn):
            for dom in conn.listAllDomains():
                if name_or_uuid in (dom.name(), dom.UUIDString()):
                    return dom.UUIDString(), dom.name(), bool(dom.isActive())
            return None

        return self._call(host, f"find {name_or_uuid}", fetch)

    def set_protection(self, host: str, uuid: str, element: str | None) -> None:
        """Write (element) or remove (None) the protection metadata, in the persistent definition and,
        when it runs, the live one."""
        def run(conn):
            dom = conn.lookupByUUIDString(uuid)
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, element, HA_PREFIX if element else None,
                            HA_NAMESPACE, flags)

        self._call(host, f"metadata of {uuid}", run)
