"""Moving running VMs off a host: live migration one at a time, and the cold fallback for a damaged
host (destroy there, confirm stopped everywhere, start elsewhere). Shared by the damaged drain, the
maintenance drain and rebalancing (remediator/actions.py).

Live migrations run one at a time: they compete for the same links and the same destination memory,
and a sequence is what an operator can follow. Each move records its downtime when libvirt reports it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Mapping, Sequence

from remediator.actions import Outcome
from remediator.edges.libvirt import DomainError, HostUnreachable
from remediator.fsm import EventKind as E
from remediator.model import ProtectedVM
from remediator.world import Capacities

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)


class Migrations:
    def __init__(self, engine: "Engine"):
        self.engine = engine

    def run(self, host: str, moves: Sequence[tuple[str, str]], unplaced: Mapping[str, str], caps: Capacities,
            vms: Sequence[ProtectedVM], *, cold_fallback: bool = False, note: str = "") -> Outcome:
        e = self.engine
        by_uuid = {vm.uuid: vm for vm in vms}
        moved: dict[str, str] = {}
        downtime_ms: dict[str, float] = {}
        cold: dict[str, str] = {}
        failures: list[str] = []
        for uuid, dst in moves:
            name = by_uuid[uuid].name if uuid in by_uuid else uuid
            if e.config.dry_run:
                moved[name] = dst
                continue
            try:
                with e.vm_lock(uuid):
                    result = e.hv.migrate_live(host, dst, uuid)
            except (HostUnreachable, DomainError) as err:
                if not cold_fallback or not e.hv.is_reachable(host):  # a cold restart needs the host to stop it
                    failures.append(f"{name}: {err}")
                    continue
                log.warning("%s: live migration %s -> %s failed (%s): restarting it cold", name, host, dst, err)
                try:
                    cold[name] = self._cold_restart(host, by_uuid[uuid]) + f" (live migration failed: {err})"
                except (HostUnreachable, DomainError) as cold_err:
                    failures.append(f"{name}: live migration failed ({err}); cold restart failed ({cold_err})")
                continue
            e.world.remember_host(uuid, dst)
            moved[name] = dst
            downtime = getattr(result, "downtime_ms", None)
            if downtime is not None:
                downtime_ms[name] = downtime
        data = {"moves": moved, "migration_downtime_ms": downtime_ms, "cold_restarts": cold,
                "load_source": caps.load_source}
        verb = "would migrate (dry run)" if e.config.dry_run else "migrated"
        detail = f"{len(moved)} {verb}" + "".join(f"; {why}" for why in unplaced.values())
        if cold:
            detail += f"; {len(cold)} restarted cold: " + "; ".join(f"{n} {how}" for n, how in cold.items())
        if failures:
            detail += f"; {len(failures)} failed: " + "; ".join(failures)
        ok = not failures and not unplaced
        return Outcome(E.ACTION_OK if ok else E.ACTION_FAILED, ok, detail + note + caps.note, data=data)

    def _cold_restart(self, host: str, vm: ProtectedVM) -> str:
        """The damaged host still answers: stop the VM there first, then start it once elsewhere."""
        e = self.engine
        with e.vm_lock(vm.uuid):
            xml = e.hv.domain_xml(host, vm.uuid)  # the definition it ran with, before it is destroyed
            e.hv.destroy(host, vm.uuid)
            running, unknown = e.world.find_running(vm.uuid)
            if running:
                return f"already runs on {', '.join(running)}"
            blockers = e.world.may_still_run_it(vm.uuid, unknown)
            if blockers:
                raise DomainError(host, f"restart {vm.name}", f"{', '.join(blockers)} does not answer and is not "
                                  f"fenced: it may still run {vm.name}")
            plan, _ = e.world.place([vm], {host} | set(unknown))
            dst = plan.assignments.get(vm.uuid)
            if dst is None:
                raise DomainError(host, f"restart {vm.name}", plan.unplaced[vm.uuid])
            e.hv.define_and_start(dst, xml)
            e.hv.undefine(host, vm.uuid)
            e.store.note_vm_location(vm.uuid, host, False, e.clock())
        e.world.remember_host(vm.uuid, dst)
        return f"destroyed on {host}, started on {dst}"
