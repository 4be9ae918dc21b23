"""Schema version 3: host conditions remember what a down host was (hostfsm); "damaged" is now
"cordoned"; one open incident per (host, kind); where each VM is or was defined."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from remediator.store.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hosts", sa.Column("prior", sa.Text))
    op.execute("UPDATE hosts SET condition = 'cordoned' WHERE condition = 'damaged'")
    for kind in ("damaged", "overloaded"):
        op.execute(sa.text("UPDATE incidents SET subject = subject || :suffix "
                           "WHERE kind = :kind AND subject NOT LIKE 'host:%:%'")
                   .bindparams(suffix=f":{kind}", kind=f"host_{kind}"))
    op.create_table(
        "vm_locations",
        sa.Column("uuid", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, primary_key=True),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )
