"""The store's inventory and host rows: protected VMs and where they are defined, host conditions, what
the remediator observed of each host (reachability, load), the storm hold, small settings.

Each of these is a row written by one statement (an upsert), not a JSON document read, changed and
written back, so two writers (threads, later replicas) cannot lose each other's update."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import sqlalchemy as sa

from remediator.model import HostCondition, ProtectedVM
from remediator.store import rows
from remediator.store.base import HostState, KnownVM, KnownVMs, Store
from remediator.store.schema import host_status, hosts, settings, storm, vm_locations, vms

STORM_ROW = 1
# Up to this many UUIDs (and as many names) the webhook's inventory lookup is a prepared statement, one per
# power of two of each (store/prepared.py); a longer list (an alert storm) takes KNOWN_VMS, whose expanding
# IN lists SQLAlchemy rewrites on every call.
PREPARED_IN = 64
_KNOWN = sa.select(vms.c.uuid, vms.c.name, vms.c.protected).order_by(vms.c.updated_at)  # oldest first
KNOWN_VMS = _KNOWN.where(sa.or_(vms.c.uuid.in_(sa.bindparam("uuids", expanding=True)),
                                vms.c.name.in_(sa.bindparam("names", expanding=True))))


def known_vms_query(uuids: int, names: int) -> sa.Select:
    """KNOWN_VMS with IN lists of fixed length: `uuids` UUIDs and `names` names (parameters u0.., n0..)."""
    wanted = [column.in_([sa.bindparam(f"{prefix}{i}", type_=column.type) for i in range(n)])
              for column, prefix, n in ((vms.c.uuid, "u", uuids), (vms.c.name, "n", names)) if n]
    return _KNOWN.where(sa.or_(*wanted))


def padded(values: Sequence[str]) -> list[str]:
    """`values` repeated up to the next power of two: an IN list means the same with a value twice, and the
    lookup then needs one prepared statement per power of two, not one per batch size."""
    if not values:
        return []
    return [*values, *[values[-1]] * ((1 << (len(values) - 1).bit_length()) - len(values))]


class HostRows(Store):
    """Mixed into SQLStore, which provides db, _rows, _one, _insert (the dialect's INSERT ... ON CONFLICT) and
    _prepared (a statement compiled once, store/prepared.py)."""

    def _upsert(self, conn: sa.Connection, table: sa.Table, key: Sequence[str], values: Mapping[str, Any],
                update: Mapping[str, Any] | None = None) -> None:
        stmt = self._insert(table).values(**values)  # type: ignore[attr-defined]
        changes = update if update is not None else {c: stmt.excluded[c] for c in values if c not in key}
        conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=changes(stmt) if callable(changes)
                                                else changes))

    # ---- protected VMs

    def upsert_vm(self, vm: ProtectedVM, at: datetime | None = None) -> None:
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            self._upsert(conn, vms, ["uuid"], dict(
                uuid=vm.uuid.lower(), name=vm.name, host=vm.host, vcpus=vm.vcpus, memory_bytes=vm.memory_bytes,
                priority=vm.priority, anti_affinity_group=vm.group, xml=vm.xml, protected=bool(vm.protected),
                updated_at=at or datetime.now(timezone.utc)))

    def get_vm(self, uuid: str) -> ProtectedVM | None:
        row = self._one(sa.select(vms).where(vms.c.uuid == uuid.lower()))  # type: ignore[attr-defined]
        return rows.vm(row) if row else None

    def find_vm_by_name(self, name: str) -> ProtectedVM | None:
        row = self._one(sa.select(vms).where(vms.c.name == name)  # type: ignore[attr-defined]
                        .order_by(vms.c.updated_at.desc()).limit(1))
        return rows.vm(row) if row else None

    def known_vms(self, uuids: Iterable[str], names: Iterable[str]) -> KnownVMs:
        by_uuid: dict[str, KnownVM] = {}
        by_name: dict[str, KnownVM] = {}
        uuid_list, name_list = sorted({u.lower() for u in uuids}), sorted(set(names))
        if not uuid_list and not name_list:
            return KnownVMs(by_uuid, by_name)
        with self.db.read() as conn:  # type: ignore[attr-defined]
            if len(uuid_list) > PREPARED_IN or len(name_list) > PREPARED_IN:
                found: Iterable[Any] = conn.execute(KNOWN_VMS, {"uuids": uuid_list, "names": name_list})
            else:
                uuid_list, name_list = padded(uuid_list), padded(name_list)
                query = self._prepared(("known_vms", len(uuid_list), len(name_list)),  # type: ignore[attr-defined]
                                       lambda: known_vms_query(len(uuid_list), len(name_list)))
                found = query.rows(conn, {**{f"u{i}": u for i, u in enumerate(uuid_list)},
                                          **{f"n{i}": n for i, n in enumerate(name_list)}})
            for uuid, name, protected in found:  # oldest first: by name, the latest update wins
                by_uuid[uuid] = by_name[name] = KnownVM(uuid, name, bool(protected))
        return KnownVMs(by_uuid, by_name)

    def list_vms(self) -> list[ProtectedVM]:
        return [rows.vm(r) for r in self._rows(sa.select(vms).order_by(vms.c.priority.desc(), vms.c.name))]  # type: ignore[attr-defined]

    def set_host_domains(self, host: str, uuids: Iterable[str], at: datetime) -> None:
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            conn.execute(vm_locations.delete().where(vm_locations.c.host == host))
            found = [{"uuid": u.lower(), "host": host, "seen_at": at} for u in sorted({u.lower() for u in uuids})]
            if found:
                conn.execute(vm_locations.insert(), found)

    def note_vm_location(self, uuid: str, host: str, defined: bool, at: datetime) -> None:
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            if defined:
                self._upsert(conn, vm_locations, ["uuid", "host"], dict(uuid=uuid.lower(), host=host, seen_at=at))
            else:
                conn.execute(vm_locations.delete().where(vm_locations.c.uuid == uuid.lower(),
                                                         vm_locations.c.host == host))

    def hosts_defining(self, uuid: str) -> list[str]:
        query = sa.select(vm_locations.c.host).where(vm_locations.c.uuid == uuid.lower()).order_by(vm_locations.c.host)
        return [r.host for r in self._rows(query)]  # type: ignore[attr-defined]

    # ---- host conditions (hostfsm)

    def set_host_state(self, name: str, condition: HostCondition, reason: str, at: datetime,
                       prior: HostCondition | None = None) -> None:
        def changes(stmt: Any) -> dict[str, Any]:
            return {"reason": stmt.excluded.reason, "prior": stmt.excluded.prior, "condition": stmt.excluded.condition,
                    # `since` moves only when the condition does (SET reads the row as it was)
                    "since": sa.case((hosts.c.condition == stmt.excluded.condition, hosts.c.since),
                                     else_=stmt.excluded.since)}
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            self._upsert(conn, hosts, ["name"], dict(name=name, condition=HostCondition(condition).value,
                                                     reason=reason, since=at, prior=prior.value if prior else None),
                         update=changes)

    def host_states(self) -> dict[str, HostState]:
        return {r.name: HostState(HostCondition(r.condition), r.reason, r.since,
                                  HostCondition(r.prior) if r.prior else None)
                for r in self._rows(sa.select(hosts).order_by(hosts.c.name))}  # type: ignore[attr-defined]

    # ---- observations: reachability and load

    def note_reachability(self, asked: Iterable[str], unreachable: Iterable[str], at: datetime) -> bool:
        asked, unreachable = set(asked), set(unreachable)
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            before = {r.name for r in conn.execute(sa.select(host_status.c.name).where(
                host_status.c.name.in_(asked | unreachable), host_status.c.unreachable_since.is_not(None)))}
            answered = (before & asked) - unreachable
            if answered:
                conn.execute(host_status.update().where(host_status.c.name.in_(answered))
                             .values(unreachable_since=None))
            for host in sorted(unreachable - before):
                self._upsert(conn, host_status, ["name"], dict(name=host, unreachable_since=at))
        return bool(answered or unreachable - before)

    def unreachable_hosts(self) -> dict[str, datetime]:
        query = sa.select(host_status.c.name, host_status.c.unreachable_since).where(
            host_status.c.unreachable_since.is_not(None))
        return {r.name: r.unreachable_since for r in self._rows(query)}  # type: ignore[attr-defined]

    def set_host_loads(self, loads: Mapping[str, tuple[float | None, int | None]], at: datetime, source: str) -> None:
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            for host, (load1, available) in sorted(loads.items()):
                self._upsert(conn, host_status, ["name"], dict(name=host, load1=load1, memory_available_bytes=available,
                                                               load_at=at, load_source=source))

    def host_loads(self) -> dict[str, Any]:
        found = self._rows(sa.select(host_status).where(host_status.c.load_at.is_not(None))  # type: ignore[attr-defined]
                           .order_by(host_status.c.load_at, host_status.c.name))
        if not found:
            return {}
        out: dict[str, Any] = {r.name: {"load1": r.load1, "memory_available_bytes": r.memory_available_bytes}
                               for r in found}
        return {**out, "at": found[-1].load_at, "source": found[-1].load_source}

    # ---- the storm hold

    def storm_hold(self) -> dict[str, Any] | None:
        row = self._one(sa.select(storm).where(storm.c.id == STORM_ROW))  # type: ignore[attr-defined]
        if row is None or row.since is None:
            return None
        return {"active": row.active, "reason": row.reason, "since": row.since, "unhealthy": list(row.unhealthy)}

    def set_storm_hold(self, active: bool, reason: str, unhealthy: Sequence[str], since: datetime) -> None:
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            self._upsert(conn, storm, ["id"], dict(id=STORM_ROW, active=bool(active), reason=reason, since=since,
                                                   unhealthy=list(unhealthy)))

    def storm_release(self) -> dict[str, Any] | None:
        row = self._one(sa.select(storm).where(storm.c.id == STORM_ROW))  # type: ignore[attr-defined]
        if row is None or row.release_by is None:
            return None
        return {"at": row.release_at, "by": row.release_by, "reason": row.release_reason,
                "hosts": list(row.release_hosts or [])}

    def set_storm_release(self, release: Mapping[str, Any] | None) -> None:
        release = release or {}
        values = dict(release_at=release.get("at"), release_by=release.get("by"), release_reason=release.get("reason"),
                      release_hosts=list(release.get("hosts") or []) if release else None)
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            self._upsert(conn, storm, ["id"], dict(id=STORM_ROW, active=False, unhealthy=[], **values),
                         update=values)

    # ---- settings

    def get_setting(self, key: str) -> Any | None:
        row = self._one(sa.select(settings.c.value).where(settings.c.key == key))  # type: ignore[attr-defined]
        return row.value if row else None

    def set_setting(self, key: str, value: Any) -> None:
        with self.db.tx() as conn:  # type: ignore[attr-defined]
            if value is None:
                conn.execute(settings.delete().where(settings.c.key == key))
            else:
                self._upsert(conn, settings, ["key"], dict(key=key, value=value))
