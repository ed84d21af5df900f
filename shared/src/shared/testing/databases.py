"""Scratch PostgreSQL databases for benchmarks and tests: created empty, dropped after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import pool, text
from sqlalchemy.engine import make_url

from shared.db import create_engine

__all__ = ["scratch_database"]


@asynccontextmanager
async def scratch_database(server_url: str, prefix: str = "scratch") -> AsyncIterator[str]:
    """The URL of a new, empty database on `server_url`'s server, dropped on exit.

    `server_url` may name any database the user can connect to (e.g. ``postgres``); the new
    one is ``<prefix>_<random>``. Dropped WITH (FORCE), so connections left open do not keep
    it alive.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    # CREATE and DROP DATABASE cannot run inside a transaction: an autocommit engine.
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
