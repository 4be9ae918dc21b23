"""The actions that depend on a VM's disks: rebuilding a host-local VM from its base image, and a VM
paused on a storage I/O error. Registered in actions.PERFORM; the same "never twice" check first.

- A host-local disk cannot be reached from another host: the VM is defined anew on a placed host with
  each host-local disk recreated there from its declared base image (`base_image` in its protection
  metadata). Its old disk is left behind on the lost host, and the incident says so.
- A VM paused on an I/O error (libvirt: paused, reason ioerror) is handled by its `on_io_error` (metadata,
  else policy.on_io_error): wait for an operator; resume once its storage takes writes again (a resume
  while it still fails pauses it again at once, so the handler looks a moment later); or destroy the
  paused copy and start it elsewhere (only once a host is placed: the paused copy is not given up for
  nothing).
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any, Mapping

import libvirt

from exporter.domains import parse_ha
from remediator import storage
from remediator.edges.libvirt import DiskLocked, DomainError, HostUnreachable
from remediator.fsm import EventKind as E
from remediator.model import ProtectedVM

if TYPE_CHECKING:
    from remediator.actions import Outcome
    from remediator.engine import Engine

log = logging.getLogger(__name__)

PAUSED_IOERROR = (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR)
RESUME_SETTLE_S = 1.0  # a resume onto storage that still fails pauses again within milliseconds


def _ha(vm: ProtectedVM):
    return parse_ha(ET.fromstring(vm.xml).find("metadata")) if vm.xml else parse_ha(None)


def rebuild_on(e: "Engine", vm: ProtectedVM, dst: str, origin: str) -> dict[str, Any]:
    """Define the VM anew on dst with its host-local disks recreated from its base image, and start it.
    Returns what was recreated and left behind; raises DomainError/HostUnreachable (DiskLocked: it runs)."""
    local = storage.local_disks(vm.xml, e.config.storage.shared_paths)
    base = _ha(vm).base_image
    if local and not base:
        raise DomainError(dst, f"rebuild {vm.name}", f"host-local disk {local[0].path} and no base_image in its "
                          "protection metadata (remediator protect --base-image): nothing to recreate it from")
    if not e.config.dry_run:
        for disk in local:
            e.hv.recreate_disk(dst, disk.path, base, disk.format or "qcow2")
        e.hv.define_and_start(dst, vm.xml)
    return {"host": dst, "base_image": base, "recreated": [d.path for d in local],
            "left_behind": [f"{origin}:{d.path}" for d in local]}


def describe(vm_name: str, record: Mapping[str, Any]) -> str:
    if not record["recreated"]:
        return f"{vm_name} defined anew on {record['host']}"
    return (f"{vm_name} rebuilt on {record['host']} from {record['base_image']}; its old disk "
            f"{', '.join(record['left_behind'])} was left behind")


def rebuild_vm(e: "Engine", p: Mapping[str, Any]) -> "Outcome":
    """The rebuild rung of a VM's incident: placed anew (its origin excluded), disks recreated, started."""
    from remediator.actions import Outcome, before_a_start, undefine_stale_copy

    uuid, origin, exclude = p["uuid"], p["host"], set(p.get("exclude", ()))
    vm = e.store.get_vm(uuid)
    if vm is None or not vm.xml:
        return Outcome(E.ACTION_FAILED, False, f"no stored definition of {uuid}")
    with e.vm_lock(uuid):
        refused, unknown = before_a_start(e, uuid, vm.name, origin)
        if refused:
            return refused
        plan, caps = e.world.place([vm], exclude | set(unknown))
        dst = plan.assignments.get(uuid)
        data: dict[str, Any] = {"placement": {uuid: dst} if dst else {}, "load_source": caps.load_source}
        if dst is None:
            return Outcome(E.ACTION_FAILED, False, plan.unplaced[uuid] + caps.note, data=data)
        try:
            record = rebuild_on(e, vm, dst, origin)
        except DiskLocked as err:
            return locked_outcome(e, dst, uuid, err, undefine=True)
    e.world.remember_host(uuid, dst)
    data["rebuilt"] = {uuid: record}
    note = undefine_stale_copy(e, origin, uuid, unknown)
    return Outcome(E.ACTION_OK, True, describe(vm.name, record) + note + caps.note, {"hosts": [dst]}, data)


def locked_outcome(e: "Engine", dst: str, uuid: str, err: DiskLocked, *, undefine: bool) -> "Outcome":
    """A start refused by the disk lease: the VM runs somewhere. A copy just defined on another host
    (undefine) never ran: it goes. No retry, no rebuild: the FSM ends the incident on disk_locked."""
    from remediator.actions import Outcome

    if undefine:
        try:
            e.hv.undefine(dst, uuid)
        except (HostUnreachable, DomainError) as undefine_err:
            log.warning("could not undefine the refused copy of %s on %s: %s", uuid, dst, undefine_err)
    return Outcome(E.ACTION_OK, True, f"not started on {dst}, its disk is locked ({err})", {"disk_locked": True})


def handle_io_error(e: "Engine", p: Mapping[str, Any]) -> "Outcome":
    from remediator.actions import Outcome, start_vm_elsewhere

    uuid, host = p["uuid"], p["host"]
    vm = e.store.get_vm(uuid)
    name = vm.name if vm else uuid
    policy = (_ha(vm).on_io_error if vm else "") or e.config.policy.on_io_error
    try:
        state = e.hv.domain_state(host, uuid)
    except HostUnreachable as err:
        return Outcome(E.ACTION_FAILED, False, f"cannot ask {host}: {err}", {"host_unreachable": True})
    if state is None or tuple(state) != PAUSED_IOERROR:
        return Outcome(E.ACTION_OK, True, f"{name} is no longer paused on an I/O error on {host}")
    if e.config.dry_run:
        return Outcome(E.ACTION_OK, True, f"dry run: would apply on_io_error {policy} to {name} on {host}")
    if policy == "wait":
        return Outcome(E.ACTION_OK, True, f"{name} stays paused on {host} (on_io_error wait): an operator resumes "
                       "or stops it once its storage is repaired", {"waiting": True})
    if policy == "resume":
        e.hv.resume(host, uuid)
        time.sleep(RESUME_SETTLE_S)
        if tuple(e.hv.domain_state(host, uuid) or ()) == PAUSED_IOERROR:
            return Outcome(E.ACTION_FAILED, False, f"resumed {name} on {host}, and it paused again on an I/O "
                           "error: its storage still fails")
        return Outcome(E.ACTION_OK, True, f"resumed {name} on {host}: its storage takes writes again")
    # restart_elsewhere: only once a host can take it, then the paused copy goes first (it holds the disk)
    if vm is None or not vm.xml:
        return Outcome(E.ACTION_FAILED, False, f"no stored definition of {uuid}")
    plan, caps = e.world.place([vm], {host})
    if uuid not in plan.assignments:
        return Outcome(E.ACTION_FAILED, False, f"no host can take it now ({plan.unplaced[uuid]}); the paused "
                       f"copy stays on {host}")
    with e.vm_lock(uuid):
        e.hv.destroy(host, uuid)
    started = start_vm_elsewhere(e, {"uuid": uuid, "host": host, "exclude": [host]})
    return Outcome(started.event, started.ok, f"destroyed the paused copy on {host}; {started.detail}",
                   started.extra, started.data)
