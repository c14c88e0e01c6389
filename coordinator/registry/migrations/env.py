"""Alembic environment for the registry: runs on the connection ``open_registry`` passes.

The registry migrates its own database when it opens it (``coordinator.registry.database``),
inside one transaction that also holds the migration lock, so this file never makes an
engine of its own and has no offline (``--sql``) mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from coordinator.registry.schema import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection) or context.is_offline_mode():
    raise RuntimeError(
        "the registry's migrations run from coordinator.registry.open_registry(url), which "
        "passes its connection; open the registry instead of running alembic directly"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters tables only by copying them; batch mode does that for later revisions.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
