"""The store in one SQLite file, in WAL mode (readers such as `remediator status` never block the service).

One connection shared by the service's threads behind a lock: writes are short, and a single writer
is what SQLite serialises anyway. Transactions are explicit (`BEGIN IMMEDIATE`), synchronous=FULL so
a commit acknowledged to Alertmanager survives a crash. The schema is versioned in PRAGMA user_version
and migrated forward on open; the one-open-incident-per-subject rule is a partial unique index.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from remediator.model import (
    Action,
    Alert,
    AlertStatus,
    Event,
    HostCondition,
    Incident,
    ProtectedVM,
    Remediation,
)
from remediator.store.base import (
    ALERT_OUTCOMES,
    DecisionLike,
    HostState,
    IncidentExists,
    Intent,
    NotFound,
    QueuedEvent,
    Store,
    StoreError,
    StoredAlert,
    TransitionRecord,
)

# Each entry migrates from version i to i+1; never edit a released entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        status TEXT NOT NULL,
        remediation TEXT NOT NULL,
        alertname TEXT NOT NULL,
        host TEXT NOT NULL,
        vm TEXT,
        uuid TEXT,
        ends_at TEXT,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        received_at TEXT NOT NULL,
        outcome TEXT CHECK (outcome IN ('incident', 'ignored', 'duplicate')),
        incident_id INTEGER REFERENCES incidents(id),
        reason TEXT NOT NULL DEFAULT '',
        UNIQUE (fingerprint, starts_at, status)
    );
    CREATE INDEX alerts_pending ON alerts(id) WHERE outcome IS NULL;

    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        host TEXT NOT NULL,
        vm_uuid TEXT,
        vm_name TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        opened_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        closed_at TEXT,
        data TEXT NOT NULL DEFAULT '{}'
    );
    -- the heart of "one open incident per subject": enforced here, whatever the callers do
    CREATE UNIQUE INDEX incidents_one_open_per_subject ON incidents(subject) WHERE closed_at IS NULL;

    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        at TEXT NOT NULL,
        from_state TEXT,
        event_kind TEXT NOT NULL,
        event_at TEXT NOT NULL,
        event_detail TEXT NOT NULL,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL,
        actions TEXT NOT NULL
    );
    CREATE INDEX transitions_by_incident ON transitions(incident_id, id);

    CREATE TABLE intents (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        kind TEXT NOT NULL,
        params TEXT NOT NULL,
        at TEXT NOT NULL,
        finished_at TEXT,
        ok INTEGER,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX intents_unfinished ON intents(id) WHERE finished_at IS NULL;
    CREATE INDEX intents_by_incident ON intents(incident_id, id);

    CREATE TABLE vms (
        uuid TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        host TEXT,
        vcpus INTEGER NOT NULL,
        memory_bytes INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        anti_affinity_group TEXT,
        xml TEXT NOT NULL,
        protected INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX vms_by_name ON vms(name);

    CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        condition TEXT NOT NULL,
        reason TEXT NOT NULL,
        since TEXT NOT NULL
    );

    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: operator requests and other non-alert events, queued durably like alerts
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        kind TEXT NOT NULL,
        at TEXT NOT NULL,
        detail TEXT NOT NULL,
        outcome TEXT,
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_pending ON events(id) WHERE outcome IS NULL;
    """,
    # 3: host conditions remember what a down host was (hostfsm); "damaged" is now "cordoned"; one open
    # incident per (host, kind); where each VM is or was defined, for "may it still run there?"
    """
    ALTER TABLE hosts ADD COLUMN prior TEXT;
    UPDATE hosts SET condition = 'cordoned' WHERE condition = 'damaged';
    UPDATE incidents SET subject = subject || ':damaged'
        WHERE kind = 'host_damaged' AND subject NOT LIKE 'host:%:%';
    UPDATE incidents SET subject = subject || ':overloaded'
        WHERE kind = 'host_overloaded' AND subject NOT LIKE 'host:%:%';
    CREATE TABLE vm_locations (
        uuid TEXT NOT NULL,
        host TEXT NOT NULL,
        seen_at TEXT NOT NULL,
        PRIMARY KEY (uuid, host)
    );
    """,
)


