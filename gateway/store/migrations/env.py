"""Alembic environment: runs on the connection tescape hands it (see store/database.py)."""

from alembic import context

from gateway.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through gateway.store.database.migrate or `tescape db`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
