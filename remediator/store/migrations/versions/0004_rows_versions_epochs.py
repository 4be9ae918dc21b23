"""Incident versions (compare-and-set), epochs on intents and results (leader fencing), and the
per-host observations and storm hold in rows instead of read-modify-write JSON settings."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

from remediator.store.types import JSONDocument, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

settings = sa.table("settings", sa.column("key", sa.Text), sa.column("value", JSONDocument()))


def upgrade() -> None:
    op.add_column("incidents", sa.Column("version", sa.Integer, nullable=False, server_default="0"))
    op.add_column("intents", sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("intents", sa.Column("result_epoch", sa.BigInteger))
    host_status = op.create_table(
        "host_status",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("unreachable_since", UTCDateTime),
        sa.Column("load1", sa.Float),
        sa.Column("memory_available_bytes", sa.BigInteger),
        sa.Column("load_at", UTCDateTime),
        sa.Column("load_source", sa.Text),
    )
    storm = op.create_table(
        "storm",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("since", UTCDateTime),
        sa.Column("unhealthy", JSONDocument(), nullable=False),
        sa.Column("release_at", UTCDateTime),
        sa.Column("release_by", sa.Text),
        sa.Column("release_reason", sa.Text),
        sa.Column("release_hosts", JSONDocument()),
        sa.CheckConstraint("id = 1", name="storm_one_row"),
    )
    _move_settings(op.get_bind(), host_status, storm)


def _move_settings(conn: sa.Connection, host_status: sa.Table, storm: sa.Table) -> None:
    """The blobs the previous schema kept (keys storm_hold, storm_release, unreachable, host_load) into rows."""
    old = {k: v for k, v in conn.execute(sa.select(settings.c.key, settings.c.value))}
    status: dict[str, dict] = {}
    for host, since in (old.get("unreachable") or {}).items():
        status.setdefault(host, {})["unreachable_since"] = _time(since)
    load = old.get("host_load") or {}
    for host, figures in load.items():
        if isinstance(figures, dict):
            status.setdefault(host, {}).update(
                load1=figures.get("load1"), memory_available_bytes=figures.get("memory_available_bytes"),
                load_at=_time(load.get("at")), load_source=load.get("source"))
    for host, row in sorted(status.items()):
        conn.execute(host_status.insert().values(name=host, **row))
    hold, release = old.get("storm_hold"), old.get("storm_release")
    if hold or release:
        hold = hold or {}
        conn.execute(storm.insert().values(
            id=1, active=bool(hold.get("active")), reason=hold.get("reason", ""), since=_time(hold.get("since")),
            unhealthy=list(hold.get("unhealthy") or []),
            release_at=_time((release or {}).get("at")), release_by=(release or {}).get("by"),
            release_reason=(release or {}).get("reason"),
            release_hosts=list(release.get("hosts") or []) if release else None))
    conn.execute(settings.delete().where(settings.c.key.in_(["storm_hold", "storm_release", "unreachable",
                                                              "host_load"])))


def _time(value: object) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
