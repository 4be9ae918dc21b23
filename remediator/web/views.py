"""Read models built from the config and the store, shared by the API and `remediator status`."""

from __future__ import annotations

from typing import Any

from remediator.config import Config
from remediator.model import HostCondition, host_of_subject
from remediator.store.base import Store
from remediator.web.context import plain

MAX_LIMIT = 1000


def hosts_view(config: Config, store: Store) -> dict[str, Any]:
    """Every inventory host with its condition, schedulability, last load and VMs, plus the storm hold."""
    states = store.host_states()
    load = store.host_loads()
    vms = store.list_vms()
    host_incidents: dict[str, list[int]] = {}
    for i in store.list_incidents(open_only=True, limit=MAX_LIMIT):
        name = host_of_subject(i.subject)
        if name is not None:
            host_incidents.setdefault(name, []).append(i.id)
    hosts = []
    for h in config.hosts:
        state = states.get(h.name)
        condition = state.condition if state else HostCondition.UP
        incidents = sorted(host_incidents.get(h.name, []))
        hosts.append(
            {
                "name": h.name,
                "uri": h.uri,
                "condition": condition.value,
                "reason": state.reason if state else "",
                "since": state.since.isoformat() if state else None,
                "schedulable": condition is HostCondition.UP,
                "fence_agent": h.fence.agent if h.fence else None,
                "power_devices": [d.agent for d in h.power],  # in order: fencing levels
                "reprovision": {"damaged": h.reprovision.damaged, "fenced": h.reprovision.fenced},
                "labels": dict(h.labels),
                "load": plain(load.get(h.name)),
                "vms": [
                    {"uuid": v.uuid, "name": v.name, "priority": v.priority, "protected": v.protected, "group": v.group}
                    for v in vms
                    if v.host == h.name
                ],
                "open_incident": incidents[0] if incidents else None,
                "open_incidents": incidents,  # one per kind: down, damaged, overloaded, maintenance
            }
        )
    return {
        "hosts": hosts,
        "load_at": plain(load.get("at")),
        "load_source": load.get("source"),
        "storm": plain(store.storm_hold() or {"active": False}),
    }


def vms_view(config: Config, store: Store) -> list[dict[str, Any]]:
    """Protected VMs: what the inventory sync stored, plus declared ones it has not seen yet."""
    rows = []
    seen_names = set()
    for v in store.list_vms():
        declared = config.vm(uuid=v.uuid, name=v.name)
        if not (v.protected or declared):
            continue
        seen_names.add(v.name)
        rows.append({"name": v.name, "uuid": v.uuid, "host": v.host, "priority": v.priority, "group": v.group,
                     "vcpus": v.vcpus, "memory_bytes": v.memory_bytes, "definition": bool(v.xml)})
    for d in config.vms:
        if d.name not in seen_names and (d.uuid is None or store.get_vm(d.uuid) is None):
            rows.append({"name": d.name, "uuid": d.uuid, "host": None, "priority": d.priority, "group": d.group,
                         "vcpus": None, "memory_bytes": None, "definition": False})
    return rows