class SQLiteStore(Store):
    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._local = threading.local()  # this thread's transaction depth (atomic() nests)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly a `with _tx()`.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite store {self.path}: {e}") from e

    # ---- plumbing

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            current = self.schema_version
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this remediator knows ({len(MIGRATIONS)})"
                )
            for version in range(current, len(MIGRATIONS)):
                # executescript commits first, so wrap the step and its version bump in our own transaction
                try:
                    self._db.executescript(
                        f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
                    )
                except sqlite3.Error as e:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise StoreError(f"{self.path}: migration to schema version {version + 1} failed: {e}") from e

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One unit of work: every store call this thread makes inside commits together, or none does."""
        with self._tx():
            yield

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            depth = getattr(self._local, "depth", 0)
            self._local.depth = depth + 1
            try:
                if depth:
                    yield self._db  # inside this thread's transaction: the outermost commits or rolls back
                    return
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as e:
                    raise StoreError(f"{self.path}: cannot begin a transaction: {e}") from e
                try:
                    yield self._db
                except sqlite3.IntegrityError:
                    self._db.execute("ROLLBACK")
                    raise  # callers turn a refused invariant into their own error (IncidentExists)
                except sqlite3.Error as e:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"{self.path}: {e}") from e
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as e:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"{self.path}: commit failed: {e}") from e
            finally:
                self._local.depth = depth

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from e

    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- alerts

    def record_alerts(
        self, alerts: Sequence[Alert], received_at: datetime, ignore_reasons: Sequence[str | None] | None = None
    ) -> list[StoredAlert]:
        if ignore_reasons is not None and len(ignore_reasons) != len(alerts):
            raise ValueError(f"ignore_reasons has {len(ignore_reasons)} entries for {len(alerts)} alerts")
        stored: list[StoredAlert] = []
        with self._tx() as db:
            for i, a in enumerate(alerts):
                reason = ignore_reasons[i] if ignore_reasons is not None else None
                key = (a.fingerprint, _t(a.starts_at), a.status.value)
                cur = db.execute(
                    """INSERT INTO alerts (fingerprint, starts_at, status, remediation, alertname, host, vm, uuid,
                           ends_at, labels, annotations, received_at, outcome, reason)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (fingerprint, starts_at, status) DO NOTHING""",
                    (
                        *key,
                        a.remediation.value,
                        a.alertname,
                        a.host,
                        a.vm,
                        a.uuid,
                        _t(a.ends_at),
                        _dumps(dict(a.labels)),
                        _dumps(dict(a.annotations)),
                        _t(received_at),
                        "ignored" if reason is not None else None,
                        reason or "",
                    ),
                )
                new = cur.rowcount == 1
                row = db.execute(
                    "SELECT * FROM alerts WHERE fingerprint = ? AND starts_at = ? AND status = ?", key
                ).fetchone()
                stored.append(_stored_alert(row, new=new))
        return stored

    def pending_alerts(self) -> list[StoredAlert]:
        return [_stored_alert(r, new=True) for r in self._read("SELECT * FROM alerts WHERE outcome IS NULL ORDER BY id")]

    def recent_alerts(self, limit: int = 100) -> list[StoredAlert]:
        return [
            _stored_alert(r, new=r["outcome"] is None)
            for r in self._read("SELECT * FROM alerts ORDER BY id DESC LIMIT ?", (limit,))
        ]

    def mark_alert(self, alert_id: int, outcome: str, incident_id: int | None, reason: str) -> None:
        if outcome not in ALERT_OUTCOMES:
            raise ValueError(f"alert outcome must be one of {ALERT_OUTCOMES}, got {outcome!r}")
        with self._tx() as db:
            cur = db.execute(
                "UPDATE alerts SET outcome = ?, incident_id = ?, reason = ? WHERE id = ?",
                (outcome, incident_id, reason, alert_id),
            )
            if cur.rowcount != 1:
                raise NotFound(f"alert {alert_id} not found")

    # ---- incidents

    def open_incident_for(self, subject: str) -> Incident | None:
        rows = self._read("SELECT * FROM incidents WHERE subject = ? AND closed_at IS NULL", (subject,))
        return _incident(rows[0]) if rows else None

    def latest_incident_for(self, subject: str) -> Incident | None:
        rows = self._read("SELECT * FROM incidents WHERE subject = ? ORDER BY id DESC LIMIT 1", (subject,))
        return _incident(rows[0]) if rows else None

    def get_incident(self, incident_id: int) -> Incident:
        rows = self._read("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if not rows:
            raise NotFound(f"incident {incident_id} not found")
        return _incident(rows[0])

    def list_incidents(self, open_only: bool = False, limit: int = 100) -> list[Incident]:
        where = "WHERE closed_at IS NULL" if open_only else ""
        rows = self._read(
            f"SELECT * FROM incidents {where} ORDER BY closed_at IS NOT NULL, id DESC LIMIT ?", (limit,)
        )
        return [_incident(r) for r in rows]

    def incident_counts(self) -> dict[str, int]:
        rows = self._read("SELECT state, count(*) AS n FROM incidents WHERE closed_at IS NULL GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def create_incident(
        self,
        subject: str,
        kind: Remediation,
        host: str,
        vm_uuid: str | None,
        vm_name: str | None,
        state: str,
        reason: str,
        at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> Incident:
        try:
            with self._tx() as db:
                cur = db.execute(
                    """INSERT INTO incidents (subject, kind, state, host, vm_uuid, vm_name, reason, opened_at,
                           updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (subject, Remediation(kind).value, state, host, vm_uuid, vm_name, reason, _t(at), _t(at),
                     _dumps(dict(data or {}))),
                )
                row = db.execute("SELECT * FROM incidents WHERE id = ?", (cur.lastrowid,)).fetchone()
        except sqlite3.IntegrityError as e:
            existing = self.open_incident_for(subject)
            if existing is None:
                raise StoreError(f"cannot create incident for {subject}: {e}") from e
            raise IncidentExists(subject, existing.id) from e
        return _incident(row)

    def apply_transition(self, incident_id: int, at: datetime, event: Event, decision: DecisionLike) -> Incident:
        with self._tx() as db:
            row = db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise NotFound(f"incident {incident_id} not found")
            if row["closed_at"] is not None:
                raise StoreError(f"incident {incident_id} is closed; no transition applies to it")
            next_state = str(decision.next_state)
            attempts = getattr(decision, "attempts", None)
            if attempts is None:
                attempts = row["attempts"] if next_state == row["state"] else 0
            data = json.loads(row["data"], object_hook=_decode)
            extra = getattr(decision, "data", None)
            if extra:
                data.update(extra)
            db.execute(
                """UPDATE incidents SET state = ?, attempts = ?, reason = ?, updated_at = ?, closed_at = ?, data = ?
                   WHERE id = ?""",
                (next_state, int(attempts), decision.reason, _t(at), _t(at) if decision.closes else None,
                 _dumps(data), incident_id),
            )
            db.execute(
                """INSERT INTO transitions (incident_id, at, from_state, event_kind, event_at, event_detail, to_state,
                       reason, actions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (incident_id, _t(at), row["state"], str(event.kind), _t(event.at), _dumps(dict(event.detail)),
                 next_state, decision.reason, _dumps([_action_json(a) for a in decision.actions])),
            )
            updated = db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return _incident(updated)

    def history(self, incident_id: int) -> list[TransitionRecord]:
        rows = self._read("SELECT * FROM transitions WHERE incident_id = ? ORDER BY id", (incident_id,))
        return [
            TransitionRecord(
                at=_dt(r["at"]),
                from_state=r["from_state"],
                event=Event(kind=r["event_kind"], at=_dt(r["event_at"]), detail=_loads(r["event_detail"])),
                to_state=r["to_state"],
                reason=r["reason"],
                actions=tuple(Action(kind=a["kind"], params=a["params"]) for a in _loads(r["actions"])),
            )
            for r in rows
        ]

    # ---- queued events

    def enqueue_event(self, subject: str, event: Event) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO events (subject, kind, at, detail) VALUES (?, ?, ?, ?)",
                (subject, str(event.kind), _t(event.at), _dumps(dict(event.detail))),
            )
            return int(cur.lastrowid)

    def get_event(self, event_id: int) -> QueuedEvent:
        rows = self._read("SELECT * FROM events WHERE id = ?", (event_id,))
        if not rows:
            raise NotFound(f"event {event_id} not found")
        return _queued(rows[0])

    def pending_events(self) -> list[QueuedEvent]:
        return [_queued(r) for r in self._read("SELECT * FROM events WHERE outcome IS NULL ORDER BY id")]

    def mark_event(self, event_id: int, outcome: str, reason: str) -> None:
        with self._tx() as db:
            if db.execute("UPDATE events SET outcome = ?, reason = ? WHERE id = ?", (outcome, reason, event_id)).rowcount != 1:
                raise NotFound(f"event {event_id} not found")

    # ---- intents

    def record_intent(self, incident_id: int, action: Action, at: datetime) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO intents (incident_id, kind, params, at) VALUES (?, ?, ?, ?)",
                (incident_id, str(action.kind), _dumps(dict(action.params)), _t(at)),
            )
            return int(cur.lastrowid)

    def record_result(self, intent_id: int, ok: bool, detail: str, at: datetime) -> None:
        with self._tx() as db:
            row = db.execute("SELECT finished_at FROM intents WHERE id = ?", (intent_id,)).fetchone()
            if row is None:
                raise NotFound(f"intent {intent_id} not found")
            if row["finished_at"] is not None:
                raise StoreError(f"intent {intent_id} already has a result (finished {row['finished_at']})")
            db.execute(
                "UPDATE intents SET finished_at = ?, ok = ?, detail = ? WHERE id = ?",
                (_t(at), int(bool(ok)), detail, intent_id),
            )

    def unfinished_intents(self) -> list[Intent]:
        return [_intent(r) for r in self._read("SELECT * FROM intents WHERE finished_at IS NULL ORDER BY id")]

    def intents(self, incident_id: int) -> list[Intent]:
        return [_intent(r) for r in self._read("SELECT * FROM intents WHERE incident_id = ? ORDER BY id", (incident_id,))]

    # ---- inventory

    def upsert_vm(self, vm: ProtectedVM, at: datetime | None = None) -> None:
        with self._tx() as db:
            db.execute(
                """INSERT INTO vms (uuid, name, host, vcpus, memory_bytes, priority, anti_affinity_group, xml,
                       protected, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, host = excluded.host,
                       vcpus = excluded.vcpus, memory_bytes = excluded.memory_bytes, priority = excluded.priority,
                       anti_affinity_group = excluded.anti_affinity_group, xml = excluded.xml,
                       protected = excluded.protected, updated_at = excluded.updated_at""",
                (vm.uuid.lower(), vm.name, vm.host, vm.vcpus, vm.memory_bytes, vm.priority, vm.group, vm.xml,
                 int(vm.protected), _t(at or datetime.now(timezone.utc))),
            )

    def get_vm(self, uuid: str) -> ProtectedVM | None:
        rows = self._read("SELECT * FROM vms WHERE uuid = ?", (uuid.lower(),))
        return _vm(rows[0]) if rows else None

    def find_vm_by_name(self, name: str) -> ProtectedVM | None:
        rows = self._read("SELECT * FROM vms WHERE name = ? ORDER BY updated_at DESC LIMIT 1", (name,))
        return _vm(rows[0]) if rows else None

    def list_vms(self) -> list[ProtectedVM]:
        return [_vm(r) for r in self._read("SELECT * FROM vms ORDER BY priority DESC, name")]

    def set_host_state(self, name: str, condition: HostCondition, reason: str, at: datetime,
                       prior: HostCondition | None = None) -> None:
        with self._tx() as db:
            db.execute(
                """INSERT INTO hosts (name, condition, reason, since, prior) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET reason = excluded.reason, prior = excluded.prior,
                       since = CASE WHEN hosts.condition = excluded.condition THEN hosts.since ELSE excluded.since END,
                       condition = excluded.condition""",
                (name, HostCondition(condition).value, reason, _t(at), prior.value if prior else None),
            )

    def host_states(self) -> dict[str, HostState]:
        return {
            r["name"]: HostState(HostCondition(r["condition"]), r["reason"], _dt(r["since"]),
                                 HostCondition(r["prior"]) if r["prior"] else None)
            for r in self._read("SELECT * FROM hosts ORDER BY name")
        }

    def set_host_domains(self, host: str, uuids: Iterable[str], at: datetime) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM vm_locations WHERE host = ?", (host,))
            db.executemany("INSERT INTO vm_locations (uuid, host, seen_at) VALUES (?, ?, ?)",
                           [(u.lower(), host, _t(at)) for u in sorted(set(uuids))])

    def note_vm_location(self, uuid: str, host: str, defined: bool, at: datetime) -> None:
        with self._tx() as db:
            if defined:
                db.execute("""INSERT INTO vm_locations (uuid, host, seen_at) VALUES (?, ?, ?)
                              ON CONFLICT (uuid, host) DO UPDATE SET seen_at = excluded.seen_at""",
                           (uuid.lower(), host, _t(at)))
            else:
                db.execute("DELETE FROM vm_locations WHERE uuid = ? AND host = ?", (uuid.lower(), host))

    def hosts_defining(self, uuid: str) -> list[str]:
        return [r["host"] for r in self._read("SELECT host FROM vm_locations WHERE uuid = ? ORDER BY host",
                                              (uuid.lower(),))]

    # ---- settings

    def get_setting(self, key: str) -> Any | None:
        rows = self._read("SELECT value FROM settings WHERE key = ?", (key,))
        return _loads(rows[0]["value"]) if rows else None

    def set_setting(self, key: str, value: Any) -> None:
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                db.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, _dumps(value)),
                )


# ---- row <-> model


def _t(value: datetime | None) -> str | None:
    """UTC, fixed width: text order is time order."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware UTC times only")
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _encode(value: Any) -> Any:
    # Datetimes in event details and action params survive the round trip as datetimes.
    if isinstance(value, datetime):
        return {"__datetime__": _t(value)}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot store {type(value).__name__} {value!r} as JSON")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "__datetime__" in obj:
        return _dt(obj["__datetime__"])
    return obj


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_encode, sort_keys=True)


