"""The last rung of a VM's ladder: rebuild it from scratch.

Relocation starts the definition that is there; a rebuild recreates the VM:
  1. every stale definition it can reach is removed (undefined on every reachable host that has it;
     a running copy is never touched: the never-twice check comes first, and the edge refuses to
     undefine a running domain);
  2. it is defined anew from its stored definition on a placed host, excluding every host that
     failed it (the incident's `failed_hosts`, kept by remediator/fsm.py, arrive as `exclude`);
  3. where its protection metadata declares a base image (`<rem:ha ... base-image=".." base-format=".."/>`),
     its qcow2 disk is recreated on that host as an overlay of the base (libvirt's storage driver runs
     `qemu-img create -f qcow2 -b BASE -F FMT` there).
It places first and makes the disk next, so a rebuild with nowhere to go or a disk that cannot be made
(another domain of that host uses the path: never replaced) removes nothing. The outcome's data
(`Incident.data["rebuild"]`) says what was removed, recreated and left behind.

Other code requests the rung as an action: `actions.perform(engine, Action("rebuild_vm", {"uuid": U,
"host": ORIGIN, "exclude": [...]}))` (the VM-down ladder does, and so can an evacuation that finds a
host-local disk gone with its host). `disk_from_base` is pure.
"""

from __future__ import annotations

import logging
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from exporter.domains import parse_ha
from remediator.edges.libvirt import DiskLocked, DomainError, HostUnreachable
from remediator.edges.libvirt_storage import BASE_FORMATS
from remediator.fsm import EventKind as E
from remediator.model import HostCondition
from remediator.outcome import Outcome, locked_outcome, refuse_or_place

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)


class DeclarationError(ValueError):
    """The VM's base-image declaration cannot be carried out (names what is wrong)."""


@dataclass(frozen=True)
class BaseDisk:
    """The disk a rebuild recreates: `path`, a qcow2 overlay of `base` (in `base_format`)."""

    target: str  # the guest's device name, e.g. vda
    path: str
    base: str
    base_format: str


def disk_from_base(xml: str) -> BaseDisk | None:
    """The disk to recreate from the VM's declared base image; None when it declares none. The disk is
    its first file-backed qcow2 disk. Raises DeclarationError when the declaration cannot be carried out."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise DeclarationError(f"the stored definition does not parse: {err}") from err
    ha = parse_ha(root.find("metadata"))
    if not ha.base_image:
        return None
    if ha.base_format not in BASE_FORMATS:
        raise DeclarationError(f"base-format {ha.base_format!r} is not one of {sorted(BASE_FORMATS)}")
    if not posixpath.isabs(ha.base_image):
        raise DeclarationError(f"base-image {ha.base_image!r} is not an absolute path")
    for disk in root.findall("devices/disk"):
        source, driver = disk.find("source"), disk.find("driver")
        path = source.get("file") if source is not None else None
        if disk.get("device", "disk") != "disk" or disk.get("type") != "file" or not path:
            continue
        if driver is None or driver.get("type") != "qcow2":
            continue
        if posixpath.normpath(path) == posixpath.normpath(ha.base_image):
            raise DeclarationError(f"the disk {path} is the base image itself: recreating it would destroy the base")
        target = disk.find("target")
        return BaseDisk(target.get("dev", "") if target is not None else "", path, ha.base_image, ha.base_format)
    raise DeclarationError(f"declares base-image {ha.base_image} but has no file-backed qcow2 disk to recreate")


def rebuild_vm(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    """Params: uuid, host (where it lived), exclude (hosts that failed it)."""
    uuid, origin = p["uuid"], p["host"]
    exclude = set(p.get("exclude", ())) | {origin}
    vm = e.store.get_vm(uuid)
    if vm is None or not vm.xml:
        return Outcome(E.ACTION_FAILED, False, f"no stored definition of {uuid}")
    try:
        disk = disk_from_base(vm.xml)
    except DeclarationError as err:
        return Outcome(E.ACTION_FAILED, False, f"{vm.name}: {err}; nothing was changed")
    with e.vm_lock(uuid):
        refused, placed = refuse_or_place(e, vm, origin, exclude)
        if refused:
            return refused
        dst, data = placed.dst, dict(placed.data)
        if dst is None:  # placed before anything is removed: a rebuild with nowhere to go changes nothing
            return Outcome(E.ACTION_FAILED, False, f"{placed.why} (excluded, having failed it: "
                           f"{', '.join(sorted(exclude))}){placed.note}", data=data)
        if e.config.dry_run:
            return Outcome(E.ACTION_OK, True, f"dry run: would rebuild {vm.name} on {dst}", {"hosts": [dst]}, data)
        record: dict[str, Any] = {"host": dst, "excluded": sorted(exclude), "removed": [], "recreated": [],
                                  "left_behind": []}
        try:
            if disk is not None:  # first: a disk that cannot be made (in use, no base) leaves every definition as it is
                replaced = e.hv.recreate_disk(dst, uuid, disk.path, disk.base, disk.base_format)
                record["recreated"].append(f"disk {disk.target} {disk.path} on {dst}: a new qcow2 overlay of "
                                           f"{disk.base} ({disk.base_format}){' replacing the old file' if replaced else ''}")
                if origin != dst:  # the copy it ran on; a host that only failed to start it made no disk
                    record["left_behind"].append(f"disk {disk.path} on {origin}, where it last ran "
                                                 f"(host-local; not deleted)")
            _remove_stale_definitions(e, uuid, set(placed.unknown), record)
            e.hv.define_and_start(dst, vm.xml)
        except DiskLocked as err:  # it runs somewhere, holding its disk: never retried, never rebuilt over
            return locked_outcome(e, dst, uuid, err, undefine=True)
        except (HostUnreachable, DomainError) as err:
            record["left_behind"].append(f"the rebuild on {dst} failed: {err}")
            return Outcome(E.ACTION_FAILED, False, f"{type(err).__name__}: {err}",
                           {"tried": dst, "host_unreachable": isinstance(err, HostUnreachable)},
                           {**data, "rebuild": record})
        record["recreated"].insert(0, f"definition on {dst} from the stored XML")
    e.world.remember_host(uuid, dst)
    removed = "removed: " + "; ".join(record["removed"]) + "; " if record["removed"] else ""
    left = "; left behind: " + "; ".join(record["left_behind"]) if record["left_behind"] else ""
    return Outcome(E.ACTION_OK, True, f"{removed}recreated: {'; '.join(record['recreated'])}{left}{placed.note}",
                   {"hosts": [dst]},
                   {**data, "rebuild": record})


def _remove_stale_definitions(e: "Engine", uuid: str, unknown: set[str], record: dict[str, Any]) -> None:
    """Undefine the VM on every host that answers and has it; the ones that cannot be asked (unreachable,
    fenced) keep theirs until they are back (reconcile, activate)."""
    conditions = e.world.conditions()
    for host in [h.name for h in e.config.hosts]:
        fenced = conditions.get(host) is HostCondition.FENCED
        if fenced or host in unknown:
            if host in e.store.hosts_defining(uuid):
                record["left_behind"].append(f"definition on {host} ({'fenced' if fenced else 'unreachable'}: "
                                             f"undefined when it is back)")
            continue
        try:
            removed = e.hv.undefine(host, uuid)
        except (HostUnreachable, DomainError) as err:
            record["left_behind"].append(f"definition on {host}: {err}")
            continue
        if removed:
            e.store.note_vm_location(uuid, host, False, e.clock())
            record["removed"].append(f"stale definition on {host}")
