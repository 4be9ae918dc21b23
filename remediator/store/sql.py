"""The store on SQLAlchemy Core: alerts, incidents, queued events and intents (inventory, host rows and
the storm hold in sql_hosts.py). Connections, units of work and migrations are database.py's."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from remediator.model import Action, Alert, Event, Incident, Remediation
from remediator.store import rows
from remediator.store.base import (
    ALERT_OUTCOMES,
    DecisionLike,
    IncidentExists,
    Intent,
    NotFound,
    QueuedEvent,
    StoreError,
    StoredAlert,
    TransitionConflict,
    TransitionRecord,
)
from remediator.store.database import Database
from remediator.store.groupcommit import GroupCommit
from remediator.store.prepared import Prepared
from remediator.store.schema import alerts, events, incidents, intents, transitions
from remediator.store.lease import LeaseRows
from remediator.store.sql_hosts import HostRows

# one webhook POST's alerts: (alerts, received_at, ignore_reasons)
_AlertBatch = tuple[tuple[Alert, ...], datetime, "tuple[str | None, ...] | None"]
# the columns an alert's INSERT sets (_alert_values); the rest are the database's (id) or come later (incident_id)
ALERT_COLUMNS = ("fingerprint", "starts_at", "status", "remediation", "alertname", "host", "vm", "uuid", "ends_at",
                 "labels", "annotations", "received_at", "outcome", "reason")
# Up to this many new alerts, a batch's INSERT is a prepared statement (one per row count: a bounded set);
# a bigger batch (an alert storm) goes through SQLAlchemy's insertmanyvalues, still one statement.
PREPARED_INSERT_ROWS = 64
_ROW_KEYS = tuple({c: f"{c}_{i}" for c in ALERT_COLUMNS} for i in range(PREPARED_INSERT_ROWS))


class SQLStore(LeaseRows, HostRows):
    def __init__(self, url: str):
        self.db = Database(url)
        self.url = self.db.url  # password hidden
        self._insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        # built once: the webhook's hot statement (parameters bound per execution)
        self._insert_alert = self._insert_alerts_of(self._insert(alerts))
        # the hot path's statements, each compiled once (store/prepared.py): by a key that names its shape
        self._prepared_statements: dict[tuple, Prepared] = {}
        # concurrent webhook POSTs share a commit (one fsync), each still answered only after it
        self._alert_groups: GroupCommit[_AlertBatch, list[StoredAlert]] = GroupCommit(self._record_alert_groups)

    # ---- plumbing

    @property
    def dialect(self) -> str:
        return self.db.dialect

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One unit of work: every store call this thread makes inside commits together, or none does."""
        with self.db.tx():
            yield

    @contextmanager
    def autocommit(self) -> Iterator[None]:
        """Store calls whose writes are each one statement, committed as it runs (Database.autocommit): for
        the webhook, whose batch of alerts is one INSERT, the durability of a transaction at fewer round trips."""
        with self.db.autocommit():
            yield

    def _rows(self, query: sa.Select) -> list[Any]:
        with self.db.read() as conn:
            return list(conn.execute(query))

    def _one(self, query: sa.Select) -> Any | None:
        with self.db.read() as conn:
            return conn.execute(query).first()

    def _claimable(self, query: sa.Select) -> sa.Select:
        return query.with_for_update(skip_locked=True) if self.db.skip_locked else query

    def _prepared(self, key: tuple, build: Callable[[], sa.Executable]) -> Prepared:
        """The statement `build()` makes, compiled once for this store's database (callers keep keys few)."""
        found = self._prepared_statements.get(key)
        if found is None:  # two threads may both compile it: either copy serves
            found = self._prepared_statements[key] = Prepared(build(), self.db.engine.dialect)
        return found

    def ping(self) -> None:
        self._one(sa.select(sa.literal(1)))

    def close(self) -> None:
        self.db.dispose()

    # ---- alerts

    def record_alerts(self, alerts_: Sequence[Alert], received_at: datetime,
                      ignore_reasons: Sequence[str | None] | None = None) -> list[StoredAlert]:
        if ignore_reasons is not None and len(ignore_reasons) != len(alerts_):
            raise ValueError(f"ignore_reasons has {len(ignore_reasons)} entries for {len(alerts_)} alerts")
        batch = (tuple(alerts_), received_at, tuple(ignore_reasons) if ignore_reasons is not None else None)
        if self.db.in_unit_of_work():
            with self.db.tx() as conn:
                return self._insert_alerts(conn, batch)
        return self._alert_groups.submit(batch)

    def _record_alert_groups(self, batches: Sequence[_AlertBatch]) -> list[list[StoredAlert] | Exception]:
        try:
            with self.db.tx() as conn:
                return [self._insert_alerts(conn, b) for b in batches]
        except Exception as e:
            if len(batches) == 1:
                return [e]
        # one batch spoiled the group (e.g. a refused value): each alone, so only its own caller fails
        return [self._record_alert_groups([b])[0] for b in batches]

    def _insert_alerts(self, conn: sa.Connection, batch: _AlertBatch) -> list[StoredAlert]:
        """Every alert of the batch in one INSERT ... ON CONFLICT DO NOTHING (SQLAlchemy's insertmanyvalues:
        one statement, one round trip, not one per alert); the rows it did not insert are repeats, read back
        in one SELECT with the outcome their first delivery got. A new alert's record is built from what was
        inserted, so only its id comes back."""
        alerts_, received_at, ignore_reasons = batch
        reasons = ignore_reasons if ignore_reasons is not None else (None,) * len(alerts_)
        first: dict[tuple, int] = {}  # (fingerprint, starts_at, status) -> the batch's first alert with it
        for i, a in enumerate(alerts_):
            first.setdefault(_alert_key(a), i)
        values = [_alert_values(alerts_[i], received_at, reasons[i]) for i in first.values()]
        inserted = {(fingerprint, starts_at, status): id_
                    for id_, fingerprint, starts_at, status in self._insert_new_alerts(conn, values)}
        repeats = [key for key in first if key not in inserted]
        earlier = {(r.fingerprint, r.starts_at, r.status): r for r in conn.execute(sa.select(alerts).where(
            sa.tuple_(alerts.c.fingerprint, alerts.c.starts_at, alerts.c.status).in_(repeats)))} if repeats else {}
        stored: list[StoredAlert] = []
        for i, a in enumerate(alerts_):
            key = _alert_key(a)
            if key in earlier:
                stored.append(rows.stored_alert(earlier[key], new=False))
            elif first[key] == i:
                stored.append(StoredAlert(id=inserted[key], alert=a, received_at=received_at, new=True,
                                          outcome=None if reasons[i] is None else "ignored", reason=reasons[i] or ""))
            else:  # a second delivery within the batch: the first one's record
                stored.append(dataclasses.replace(stored[first[key]], new=False))
        return stored

    def _insert_new_alerts(self, conn: sa.Connection, values: list[dict[str, Any]]) -> list[tuple]:
        """INSERT the rows, skipping those already stored; (id, fingerprint, starts_at, status) of each inserted."""
        if len(values) > PREPARED_INSERT_ROWS:
            with self.db.single_write():
                return [tuple(r) for r in conn.execute(self._insert_alert, values)]
        if not values:
            return []
        insert = self._prepared(("insert_alerts", len(values)), lambda: self._insert_alerts_of(
            self._insert(alerts).values([{c: sa.bindparam(key, type_=alerts.c[c].type) for c, key in keys.items()}
                                         for keys in _ROW_KEYS[:len(values)]])))
        parameters = {keys[c]: v for keys, row in zip(_ROW_KEYS, values) for c, v in row.items()}
        return insert.rows(conn, parameters, during=self.db.single_write())

    @staticmethod
    def _insert_alerts_of(insert: Any) -> Any:
        """`insert` (of alerts) made idempotent: a repeat of a stored alert is skipped, the new rows' keys returned."""
        return insert.on_conflict_do_nothing(index_elements=["fingerprint", "starts_at", "status"]).returning(
            alerts.c.id, alerts.c.fingerprint, alerts.c.starts_at, alerts.c.status)

    def pending_alerts(self) -> list[StoredAlert]:
        return [rows.stored_alert(r, new=True)
                for r in self._rows(sa.select(alerts).where(alerts.c.outcome.is_(None)).order_by(alerts.c.id))]

    def claim_alert(self, alert_id: int) -> StoredAlert | None:
        with self.db.tx() as conn:
            row = conn.execute(self._claimable(
                sa.select(alerts).where(alerts.c.id == alert_id, alerts.c.outcome.is_(None)))).first()
        return rows.stored_alert(row, new=True) if row is not None else None

    def claim_pending_alerts(self, limit: int = 100) -> list[StoredAlert]:
        with self.db.tx() as conn:
            found = conn.execute(self._claimable(
                sa.select(alerts).where(alerts.c.outcome.is_(None)).order_by(alerts.c.id).limit(limit)))
            return [rows.stored_alert(r, new=True) for r in found]

    def recent_alerts(self, limit: int = 100) -> list[StoredAlert]:
        return [rows.stored_alert(r, new=r.outcome is None)
                for r in self._rows(sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit))]

    def mark_alert(self, alert_id: int, outcome: str, incident_id: int | None, reason: str) -> None:
        if outcome not in ALERT_OUTCOMES:
            raise ValueError(f"alert outcome must be one of {ALERT_OUTCOMES}, got {outcome!r}")
        with self.db.tx() as conn:
            done = conn.execute(alerts.update().where(alerts.c.id == alert_id).values(
                outcome=outcome, incident_id=incident_id, reason=reason))
            if done.rowcount != 1:
                raise NotFound(f"alert {alert_id} not found")

    # ---- incidents

    def open_incident_for(self, subject: str) -> Incident | None:
        row = self._one(sa.select(incidents).where(incidents.c.subject == subject, incidents.c.closed_at.is_(None)))
        return rows.incident(row) if row else None

    def latest_incident_for(self, subject: str) -> Incident | None:
        row = self._one(sa.select(incidents).where(incidents.c.subject == subject)
                        .order_by(incidents.c.id.desc()).limit(1))
        return rows.incident(row) if row else None

    def get_incident(self, incident_id: int) -> Incident:
        row = self._one(sa.select(incidents).where(incidents.c.id == incident_id))
        if row is None:
            raise NotFound(f"incident {incident_id} not found")
        return rows.incident(row)

    def list_incidents(self, open_only: bool = False, limit: int = 100) -> list[Incident]:
        query = sa.select(incidents).order_by(incidents.c.closed_at.is_not(None), incidents.c.id.desc()).limit(limit)
        if open_only:
            query = query.where(incidents.c.closed_at.is_(None))
        return [rows.incident(r) for r in self._rows(query)]

    def incident_counts(self) -> dict[str, int]:
        query = (sa.select(incidents.c.state, sa.func.count()).where(incidents.c.closed_at.is_(None))
                 .group_by(incidents.c.state))
        return {state: n for state, n in self._rows(query)}

    def create_incident(self, subject: str, kind: Remediation, host: str, vm_uuid: str | None, vm_name: str | None,
                        state: str, reason: str, at: datetime, data: Mapping[str, Any] | None = None) -> Incident:
        insert = incidents.insert().values(
            subject=subject, kind=Remediation(kind).value, state=state, host=host, vm_uuid=vm_uuid, vm_name=vm_name,
            reason=reason, opened_at=at, updated_at=at, data=dict(data or {})).returning(*incidents.c)
        try:
            with self.db.tx() as conn:
                # a savepoint: inside a caller's unit of work the refusal must not void what it already wrote
                with conn.begin_nested():
                    row = conn.execute(insert).one()
        except sa.exc.IntegrityError as e:
            existing = self.open_incident_for(subject)
            if existing is None:
                raise StoreError(f"cannot create incident for {subject}: {e.orig}") from e
            raise IncidentExists(subject, existing.id) from e
        return rows.incident(row)

    def apply_transition(self, incident_id: int, at: datetime, event: Event, decision: DecisionLike, *,
                         expected_state: str, expected_version: int) -> Incident:
        with self.db.tx() as conn:
            row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first()
            if row is None:
                raise NotFound(f"incident {incident_id} not found")
            if row.closed_at is not None:
                raise StoreError(f"incident {incident_id} is closed; no transition applies to it")
            next_state = str(decision.next_state)
            attempts = getattr(decision, "attempts", None)
            if attempts is None:
                attempts = row.attempts if next_state == str(expected_state) else 0
            data = dict(row.data)
            data.update(getattr(decision, "data", None) or {})
            # The compare-and-set: the row changes only if nobody moved it since the decision read it.
            updated = conn.execute(
                incidents.update()
                .where(incidents.c.id == incident_id, incidents.c.state == str(expected_state),
                       incidents.c.version == expected_version, incidents.c.closed_at.is_(None))
                .values(state=next_state, attempts=int(attempts), reason=decision.reason, updated_at=at,
                        closed_at=at if decision.closes else None, data=data, version=incidents.c.version + 1)
                .returning(*incidents.c)).first()
            if updated is None:
                now = conn.execute(sa.select(incidents.c.state, incidents.c.version)
                                   .where(incidents.c.id == incident_id)).one()
                raise TransitionConflict(incident_id, (str(expected_state), expected_version), (now.state, now.version))
            conn.execute(transitions.insert().values(
                incident_id=incident_id, at=at, from_state=str(expected_state), event_kind=str(event.kind),
                event_at=event.at, event_detail=dict(event.detail), to_state=next_state, reason=decision.reason,
                actions=[rows.action_document(a) for a in decision.actions]))
        return rows.incident(updated)

    def history(self, incident_id: int) -> list[TransitionRecord]:
        query = sa.select(transitions).where(transitions.c.incident_id == incident_id).order_by(transitions.c.id)
        return [rows.transition(r) for r in self._rows(query)]

    # ---- queued events

    def enqueue_event(self, subject: str, event: Event) -> int:
        with self.db.tx() as conn:
            return conn.execute(events.insert().values(subject=subject, kind=str(event.kind), at=event.at,
                                                       detail=dict(event.detail)).returning(events.c.id)).scalar_one()

    def get_event(self, event_id: int) -> QueuedEvent:
        row = self._one(sa.select(events).where(events.c.id == event_id))
        if row is None:
            raise NotFound(f"event {event_id} not found")
        return rows.queued(row)

    def pending_events(self) -> list[QueuedEvent]:
        return [rows.queued(r)
                for r in self._rows(sa.select(events).where(events.c.outcome.is_(None)).order_by(events.c.id))]

    def mark_event(self, event_id: int, outcome: str, reason: str) -> None:
        with self.db.tx() as conn:
            done = conn.execute(events.update().where(events.c.id == event_id).values(outcome=outcome, reason=reason))
            if done.rowcount != 1:
                raise NotFound(f"event {event_id} not found")

    # ---- intents

    def record_intent(self, incident_id: int, action: Action, at: datetime, epoch: int = 0) -> int:
        with self.db.tx() as conn:
            return conn.execute(intents.insert().values(
                incident_id=incident_id, kind=str(action.kind), params=dict(action.params), at=at, epoch=epoch,
            ).returning(intents.c.id)).scalar_one()

    def record_result(self, intent_id: int, ok: bool, detail: str, at: datetime, epoch: int = 0) -> None:
        with self.db.tx() as conn:
            done = conn.execute(intents.update().where(intents.c.id == intent_id, intents.c.finished_at.is_(None))
                                .values(finished_at=at, ok=bool(ok), detail=detail, result_epoch=epoch))
            if done.rowcount == 1:
                return
            row = conn.execute(sa.select(intents.c.finished_at).where(intents.c.id == intent_id)).first()
            if row is None:
                raise NotFound(f"intent {intent_id} not found")
            raise StoreError(f"intent {intent_id} already has a result (finished {row.finished_at.isoformat()})")

    def unfinished_intents(self) -> list[Intent]:
        query = sa.select(intents).where(intents.c.finished_at.is_(None)).order_by(intents.c.id)
        return [rows.intent(r) for r in self._rows(query)]

    def intents(self, incident_id: int) -> list[Intent]:
        query = sa.select(intents).where(intents.c.incident_id == incident_id).order_by(intents.c.id)
        return [rows.intent(r) for r in self._rows(query)]


def _alert_key(a: Alert) -> tuple[str, datetime, str]:
    """The store's idempotence key: a delivery with the same one is a repeat."""
    return a.fingerprint, a.starts_at, a.status.value  # aware datetimes hash alike in any zone


def _alert_values(a: Alert, received_at: datetime, reason: str | None) -> dict[str, Any]:
    return dict(fingerprint=a.fingerprint, starts_at=a.starts_at, status=a.status.value,
                remediation=a.remediation.value, alertname=a.alertname, host=a.host, vm=a.vm, uuid=a.uuid,
                ends_at=a.ends_at, labels=dict(a.labels), annotations=dict(a.annotations), received_at=received_at,
                outcome="ignored" if reason is not None else None, reason=reason or "")
