"""What the hypervisors show vs what the remediator protects: plain functions the scheduler calls.

- `sync_inventory` keeps the last known definition (domain XML) of every protected VM, and where it
  runs, so a VM can be defined on another host when its own host is gone.
- `reconcile` catches what alerts missed (alerts can be lost): a protected VM shut off by a crash
  with no open incident becomes a VM-down alert stored like any other, so it takes the one way in;
  a stale copy left defined on a host that came back is undefined when the VM runs elsewhere; a
  VM running on two hosts at once is reported loudly (which copy to stop is an operator's call).

A VM is protected when the config declares it (`vms:`), or its domain XML carries
`<rem:ha xmlns:rem="urn:remediator:ha:1" protected="true" priority=".." group=".."/>` in its
metadata; a declaration in the config wins over the metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from exporter.domains import DefinitionError, parse_definition
from remediator.edges.libvirt import DomainError, DomainInfo, HostUnreachable
from remediator.model import Alert, AlertStatus, HostCondition, ProtectedVM, Remediation, vm_subject
from remediator.store.base import Store

log = logging.getLogger(__name__)

# libvirt's VIR_DOMAIN_SHUTOFF_* reasons that mean the VM stopped without anyone asking:
# crashed (3), failed to start (6), daemon gone (8). shutdown (1) and destroyed (2) were asked for.
UNASKED_SHUTOFF = frozenset({3, 6, 8})
RECONCILE_ALERTNAME = "RemediatorReconcileVMDown"


@dataclass(frozen=True)
class Finding:
    kind: str  # "vm_down_without_incident", "stale_copy_undefined", "stale_copy_kept", "running_twice"
    uuid: str
    host: str
    detail: str


@dataclass(frozen=True)
class SyncReport:
    protected: int
    updated: int
    unreachable: tuple[str, ...]


def observe(config, hypervisors) -> tuple[dict[str, list[DomainInfo]], list[str]]:
    """Every reachable host's domains (one bulk call per host), and the hosts that did not answer."""
    seen, unreachable = {}, []
    for host in config.host_uris:
        try:
            seen[host] = hypervisors.domains(host)
        except HostUnreachable:
            unreachable.append(host)
    return seen, unreachable


def sync_inventory(config, store: Store, hypervisors, now: datetime) -> SyncReport:
    """Store the definition and location of every protected VM the reachable hosts show."""
    seen, unreachable = observe(config, hypervisors)
    where: dict[str, list[tuple[str, DomainInfo]]] = {}
    for host, domains in seen.items():
        store.set_host_domains(host, [d.uuid for d in domains], now)  # unreachable hosts keep what was known
        for d in domains:
            where.setdefault(d.uuid, []).append((host, d))
    protected = updated = 0
    for uuid, copies in sorted(where.items()):
        known = store.get_vm(uuid)
        # Where it runs; else where the store last had it, if still defined there; else the first copy.
        alive = [h for h, d in copies if d.alive]
        hosts = [h for h, _ in copies]
        if not alive and known is not None and known.host in unreachable:
            # Its host does not answer, so it may still run there (or be fenced with it). A copy only
            # defined elsewhere (a start cut short by a crash, a stale copy) is not where it lives:
            # moving the record there would hide it from its host's evacuation.
            protected += known.protected
            continue
        host = alive[0] if alive else (known.host if known and known.host in hosts else hosts[0])
        try:
            xml = hypervisors.domain_xml(host, uuid)
            definition = parse_definition(xml)
        except (HostUnreachable, DomainError, DefinitionError) as err:
            log.warning("inventory: cannot read the definition of %s on %s: %s", uuid, host, err)
            continue
        declared = config.vm(uuid=uuid, name=definition.name)
        is_protected = declared is not None or definition.ha.protected
        if not is_protected and known is None:
            continue
        vm = ProtectedVM(
            uuid=uuid, name=definition.name, host=host, vcpus=definition.vcpus,
            memory_bytes=definition.memory_bytes,
            priority=declared.priority if declared else definition.ha.priority,
            group=(declared.group if declared else definition.ha.group) or None,
            xml=xml, protected=is_protected)
        protected += is_protected
        if vm != known:
            store.upsert_vm(vm, now)
            updated += 1
    return SyncReport(protected, updated, tuple(unreachable))


def reconcile(config, store: Store, hypervisors, now: datetime,
              down_reasons: frozenset[int] = UNASKED_SHUTOFF) -> list[Finding]:
    """Compare the hypervisors with the inventory; store a VM-down alert for each crash nobody reported.

    `down_reasons`: the shut-off reason codes that count as down (tests widen it: libvirt's test
    driver cannot crash a domain, only destroy it)."""
    seen, unreachable = observe(config, hypervisors)
    conditions = {name: HostCondition(s.condition) for name, s in store.host_states().items()}
    findings: list[Finding] = []
    alive_on: dict[str, list[str]] = {}
    for host, domains in seen.items():
        for d in domains:
            if d.alive:
                alive_on.setdefault(d.uuid, []).append(host)
    alerts = []
    for vm in store.list_vms():
        if not vm.protected:
            continue
        running = alive_on.get(vm.uuid, [])
        if len(running) > 1:
            findings.append(Finding("running_twice", vm.uuid, ",".join(sorted(running)),
                                    f"{vm.name} runs on {', '.join(sorted(running))}: an operator must stop one"))
            log.error("reconcile: %s (%s) runs on %s at once", vm.name, vm.uuid, ", ".join(sorted(running)))
        for host, domains in seen.items():
            for d in domains:
                if d.uuid != vm.uuid or d.alive:
                    continue
                if running and host not in running:
                    findings.append(_undefine_stale(hypervisors, host, vm, running))
                elif (not running and host == vm.host and d.reason in down_reasons
                      and conditions.get(host, HostCondition.UP) is HostCondition.UP
                      and store.open_incident_for(vm_subject(vm.uuid)) is None
                      and not (config.dry_run and _dry_run_left_it_down(store, vm.uuid))):
                    findings.append(Finding("vm_down_without_incident", vm.uuid, host,
                                            f"{vm.name} is shut off (reason code {d.reason}) with no incident"))
                    alerts.append(Alert(
                        fingerprint=f"reconcile-{vm.uuid}", status=AlertStatus.FIRING,
                        remediation=Remediation.VM_DOWN, alertname=RECONCILE_ALERTNAME, host=host, starts_at=now,
                        vm=vm.name, uuid=vm.uuid, labels={"source": "reconcile"},
                        annotations={"summary": "found by the reconcile pass: no alert came"}))
    if alerts:
        store.record_alerts(alerts, now)
    return findings


def _dry_run_left_it_down(store: Store, uuid: str) -> bool:
    """In a dry run nothing restarts a crashed VM: its last incident already said what would be done,
    and a new one every reconcile pass would only repeat it."""
    last = store.latest_incident_for(vm_subject(uuid))
    return last is not None and not last.is_open and last.reason.startswith("dry run")


def _undefine_stale(hypervisors, host: str, vm: ProtectedVM, running: list[str]) -> Finding:
    """A copy defined on `host` while the VM runs elsewhere must never start: undefine it."""
    try:
        hypervisors.undefine(host, vm.uuid)
    except (HostUnreachable, DomainError) as err:
        return Finding("stale_copy_kept", vm.uuid, host, f"could not undefine the stale copy of {vm.name}: {err}")
    log.info("reconcile: undefined the stale copy of %s on %s (it runs on %s)", vm.name, host, ", ".join(running))
    return Finding("stale_copy_undefined", vm.uuid, host, f"{vm.name} runs on {', '.join(running)}")
