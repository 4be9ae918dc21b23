"""The webhook's batch path through the store, on SQLite and on PostgreSQL: a batch of alerts is one INSERT
(and one SELECT for its repeats), the inventory check of a batch one query, the records a batch gets
back are what storing its alerts one at a time would give, and autocommit (the webhook's way to write
that one INSERT without BEGIN and COMMIT) commits each statement as it runs."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator.alerts import parse_alerts
from remediator.model import ProtectedVM
from remediator.store import open_store

from .payloads import alert, body
from .store_backends import T0, store, store_url  # noqa: F401 (fixtures)


class Statements:
    """The SQL statements a store's database driver runs while counting, counted at the driver (the store's
    prepared statements use its DBAPI cursors directly, below SQLAlchemy's events): SQLite's trace callback
    on the one connection the store shares; psycopg cursors that note what they execute, on every connection
    the store checks out from now on."""

    def __init__(self, store):
        self.seen: list[str] = []
        if store.dialect == "sqlite":
            shared = store.db.engine.raw_connection()  # StaticPool: every thread's connection
            shared.driver_connection.set_trace_callback(self._note)
            shared.close()
        else:
            sa.event.listen(store.db.engine, "checkout", self._count_cursors)

    def _count_cursors(self, dbapi_connection, record, proxy):
        if getattr(dbapi_connection.cursor_factory, "counter", None) is self:
            return  # this connection was checked out before: its cursors already count
        note = self._note

        class Counting(dbapi_connection.cursor_factory):
            counter = self

            def execute(self, query, *args, **kwargs):
                note(query)
                return super().execute(query, *args, **kwargs)

            def executemany(self, query, *args, **kwargs):
                note(query)
                return super().executemany(query, *args, **kwargs)

        dbapi_connection.cursor_factory = Counting

    def _note(self, statement):
        text = statement.decode() if isinstance(statement, bytes) else str(statement)
        self.seen.append(text.split(None, 1)[0].upper())

    def of(self, kind: str) -> int:
        return self.seen.count(kind)


def _alerts(*numbers: int):
    """Firing alerts with the fingerprints of these numbers (hex, as Alertmanager's)."""
    return parse_alerts(body(*(alert(fingerprint=f"{n:016x}") for n in numbers)))


def test_a_batch_of_new_alerts_is_one_insert_and_its_repeats_one_select(store):
    count = Statements(store)
    first = store.record_alerts(_alerts(*range(40)), T0)
    assert count.of("INSERT") == 1 and count.of("SELECT") == 0
    assert len({s.id for s in first}) == 40 and all(s.new for s in first)
    count.seen.clear()
    again = store.record_alerts(_alerts(*range(0, 40, 2), 1000), T0)
    assert count.of("INSERT") == 1 and count.of("SELECT") == 1
    assert [s.id for s in again[:-1]] == [s.id for s in first[::2]] and not any(s.new for s in again[:-1])
    assert again[-1].new


def test_a_second_delivery_within_one_batch_is_a_repeat_of_the_first(store):
    stored = store.record_alerts(_alerts(7, 8, 7), T0, [None, None, "h9 not in the inventory"])
    assert [s.new for s in stored] == [True, True, False]
    assert stored[2].id == stored[0].id and stored[2].outcome is None  # the first delivery's outcome
    assert len(store.pending_alerts()) == 2


def test_known_vms_answers_a_batch_by_uuid_and_by_latest_name_in_one_query(store):
    def vm(uuid, name, protected=True):
        return ProtectedVM(uuid=uuid, name=name, host="h1", vcpus=1, memory_bytes=1 << 20, priority=0,
                           protected=protected)

    store.upsert_vm(vm("aaaaaaaa-0000-0000-0000-000000000001", "web"), T0)
    store.upsert_vm(vm("aaaaaaaa-0000-0000-0000-000000000002", "web", protected=False), T0 + timedelta(seconds=1))
    store.upsert_vm(vm("aaaaaaaa-0000-0000-0000-000000000003", "db"), T0)
    count = Statements(store)
    known = store.known_vms(["AAAAAAAA-0000-0000-0000-000000000003", "ffffffff-0000-0000-0000-000000000000"],
                            ["web", "nobody"])
    assert count.of("SELECT") == 1
    assert known.find("aaaaaaaa-0000-0000-0000-000000000003", None).name == "db"  # UUIDs in any case
    assert known.find("ffffffff-0000-0000-0000-000000000000", "db") is None  # a UUID is not looked up by name
    web = known.find(None, "web")
    assert (web.uuid, web.protected) == ("aaaaaaaa-0000-0000-0000-000000000002", False)  # the latest update
    assert known.find(None, "nobody") is None and store.known_vms([], []).by_uuid == {}


# Batches of deliveries from a small set of alerts (fingerprint x status), some ignored: every delivery
# of an alert after its first is a repeat with the first one's id and outcome, within a batch or across.
deliveries = st.lists(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["firing", "resolved"]),
                                         st.booleans()), min_size=1, max_size=6), min_size=1, max_size=4)
examples = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=deliveries)
def test_batches_give_the_records_one_at_a_time_storing_would(store, batches):
    run = next(examples)  # each example its own fingerprints: the store is shared between examples
    first: dict[tuple[str, str], tuple[int, str | None]] = {}
    for batch in batches:
        alerts = parse_alerts(body(*(alert(fingerprint=f"{run:012x}{f}000", status=s) for f, s, _ in batch)))
        reasons = ["ignored here" if ignore else None for _, _, ignore in batch]
        for (f, s, _), reason, got in zip(batch, reasons, store.record_alerts(alerts, T0, reasons)):
            if (f, s) in first:
                assert not got.new and (got.id, got.outcome) == first[(f, s)]
            else:
                assert got.new and got.outcome == ("ignored" if reason else None)
                assert got.alert.fingerprint == f"{run:012x}{f}000" and got.alert.status == s
                first[(f, s)] = (got.id, got.outcome)
    assert len({i for i, _ in first.values()}) == len(first)


def test_autocommit_commits_each_statement_as_it_runs_and_a_unit_of_work_after_it_is_atomic_again(store, store_url):
    other = open_store(store_url)  # another process's view
    try:
        with store.autocommit():
            store.record_alerts(_alerts(1, 2), T0)
            assert len(other.pending_alerts()) == 2  # committed before the block ends: no transaction around it
        with pytest.raises(RuntimeError, match="refused"):
            with store.atomic():
                store.record_alerts(_alerts(3), T0)
                raise RuntimeError("refused")
        assert len(other.pending_alerts()) == 2  # the connection went back to transactions
    finally:
        other.close()


def test_autocommit_is_refused_inside_a_unit_of_work(store):
    with store.atomic():
        with pytest.raises(RuntimeError, match="inside a unit of work"):
            with store.autocommit():
                pass
