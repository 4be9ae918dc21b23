"""Moving running VMs off a host: live migration one at a time, and the cold fallback for a damaged
host (destroy there, confirm stopped everywhere, start elsewhere). Shared by the damaged drain, the
maintenance drain and rebalancing (remediator/actions.py).

Live migrations off one host run `policy.max_concurrent_migrations` at a time (they share the host's
links and the destinations' memory; placement has already made room for all of them). Each move
records its downtime when libvirt reports it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Mapping, Sequence

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
        results: dict[str, tuple[str, str, Any]] = {}  # name -> (how, dst or words, downtime)
        if e.config.dry_run:
            results = {by_uuid[u].name if u in by_uuid else u: ("would", dst, None) for u, dst in moves}
        else:
            workers = max(1, min(e.config.policy.max_concurrent_migrations, len(moves)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="migrate") as pool:
                futures = {by_uuid[u].name if u in by_uuid else u: pool.submit(self._move, host, u, dst, by_uuid.get(u),
                                                                              cold_fallback)
                           for u, dst in moves}
            results = {name: fut.result() for name, fut in futures.items()}
        moved = {n: dst for n, (how, dst, _) in results.items() if how in ("live", "would")}
        downtime_ms = {n: d for n, (how, _, d) in results.items() if how == "live" and d is not None}
        cold = {n: words for n, (how, words, _) in results.items() if how == "cold"}
        failures = [f"{n}: {words}" for n, (how, words, _) in results.items() if how == "failed"]
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

    def _move(self, host: str, uuid: str, dst: str, vm: ProtectedVM | None,
              cold_fallback: bool) -> tuple[str, str, Any]:
        """One VM: ("live", dst, downtime ms), ("cold", what was done, None) or ("failed", why, None)."""
        e = self.engine
        try:
            with e.vm_lock(uuid):
                result = e.hv.migrate_live(host, dst, uuid)
        except (HostUnreachable, DomainError) as err:
            if not cold_fallback or vm is None or not e.hv.is_reachable(host):  # a cold restart stops it there first
                return "failed", str(err), None
            log.warning("%s: live migration %s -> %s failed (%s): restarting it cold", vm.name, host, dst, err)
            try:
                return "cold", self._cold_restart(host, vm) + f" (live migration failed: {err})", None
            except (HostUnreachable, DomainError) as cold_err:
                return "failed", f"live migration failed ({err}); cold restart failed ({cold_err})", None
        e.world.remember_host(uuid, dst)
        return "live", dst, getattr(result, "downtime_ms", None)

    def _cold_restart(self, host: str, vm: ProtectedVM) -> str:
        """The damaged host still answers: stop the VM there first, then start it once elsewhere. A
        place is found before anything is stopped; if the start there fails, it is started back on
        its damaged host (degraded beats down) and the failure is reported."""
        e = self.engine
        with e.vm_lock(vm.uuid):
            xml = e.hv.domain_xml(host, vm.uuid)  # the definition it ran with, before it is destroyed
            plan, _ = e.world.place([vm], {host})
            dst = plan.assignments.get(vm.uuid)
            if dst is None:
                raise DomainError(host, f"restart {vm.name}", plan.unplaced[vm.uuid] + "; left running here")
            e.hv.destroy(host, vm.uuid)
            running, unknown = e.world.find_running(vm.uuid)
            blockers = e.world.may_still_run_it(vm.uuid, unknown)
            if running:
                return f"stopped on {host}: it already runs on {', '.join(running)}"
            if blockers:  # it ran here a moment ago: put it back rather than risk a second copy elsewhere
                e.hv.start(host, vm.uuid)
                raise DomainError(host, f"restart {vm.name}", f"{', '.join(blockers)} does not answer and is not "
                                  f"fenced: it may run {vm.name} there; started it back here")
            try:
                e.hv.define_and_start(dst, xml)
            except DomainError as err:
                e.hv.start(host, vm.uuid)
                raise DomainError(host, f"restart {vm.name}", f"start on {dst} failed ({err}); started it back "
                                  f"on {host}") from err
            e.hv.undefine(host, vm.uuid)
            e.store.note_vm_location(vm.uuid, host, False, e.clock())
        e.world.remember_host(vm.uuid, dst)
        return f"destroyed on {host}, started on {dst}"