def _loads(text: str) -> Any:
    return json.loads(text, object_hook=_decode)


def _action_json(action: Action) -> dict[str, Any]:
    return {"kind": str(action.kind), "params": dict(action.params)}


def _stored_alert(row: sqlite3.Row, *, new: bool) -> StoredAlert:
    return StoredAlert(
        id=row["id"],
        alert=Alert(
            fingerprint=row["fingerprint"],
            status=AlertStatus(row["status"]),
            remediation=Remediation(row["remediation"]),
            alertname=row["alertname"],
            host=row["host"],
            starts_at=_dt(row["starts_at"]),
            ends_at=_dt(row["ends_at"]),
            vm=row["vm"],
            uuid=row["uuid"],
            labels=_loads(row["labels"]),
            annotations=_loads(row["annotations"]),
        ),
        received_at=_dt(row["received_at"]),
        new=new,
        outcome=row["outcome"],
        incident_id=row["incident_id"],
        reason=row["reason"],
    )


def _incident(row: sqlite3.Row) -> Incident:
    return Incident(
        id=row["id"],
        subject=row["subject"],
        kind=Remediation(row["kind"]),
        state=row["state"],
        host=row["host"],
        opened_at=_dt(row["opened_at"]),
        updated_at=_dt(row["updated_at"]),
        vm_uuid=row["vm_uuid"],
        vm_name=row["vm_name"],
        attempts=row["attempts"],
        reason=row["reason"],
        closed_at=_dt(row["closed_at"]),
        data=_loads(row["data"]),
    )


def _queued(row: sqlite3.Row) -> QueuedEvent:
    return QueuedEvent(
        id=row["id"],
        subject=row["subject"],
        event=Event(kind=row["kind"], at=_dt(row["at"]), detail=_loads(row["detail"])),
        outcome=row["outcome"],
        reason=row["reason"],
    )


def _intent(row: sqlite3.Row) -> Intent:
    return Intent(
        id=row["id"],
        incident_id=row["incident_id"],
        action=Action(kind=row["kind"], params=_loads(row["params"])),
        at=_dt(row["at"]),
        finished_at=_dt(row["finished_at"]),
        ok=None if row["ok"] is None else bool(row["ok"]),
        detail=row["detail"],
    )


def _vm(row: sqlite3.Row) -> ProtectedVM:
    return ProtectedVM(
        uuid=row["uuid"],
        name=row["name"],
        host=row["host"],
        vcpus=row["vcpus"],
        memory_bytes=row["memory_bytes"],
        priority=row["priority"],
        group=row["anti_affinity_group"],
        xml=row["xml"],
        protected=bool(row["protected"]),
    )
