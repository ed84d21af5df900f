"""Alembic environment: migrates the schema of `shared.sa_models` on asyncpg.

Three ways in:
- `shared.db` (upgrade_to_head, downgrade_to) passes an open connection in
  `config.attributes["connection"]`; the migration runs inside that connection's transaction.
- The alembic command line (`alembic -c shared/alembic.ini ...`, `make migrate`) opens its own
  async engine on DATABASE_URL (environment or .env), or the embedded server when it is unset.
- `--sql` (offline) renders the SQL for that same URL without connecting.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from shared.sa_models import Base
from sqlalchemy import Connection, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config
target_metadata = Base.metadata

# Any constant works; it only has to be the same for every process that migrates.
MIGRATION_LOCK_KEY = 0x7472_6164_696E_67  # "trading"


def _database_url() -> str:
    from shared.config import load_settings
    from shared.db import database_url_from_settings

    return database_url_from_settings(load_settings())


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
    )


def run_migrations_on(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        # Services starting together would otherwise race to create the same tables.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_migrations_online(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations_on)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline(url: str) -> None:
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if config.attributes.get("configure_logging", True) and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

shared_connection = config.attributes.get("connection")
if shared_connection is not None:
    run_migrations_on(shared_connection)
elif context.is_offline_mode():
    run_migrations_offline(_database_url())
else:
    asyncio.run(run_migrations_online(_database_url()))
