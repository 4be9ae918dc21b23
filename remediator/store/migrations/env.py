"""Alembic's environment: run by Database.migrate() on a connection it is already in a transaction on."""

from __future__ import annotations

from alembic import context

from remediator.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
