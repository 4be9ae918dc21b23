"""Schema version 1 of the hand-written store (PRAGMA user_version 1): alerts, incidents, intents, inventory.

Revisions 0001-0003 are the three migrations the store had before Alembic, so a SQLite file at
user_version N is stamped at revision N and upgraded from there (Database.migrate)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from remediator.store.types import JSONDocument, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("vm_uuid", sa.Text),
        sa.Column("vm_name", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("opened_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("closed_at", UTCDateTime),
        sa.Column("data", JSONDocument(), nullable=False),
    )
    op.create_index("incidents_one_open_per_subject", "incidents", ["subject"], unique=True,
                    sqlite_where=sa.text("closed_at IS NULL"), postgresql_where=sa.text("closed_at IS NULL"))
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("starts_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("remediation", sa.Text, nullable=False),
        sa.Column("alertname", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("vm", sa.Text),
        sa.Column("uuid", sa.Text),
        sa.Column("ends_at", UTCDateTime),
        sa.Column("labels", JSONDocument(), nullable=False),
        sa.Column("annotations", JSONDocument(), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.Text),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id")),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("fingerprint", "starts_at", "status"),
        sa.CheckConstraint("outcome IN ('incident', 'ignored', 'duplicate')", name="alerts_outcome"),
    )
    op.create_index("alerts_pending", "alerts", ["id"], sqlite_where=sa.text("outcome IS NULL"),
                    postgresql_where=sa.text("outcome IS NULL"))
    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("from_state", sa.Text),
        sa.Column("event_kind", sa.Text, nullable=False),
        sa.Column("event_at", UTCDateTime, nullable=False),
        sa.Column("event_detail", JSONDocument(), nullable=False),
        sa.Column("to_state", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actions", JSONDocument(), nullable=False),
    )
    op.create_index("transitions_by_incident", "transitions", ["incident_id", "id"])
    op.create_table(
        "intents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("params", JSONDocument(), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("ok", sa.Boolean),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("intents_unfinished", "intents", ["id"], sqlite_where=sa.text("finished_at IS NULL"),
                    postgresql_where=sa.text("finished_at IS NULL"))
    op.create_index("intents_by_incident", "intents", ["incident_id", "id"])
    op.create_table(
        "vms",
        sa.Column("uuid", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("host", sa.Text),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("anti_affinity_group", sa.Text),
        sa.Column("xml", sa.Text, nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("vms_by_name", "vms", ["name"])
    op.create_table(
        "hosts",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("condition", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("since", UTCDateTime, nullable=False),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", JSONDocument(), nullable=False),
    )
