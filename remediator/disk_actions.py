"""The actions that depend on a VM's disks: a lost host's host-local VMs, a start refused by a disk lease,
and a VM paused on a storage I/O error. The same "never twice" check comes first.

- A host-local disk cannot be reached from another host: a lost host's host-local VMs go to the rebuild
  rung (remediator/rebuild.py: defined anew on a placed host, the disk recreated from the declared
  `base-image`), and the evacuation's incident records what was recreated and left behind.
- A start refused because the disk is leased or locked by another QEMU (DiskLocked) means the VM runs
  somewhere: the outcome says so (`disk_locked`), and the incident ends without retry or rebuild.
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
from remediator import rebuild, storage
from remediator.edges.libvirt import DiskLocked, DomainError, HostUnreachable
from remediator.fsm import EventKind as E
from remediator.model import ProtectedVM
from remediator.outcome import Outcome, before_a_start, locked_outcome

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)

PAUSED_IOERROR = (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR)
RESUME_SETTLE_S = 1.0  # a resume onto storage that still fails pauses again within milliseconds


def _ha(vm: ProtectedVM):
    return parse_ha(ET.fromstring(vm.xml).find("metadata")) if vm.xml else parse_ha(None)


def rebuild_host_local(e: "Engine", vm: ProtectedVM, origin: str) -> tuple[str, str, dict | None]:
    """A lost host's host-local VM handed to the rebuild rung (remediator/rebuild.py): ("rebuilt",
    "locked" or "failed"; what happened; the rebuild's record of what was recreated and left behind)."""
    try:
        declared = rebuild.disk_from_base(vm.xml)
    except rebuild.DeclarationError as err:
        return "failed", f"{vm.name}: {err}; not rebuilt", None
    if declared is None:
        disk = storage.local_disks(vm.xml, e.config.storage.shared_paths)[0]
        return "failed", (f"{vm.name}: host-local disk {disk.path} went with {origin} and no base-image is declared "
                          "(remediator protect --base-image): not rebuilt"), None
    outcome = rebuild.rebuild_vm(e, {"uuid": vm.uuid, "host": origin, "exclude": [origin]})
    if outcome.extra.get("disk_locked"):
        return "locked", outcome.detail, None
    if not outcome.ok:
        return "failed", f"{vm.name}: {outcome.detail}", None
    return "rebuilt", f"{vm.name} rebuilt: {outcome.detail}", outcome.data.get("rebuild")


def handle_io_error(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    uuid, host = p["uuid"], p["host"]
    vm = e.store.get_vm(uuid)
    name = vm.name if vm else uuid
    policy = (_ha(vm).on_io_error if vm else "") or e.config.policy.on_io_error
    try:
        state = e.hv.domain_state(host, uuid)
    except HostUnreachable as err:
        return Outcome(E.ACTION_FAILED, False, f"cannot ask {host}: {err}", {"host_unreachable": True})
    paused = state is not None and tuple(state) == PAUSED_IOERROR
    if not paused and not (policy == "restart_elsewhere" and vm is not None and not _alive(state)):
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
    return _restart_elsewhere(e, vm, host, paused)


def _alive(state) -> bool:
    return state is not None and state[0] in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED,
                                              libvirt.VIR_DOMAIN_BLOCKED)


def _restart_elsewhere(e: "Engine", vm: ProtectedVM, host: str, paused: bool) -> Outcome:
    """Placed first (the paused copy is not given up for nothing), then the paused copy destroyed (it
    holds the disk), then started on that host. A start that fails leaves it shut off on `host`: the
    retry finds it so and goes on placing and starting (the incident stays open until it runs)."""
    from remediator.actions import undefine_stale_copy  # actions imports this module

    if not vm.xml:
        return Outcome(E.ACTION_FAILED, False, f"no stored definition of {vm.uuid}")
    plan, caps = e.world.place([vm], {host})
    dst = plan.assignments.get(vm.uuid)
    data = {"placement": {vm.uuid: dst} if dst else {}, "load_source": caps.load_source}
    if dst is None:
        left = f"the paused copy stays on {host}" if paused else f"it is not running yet (shut off on {host})"
        return Outcome(E.ACTION_FAILED, False, f"{plan.unplaced[vm.uuid]}; {left}", data=data)
    with e.vm_lock(vm.uuid):
        xml = vm.xml
        try:  # the freshest definition, while its host has it
            xml = e.hv.domain_xml(host, vm.uuid)
        except (HostUnreachable, DomainError) as err:
            log.info("%s: no definition on %s (%s): using the stored one", vm.name, host, err)
        if paused:
            e.hv.destroy(host, vm.uuid)
        refused, unknown = before_a_start(e, vm.uuid, vm.name, host)
        if refused:
            return refused
        try:
            e.hv.define_and_start(dst, xml)
        except DiskLocked as err:
            return locked_outcome(e, dst, vm.uuid, err, undefine=True)
        except (HostUnreachable, DomainError) as err:
            return Outcome(E.ACTION_FAILED, False, f"{type(err).__name__}: {err}; it is shut off on {host}",
                           {"tried": dst, "host_unreachable": isinstance(err, HostUnreachable)}, data)
    e.world.remember_host(vm.uuid, dst)
    note = undefine_stale_copy(e, host, vm.uuid, unknown)
    what = f"destroyed the paused copy on {host}; " if paused else ""
    return Outcome(E.ACTION_OK, True, f"{what}started on {dst}{note}{caps.note}", {"hosts": [dst]}, data)
