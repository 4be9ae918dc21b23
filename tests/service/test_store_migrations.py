"""Alembic migrations, applied when the store opens: from an empty database on both backends, and from
the files the hand-written SQLite store made (PRAGMA user_version 1-3), with their data preserved."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext

from remediator.model import Event, HostCondition, Remediation
from remediator.store import StoreError, open_store
from remediator.store.database import ALEMBIC_USER_VERSION
from remediator.store.schema import metadata
from remediator.store.types import dumps, loads

from .store_backends import store, store_url  # noqa: F401 (fixtures)
from .test_store_decisions import Decision

SCHEMA3 = Path(__file__).parent / "fixtures" / "store_schema3.db"  # made by main's code: fixtures/make_store_schema3.py
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
UUID = "6f1c2b3a-0000-4000-8000-000000000001"
HEAD = "0005"


def _revision(url: str) -> str | None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_empty_database_migrates_to_a_schema_equal_to_schema_py(store, store_url):
    """Every revision applied from nothing gives exactly the tables, columns and indexes schema.py declares."""
    assert _revision(store_url) == HEAD
    with store.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
    assert diff == []
    if store.dialect == "postgresql":
        with store.db.engine.connect() as conn:
            types = dict(conn.execute(sa.text("SELECT column_name, data_type FROM information_schema.columns "
                                              "WHERE table_name = 'incidents'")).all())
        assert types["opened_at"] == "timestamp with time zone" and types["data"] == "jsonb"


def test_reopening_a_migrated_store_changes_nothing(store_url):
    with open_store(store_url) as s:
        s.set_setting("k", 1)
    with open_store(store_url) as s:
        assert s.get_setting("k") == 1 and _revision(store_url) == HEAD


def test_a_newer_revision_is_refused(store_url):
    open_store(store_url).close()
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="schema revision 9999, newer than this remediator knows"):
        open_store(store_url)


def test_schema_3_file_made_by_the_hand_written_store_upgrades_with_its_data(tmp_path):
    path = tmp_path / "state.db"
    shutil.copy(SCHEMA3, path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    with open_store(f"sqlite:///{path}") as s:
        assert _revision(f"sqlite:///{path}") == HEAD
        ignored, handled = sorted(s.recent_alerts(), key=lambda a: a.alert.fingerprint, reverse=True)
        assert (ignored.outcome, ignored.reason) == ("ignored", "unknown host h9")
        assert handled.outcome == "incident" and handled.alert.labels == {"host": "h1", "vm": "web1"}
        assert handled.alert.starts_at == T0 and s.pending_alerts() == []
        inc = s.open_incident_for("vm:" + UUID)
        assert (inc.state, inc.version, inc.data) == ("restarting", 0, {"alert_starts_at": T0.isoformat(),
                                                                         "placement": "h2"})
        (step,) = s.history(inc.id)
        assert step.actions[0].params["at"] == T0  # a datetime inside a JSON document survives
        done, unfinished = s.intents(inc.id)
        assert (done.ok, done.detail, done.epoch) == (True, "started on h2", 0)
        assert [i.id for i in s.unfinished_intents()] == [unfinished.id]
        closed = s.latest_incident_for("host:h3:damaged")
        assert closed.closed_at == T0 + timedelta(seconds=5)
        (queued,) = s.pending_events()
        assert queued.event.detail == {"by": "op"}
        assert s.get_vm(UUID).group == "web" and s.hosts_defining(UUID) == ["h2"]
        assert s.host_states()["h1"] == (HostCondition.DOWN, "fenced off", T0, HostCondition.CORDONED)
        # the settings blobs are rows now, and gone from settings
        assert s.storm_hold() == {"active": True, "reason": "2 of 3 hosts out", "since": T0, "unhealthy": ["h1", "h3"]}
        assert s.storm_release() == {"at": T0 + timedelta(minutes=1), "by": "operator token", "reason": "rack back",
                                     "hosts": ["h1", "h3"]}
        assert s.unreachable_hosts() == {"h1": T0, "h3": T0 + timedelta(seconds=7)}
        assert s.host_loads() == {"h1": {"load1": None, "memory_available_bytes": None},
                                  "h2": {"load1": 0.25, "memory_available_bytes": 1 << 30},
                                  "at": T0 + timedelta(seconds=9), "source": "prometheus"}
        assert s.get_setting("storm_hold") is None and s.get_setting("other") == {"kept": True}
        # and it goes on working: the next transition compares against version 0
        moved = s.apply_transition(inc.id, T0, Event("vm_running", T0), Decision("recovered", closes=True),
                                   expected_state="restarting", expected_version=0)
        assert moved.version == 1 and not moved.is_open
    with sqlite3.connect(path) as db:  # the hand-written store (knowing versions up to 3) now refuses the file
        assert db.execute("PRAGMA user_version").fetchone()[0] == ALEMBIC_USER_VERSION


def _legacy_file(path: Path, version: int) -> str:
    """A file as the hand-written store left it at `version`: the same DDL (revisions 000N), no alembic_version."""
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url, json_serializer=dumps, json_deserializer=loads)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("remediator.store") / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, f"{version:04d}")
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.exec_driver_sql(f"PRAGMA user_version = {version}")
    engine.dispose()
    return url


def test_version_2_file_gets_schema_3s_renames(tmp_path):
    url = _legacy_file(tmp_path / "v2.db", 2)
    with sqlite3.connect(tmp_path / "v2.db") as db:
        db.execute("INSERT INTO hosts VALUES ('h1', 'damaged', 'cordoned: damage alert', '2026-01-01T00:00:00+00:00')")
        db.execute("""INSERT INTO incidents (subject, kind, state, host, opened_at, updated_at, data)
                      VALUES ('host:h1', 'host_damaged', 'failed', 'h1', '2026-01-01T00:00:00+00:00',
                              '2026-01-01T00:00:00+00:00', '{}')""")
    with open_store(url) as s:
        assert s.host_states()["h1"].condition is HostCondition.CORDONED
        assert s.open_incident_for("host:h1:damaged") is not None
        assert s.open_incident_for("host:h1") is None


def test_version_1_file_migrates_forward(tmp_path):
    with open_store(_legacy_file(tmp_path / "v1.db", 1)) as s:
        s.enqueue_event("host:h1", Event("operator_retry", T0))
        assert len(s.pending_events()) == 1
        s.create_incident("host:h1", Remediation.HOST_DOWN, "h1", None, None, "fencing", "down", T0)


def test_a_hand_written_version_newer_than_3_is_refused(tmp_path):
    path = tmp_path / "v4.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 4")
    with pytest.raises(StoreError, match="schema version 4, newer than this remediator knows"):
        open_store(f"sqlite:///{path}")
