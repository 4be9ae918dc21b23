"""Schema version 2: operator requests and other non-alert events, queued durably like alerts."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from remediator.store.types import JSONDocument, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("detail", JSONDocument(), nullable=False),
        sa.Column("outcome", sa.Text),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("events_pending", "events", ["id"], sqlite_where=sa.text("outcome IS NULL"),
                    postgresql_where=sa.text("outcome IS NULL"))
