"""The store's tables (SQLAlchemy Core) as of the newest migration; migrations/versions builds them.

Invariants the database enforces itself, whatever the callers do:
- at most one open incident per subject (a partial unique index);
- an alert is stored once per (fingerprint, starts_at, status): Alertmanager's retries are repeats;
- an intent's result is written once (the UPDATE is guarded by finished_at IS NULL).
"""

from __future__ import annotations

import sqlalchemy as sa

from remediator.store.types import JSONDocument, UTCDateTime

metadata = sa.MetaData()

alerts = sa.Table(
    "alerts", metadata,
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
    sa.Column("outcome", sa.Text),  # None until handled: one of base.ALERT_OUTCOMES
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id")),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("fingerprint", "starts_at", "status"),
)

incidents = sa.Table(
    "incidents", metadata,
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
    # bumped by every transition: apply_transition compares it (and the state) before it writes
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
)

transitions = sa.Table(
    "transitions", metadata,
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

intents = sa.Table(
    "intents", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("params", JSONDocument(), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("ok", sa.Boolean),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    # the leader epoch that wrote the intent and the result (0: a single controller, no lease)
    sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("result_epoch", sa.BigInteger),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("detail", JSONDocument(), nullable=False),
    sa.Column("outcome", sa.Text),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
)

vms = sa.Table(
    "vms", metadata,
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

hosts = sa.Table(  # a host's condition (hostfsm): written by the engine's decisions
    "hosts", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("condition", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("since", UTCDateTime, nullable=False),
    sa.Column("prior", sa.Text),
)

host_status = sa.Table(  # what the remediator last observed of a host (reachability, load): not decisions
    "host_status", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("unreachable_since", UTCDateTime),
    sa.Column("load1", sa.Float),
    sa.Column("memory_available_bytes", sa.BigInteger),
    sa.Column("load_at", UTCDateTime),
    sa.Column("load_source", sa.Text),
)

storm = sa.Table(  # one row (id 1): the storm hold and an operator's release of it
    "storm", metadata,
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

vm_locations = sa.Table(
    "vm_locations", metadata,
    sa.Column("uuid", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, primary_key=True),
    sa.Column("seen_at", UTCDateTime, nullable=False),
)

lease = sa.Table(  # one row (id 1): the leader lease; times by the database's clock (store/lease.py)
    "lease", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("holder", sa.Text),  # the replica that holds it (None: never taken)
    sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),  # +1 at every change of hands
    sa.Column("expires_at", UTCDateTime),
    sa.Column("acquired_at", UTCDateTime),
    sa.Column("renewed_at", UTCDateTime),
    sa.CheckConstraint("id = 1", name="lease_one_row"),
)

settings = sa.Table(
    "settings", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", JSONDocument(), nullable=False),
)

sa.Index("alerts_pending", alerts.c.id, sqlite_where=alerts.c.outcome.is_(None),
         postgresql_where=alerts.c.outcome.is_(None))
sa.Index("incidents_one_open_per_subject", incidents.c.subject, unique=True,
         sqlite_where=incidents.c.closed_at.is_(None), postgresql_where=incidents.c.closed_at.is_(None))
sa.Index("transitions_by_incident", transitions.c.incident_id, transitions.c.id)
sa.Index("intents_unfinished", intents.c.id, sqlite_where=intents.c.finished_at.is_(None),
         postgresql_where=intents.c.finished_at.is_(None))
sa.Index("intents_by_incident", intents.c.incident_id, intents.c.id)
sa.Index("events_pending", events.c.id, sqlite_where=events.c.outcome.is_(None),
         postgresql_where=events.c.outcome.is_(None))
sa.Index("vms_by_name", vms.c.name)
