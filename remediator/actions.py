"""The actions: one function per fsm.ActionKind, dispatched from `PERFORM`, not an if-chain.

Each action looks at the world first, so performing it again (a retry, a resume after `kill -9`)
is harmless: a VM running anywhere is never started again, a host already off is not fenced twice.
Each returns an Outcome, the event the engine feeds back to the incident. "Never twice" lives here:
a VM starts only when no host that may still run it is unreachable and unfenced.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Mapping

from remediator import disk_actions, placement, rebuild, storage
from remediator.edges.libvirt import DiskLocked, DomainError, HostUnreachable
from remediator.edges.libvirt_events import Link
from remediator.fsm import ActionKind as A
from remediator.fsm import EventKind as E
from remediator.hostfsm import HostEvent
from remediator.model import Action, HostCondition, ProtectedVM
from remediator.world import Inconclusive
from remediator.outcome import Outcome, before_a_start, locked_outcome, refuse_or_place  # noqa: F401 (the engine's import)

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)


def verify_vm(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    uuid, host = p["uuid"], p["host"]
    running, unknown = e.world.find_running(uuid)
    if running:
        return Outcome(E.VM_RUNNING, True, f"running on {', '.join(running)}", {"hosts": running})
    blockers = e.world.may_still_run_it(uuid, unknown, home=host)
    if blockers:
        return Outcome(E.HOST_UNREACHABLE, True, f"{', '.join(blockers)} does not answer and is not fenced",
                       {"host_unreachable": host in blockers, "blocked_by": blockers})
    if e.world.condition(host) is HostCondition.FENCED:
        return Outcome(E.HOST_UNREACHABLE, True, f"its host {host} is fenced (off)", {"host_unreachable": True})
    note = f" ({', '.join(unknown)} could not be asked; it was never defined there)" if unknown else ""
    return Outcome(E.VM_NOT_RUNNING, True, f"not running on any reachable host{note}")


def verify_host(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    host = p["host"]
    try:  # the held connections first (World.answers: a round trip on each), then fresh probes
        answers = e.storm.probe_hosts()
        reachable = answers[host] if host in answers else e.world.answers(host)
    except Inconclusive as err:  # neither proof of life nor of loss: retried with backoff, nothing done
        return Outcome(E.ACTION_FAILED, False, str(err))
    if reachable:
        return Outcome(E.HOST_REACHABLE, True, f"libvirt on {host} answers")
    how = (": its kept-alive connection failed just now (keepalive)" if e.world.link(host) is Link.LOST
           else ": a fresh connection failed")
    e.hosts.set_condition(host, HostEvent.UNREACHABLE, "libvirt unreachable from the remediator")
    return Outcome(E.HOST_UNREACHABLE, True, f"libvirt on {host} unreachable from the remediator{how}")


def start_vm(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    uuid, host = p["uuid"], p["host"]
    with e.vm_lock(uuid):
        refused, _ = before_a_start(e, uuid, uuid, host)
        if refused:
            return refused
        condition = e.world.condition(host)
        if condition is not HostCondition.UP:
            return Outcome(E.ACTION_FAILED, False, f"{host} is {condition}", {"host_unusable": True})
        if e.config.dry_run:
            return Outcome(E.ACTION_OK, True, f"dry run: would start {uuid} on {host}", {"hosts": [host]})
        try:
            e.hv.start(host, uuid)
        except DiskLocked as err:
            return locked_outcome(e, host, uuid, err, undefine=False)
    e.world.remember_host(uuid, host)
    return Outcome(E.ACTION_OK, True, f"started on {host}", {"hosts": [host]})


def start_vm_elsewhere(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    """Start the VM on a placed host with the definition that is there (relocation), never twice. A failed
    start names the host it tried (`tried`): the fsm keeps it in the incident's failed hosts."""
    uuid, origin, exclude = p["uuid"], p["host"], set(p.get("exclude", ()))
    vm = e.store.get_vm(uuid)
    if vm is None or not vm.xml:
        return Outcome(E.ACTION_FAILED, False, f"no stored definition of {uuid}")
    if e.world.storage_kind(vm) == storage.LOCAL:
        return Outcome(E.ACTION_FAILED, False, f"{vm.name} has a host-local disk: it cannot start elsewhere",
                       {"host_local": True})
    with e.vm_lock(uuid):
        refused, placed = refuse_or_place(e, vm, origin, exclude)
        if refused:
            return refused
        dst, unknown, data = placed.dst, placed.unknown, placed.data
        if dst is None:
            return Outcome(E.ACTION_FAILED, False, placed.why + placed.note, data=data)
        xml = vm.xml
        if origin not in unknown:
            try:  # the freshest definition, while its host answers and still has it
                xml = e.hv.domain_xml(origin, uuid)
            except DomainError as err:
                log.info("%s: no definition on %s (%s): using the stored one", vm.name, origin, err)
        if e.config.dry_run:
            return Outcome(E.ACTION_OK, True, f"dry run: would start {vm.name} on {dst}", {"hosts": [dst]}, data)
        try:
            e.hv.define_and_start(dst, xml)
        except DiskLocked as err:
            return locked_outcome(e, dst, uuid, err, undefine=True)
        except (HostUnreachable, DomainError) as err:
            return Outcome(E.ACTION_FAILED, False, f"{type(err).__name__}: {err}",
                           {"tried": dst, "host_unreachable": isinstance(err, HostUnreachable)}, data)
    e.world.remember_host(uuid, dst)
    note = undefine_stale_copy(e, origin, uuid, unknown)
    return Outcome(E.ACTION_OK, True, f"started on {dst}{note}{placed.note}", {"hosts": [dst]}, data)


def undefine_stale_copy(e: "Engine", origin: str, uuid: str, unknown) -> str:
    """The copy left defined on a reachable origin must never start again: undefine it."""
    if origin in set(unknown):
        return f"; the copy on {origin} is undefined when that host is back (reconcile, or activate)"
    try:
        e.hv.undefine(origin, uuid)
    except (HostUnreachable, DomainError) as err:
        return f"; the stale copy on {origin} could not be undefined ({err})"
    e.store.note_vm_location(uuid, origin, False, e.clock())
    return f"; undefined the stale copy on {origin}"


def fence_host(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    host = p["host"]
    if e.config.dry_run:
        return Outcome(E.ACTION_OK, True, f"dry run: would fence {host} with its fence device")
    if e.config.policy.unsafe_skip_fencing:
        # Tests only (the loader refuses it elsewhere): the host is taken for off with no proof, to show
        # that the disk lease alone still refuses a second copy.
        log.warning("UNSAFE: policy.unsafe_skip_fencing: %s is taken for fenced without fencing it", host)
        e.hosts.set_condition(host, HostEvent.FENCED, "NOT fenced: policy.unsafe_skip_fencing took it for off")
        return Outcome(E.ACTION_OK, True, "fencing skipped (policy.unsafe_skip_fencing): no proof it is off")
    result = e.fencer.off(host)
    if result.ok:
        e.metrics.fence_outcome("off")
        e.hosts.set_condition(host, HostEvent.FENCED, f"fenced: {result.detail}")
        return Outcome(E.ACTION_OK, True, result.detail)
    e.metrics.fence_outcome("failed")
    return Outcome(E.ACTION_FAILED, False, result.detail)


def evacuate_host(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    """Start the host's protected VMs elsewhere, highest priority first, in parallel, each once."""
    host = p["host"]
    if e.world.condition(host) is not HostCondition.FENCED and not e.config.dry_run:
        return Outcome(E.ACTION_FAILED, False, f"{host} is not fenced: refusing to start its VMs elsewhere")
    vms = placement.placement_order(v for v in e.store.list_vms() if v.host == host and v.protected)
    to_place, already = [], []
    for vm in vms:
        running, _ = e.world.find_running(vm.uuid)
        (already if running else to_place).append(vm)
    # A host-local disk went with its host: those VMs take the rebuild rung (each placed by it).
    local = [vm for vm in to_place if e.world.storage_kind(vm) == storage.LOCAL]
    plan, caps = e.world.place([vm for vm in to_place if vm not in local], {host})
    data = {"placement": dict(plan.assignments), "unplaced": dict(plan.unplaced), "load_source": caps.load_source}
    by_uuid = {vm.uuid: vm for vm in to_place}
    workers = max(1, e.config.policy.max_concurrent_actions)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evacuate") as pool:
        futures = {uuid: pool.submit(_start_placed, e, by_uuid[uuid], dst, host)
                   for uuid, dst in plan.assignments.items()}
        rebuilds = {vm.uuid: pool.submit(disk_actions.rebuild_host_local, e, vm, host) for vm in local}
    failures, locked, rebuilt = {}, {}, {}
    for uuid, fut in futures.items():
        try:
            fut.result()
        except DiskLocked as err:
            locked[uuid] = locked_outcome(e, err.host, uuid, err, undefine=True).detail
        except (HostUnreachable, DomainError) as err:
            failures[uuid] = str(err)
    for uuid, fut in rebuilds.items():
        how, detail, record = fut.result()
        {"locked": locked, "failed": failures, "rebuilt": rebuilt}[how][uuid] = detail
        if record:
            data.setdefault("rebuilt", {})[uuid] = record
    started = sum(1 for u in futures if u not in failures and u not in locked) + len(rebuilt)
    verb = "would start" if e.config.dry_run else "started"
    parts = [f"{started} {verb}" + (": " + ", ".join(f"{by_uuid[u].name} -> {d}" for u, d in plan.assignments.items()
                                                     if u not in failures) if e.config.dry_run else ""),
             f"{len(already)} already running"]
    if locked:
        parts.append(f"{len(locked)} not started, running elsewhere: " + "; ".join(locked.values()))
    if rebuilt:
        parts.append("; ".join(rebuilt.values()))
    if plan.unplaced:
        parts.append(f"{len(plan.unplaced)} unplaced: " + "; ".join(plan.unplaced.values()))
    if failures:
        parts.append(f"{len(failures)} failed: " + "; ".join(failures.values()))
    ok = not plan.unplaced and not failures
    return Outcome(E.ACTION_OK if ok else E.ACTION_FAILED, ok, ", ".join(parts) + caps.note, data=data)


def _start_placed(e: "Engine", vm: ProtectedVM, dst: str, origin: str) -> None:
    with e.vm_lock(vm.uuid):
        running, unknown = e.world.find_running(vm.uuid)
        if running:
            return
        blockers = [h for h in e.world.may_still_run_it(vm.uuid, unknown, home=origin) if h != origin]
        if blockers:
            raise DomainError(dst, f"start {vm.name}", f"{', '.join(blockers)} does not answer and is not "
                              f"fenced: it may still run {vm.name}")
        if e.config.dry_run:
            return
        e.hv.define_and_start(dst, vm.xml)
    e.world.remember_host(vm.uuid, dst)


def cordon_host(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    change = e.hosts.set_condition(p["host"], HostEvent.DAMAGED, "cordoned: a damage check failed")
    return Outcome(E.ACTION_OK, True, change.reason)


def migrate_away(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    """Live-migrate every protected VM running on the host to placed hosts (highest priority first).
    With `cold_fallback` (a damaged host, which still answers), a VM whose migration fails is destroyed
    there, confirmed stopped everywhere, and started on another placed host."""
    host = p["host"]
    vms = e.world.running_on(host)
    protected = [vm for vm in vms if vm.protected]
    plan, caps = e.world.place(protected, {host})
    note = f"; {len(vms) - len(protected)} unprotected VM(s) left" if len(vms) > len(protected) else ""
    return e.migrations.run(host, list(plan.assignments.items()), plan.unplaced, caps, protected,
                            cold_fallback=bool(p.get("cold_fallback")), note=note)


def rebalance_host(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    """Live-migrate the lowest-priority VMs off an overloaded host until under the rule's threshold."""
    host, resource = p["host"], p.get("resource", "load")
    threshold = float(p.get("threshold", "nan"))
    if resource not in placement.OVERLOAD_SCORES or threshold != threshold:
        return Outcome(E.ACTION_FAILED, False, f"the overload alert carries no usable reason/threshold labels "
                       f"({resource!r}, {threshold}): see rules/hypervisor.rules.yml")
    vms = e.world.running_on(host)
    caps = e.world.capacities()
    plan = placement.rebalance(caps.hosts, host, vms, threshold, e.world.overcommit(), group_of=e.world.groups(),
                               resource=resource)
    unplaced = {} if plan.load_after <= threshold else {"": plan.reason}
    return e.migrations.run(host, [(m.uuid, m.dst) for m in plan.moves], unplaced, caps, vms,
                            note=f"; {plan.reason}")


PERFORM: Mapping[A, Callable[["Engine", Mapping[str, Any]], Outcome]] = {
    A.VERIFY_VM: verify_vm,
    A.VERIFY_HOST: verify_host,
    A.START_VM: start_vm,
    A.START_VM_ELSEWHERE: start_vm_elsewhere,
    A.REBUILD_VM: rebuild.rebuild_vm,
    A.HANDLE_IO_ERROR: disk_actions.handle_io_error,
    A.FENCE_HOST: fence_host,
    A.EVACUATE_HOST: evacuate_host,
    A.CORDON_HOST: cordon_host,
    A.MIGRATE_AWAY: migrate_away,
    A.REBALANCE_HOST: rebalance_host,
}


def perform(e: "Engine", action: Action) -> Outcome:
    from remediator.reprovision_actions import PERFORM as REPROVISION  # it builds on this module's Outcome

    try:
        fn = PERFORM.get(A(action.kind)) or REPROVISION[A(action.kind)]
    except KeyError:
        raise ValueError(f"the engine does not perform {action.kind} here") from None
    return fn(e, action.params)
