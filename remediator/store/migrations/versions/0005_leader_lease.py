"""The leader lease: one row naming the replica that acts, its epoch (the fencing token) and until when."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from remediator.store.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lease",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("holder", sa.Text),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("acquired_at", UTCDateTime),
        sa.Column("renewed_at", UTCDateTime),
        sa.CheckConstraint("id = 1", name="lease_one_row"),
    )
    op.execute("INSERT INTO lease (id, epoch) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("lease")
