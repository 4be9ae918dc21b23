"""The store's prepared statements (store/prepared.py), on SQLite and on PostgreSQL: they write and read what
Connection.execute of the same Core statement would, raise what it would raise, are compiled once per
shape, and a failure on the webhook's path is the store's error and leaves the store usable."""

from __future__ import annotations

from datetime import timedelta

import json

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from remediator.alerts import parse_alerts
from remediator.store import prepared
from remediator.store.base import StoreError
from remediator.store.schema import alerts
from remediator.store.types import _encode, dumps

from .payloads import alert, body
from .store_backends import T0, store, store_url  # noqa: F401 (fixtures)

LABELS = {"alertname": "VMDown", "host": "h1", "when": "2026"}


def _row(fingerprint: str) -> dict:
    return dict(fingerprint=fingerprint, starts_at=T0, status="firing", remediation="vm_down", alertname="VMDown",
                host="h1", vm="t00", uuid=None, ends_at=T0 + timedelta(minutes=5), labels=LABELS,
                annotations={"summary": "down"}, received_at=T0, outcome=None, reason="")


def _insert(store):
    return store._insert(alerts).values({c: sa.bindparam(c, type_=alerts.c[c].type) for c in _row("x")}).returning(
        alerts.c.id, alerts.c.starts_at, alerts.c.labels)


def test_a_prepared_statement_stores_and_returns_what_connection_execute_would(store):
    statement = _insert(store)
    insert = prepared.Prepared(statement, store.db.engine.dialect)
    with store.db.tx() as conn:
        by_core = conn.execute(statement, _row("core")).one()
        by_prepared = insert.rows(conn, _row("prepared"))[0]
        stored = {r.fingerprint: r._asdict() for r in conn.execute(sa.select(alerts))}
    assert tuple(by_prepared[1:]) == tuple(by_core[1:]) == (T0, LABELS)  # result processors applied alike
    assert {k: v for k, v in stored["prepared"].items() if k not in ("id", "fingerprint")} == \
        {k: v for k, v in stored["core"].items() if k not in ("id", "fingerprint")}  # bind processors alike


def test_a_driver_error_in_a_prepared_statement_is_raised_as_connection_execute_raises_it(store):
    statement = _insert(store)
    insert = prepared.Prepared(statement, store.db.engine.dialect)
    refused = {**_row("no name"), "alertname": None}  # NOT NULL
    raised = []
    for run in (lambda conn: conn.execute(statement, refused), lambda conn: insert.rows(conn, refused)):
        with pytest.raises(sa.exc.DBAPIError) as e:
            with store.db.engine.begin() as conn:
                run(conn)
        raised.append((type(e.value), type(e.value.orig)))
    assert raised[0] == raised[1] and issubclass(raised[0][0], sa.exc.IntegrityError)
    with pytest.raises(ValueError, match="naive datetime"):  # a value the store refuses, before the driver
        with store.db.engine.begin() as conn:
            insert.rows(conn, {**_row("naive"), "starts_at": T0.replace(tzinfo=None)})


def test_the_webhooks_statements_are_compiled_once_per_shape(store, monkeypatch):
    compiled = []
    real = prepared.Prepared.__init__
    monkeypatch.setattr(prepared.Prepared, "__init__", lambda self, *a: compiled.append(1) or real(self, *a))
    for n, size in enumerate([1, 1, 4, 1, 4, 3, 1] * 3):
        batch = parse_alerts(body(*(alert(fingerprint=f"{n:08x}{i:08x}", uuid=f"{n:08x}-0000-0000-0000-{i:012x}")
                                    for i in range(size))))
        with store.autocommit():
            store.known_vms([a.uuid for a in batch], [])
            store.record_alerts(batch, T0, [None] * size)
    # inventory lookups: 1 and 4 UUIDs (3 is padded to 4); INSERTs of 1, 4 and 3 rows
    assert len(compiled) == 5 and len(store._prepared_statements) == 5


def test_a_failure_on_the_webhooks_path_is_a_store_error_and_the_next_batch_is_stored(store):
    batch = parse_alerts(body(alert(fingerprint="0000000000000001")))
    with store.autocommit():
        store.record_alerts(batch, T0)
    with store.db.engine.begin() as conn:  # another writer takes the table away for a moment
        conn.execute(sa.text("ALTER TABLE alerts RENAME TO alerts_away"))
    with pytest.raises(StoreError, match="alerts"):
        with store.autocommit():
            store.record_alerts(parse_alerts(body(alert(fingerprint="0000000000000002"))), T0)
    with store.db.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE alerts_away RENAME TO alerts"))
    with store.autocommit():
        again = store.record_alerts(parse_alerts(body(alert(fingerprint="0000000000000002"))), T0)
    assert again[0].new and [a.alert.fingerprint for a in store.pending_alerts()] == ["0000000000000001",
                                                                                       "0000000000000002"]


def test_a_batch_beyond_the_prepared_shapes_is_answered_alike_in_one_query_and_one_insert(store):
    from remediator.model import ProtectedVM

    from .test_store_ingest_batch import Statements

    uuids = [f"bbbbbbbb-0000-0000-0000-{i:012x}" for i in range(100)]
    with store.atomic():
        for i, uuid in enumerate(uuids):
            store.upsert_vm(ProtectedVM(uuid=uuid, name=f"vm{i}", host="h1", vcpus=1, memory_bytes=1 << 20,
                                        protected=i % 2 == 0), T0)
    small = store.known_vms(uuids[:3], ["vm7"])
    count = Statements(store)
    big = store.known_vms([u.upper() for u in uuids] + ["ffffffff-0000-0000-0000-000000000000"], ["vm7"])
    assert count.of("SELECT") == 1 and len(big.by_uuid) == 100
    assert all(big.by_uuid[u] == small.by_uuid[u] for u in uuids[:3]) and big.by_name["vm7"] == small.by_name["vm7"]
    stored = store.record_alerts(parse_alerts(body(*(alert(fingerprint=f"{i:016x}") for i in range(100)))), T0)
    assert count.of("INSERT") == 1 and len({s.id for s in stored}) == 100 and all(s.new for s in stored)


documents = st.recursive(st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
                         lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20)


@given(documents)
def test_the_stores_json_encoder_writes_what_json_dumps_with_its_options_writes(document):
    assert dumps(document) == json.dumps(document, default=_encode, sort_keys=True)
