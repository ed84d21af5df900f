"""Fixtures every package's tests share: real PostgreSQL and Redis servers.

Which servers: DATABASE_URL / REDIS_URL when set (e.g. the machine's own on 127.0.0.1),
otherwise the embedded servers of `shared.embedded`, kept under `.trading/test`. Each test
gets its own fresh database and its own Redis key namespace, so tests never see each
other's rows or streams, and several test runs can share one server.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

# Import the real `shared` package before any test module is collected: pytest's importlib
# mode names `shared/tests/test_x.py` "shared.tests.test_x" and, if `shared` is not imported
# yet, makes a stand-in `shared` module from the `shared/` folder that hides the real one.
import shared  # noqa: F401  (imported for the side effect above)

ROOT = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_DATA_DIR = ROOT / ".trading" / "test"


def _async_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of a PostgreSQL server's maintenance database (`postgres`), asyncpg driver.

    DATABASE_URL's server when set, otherwise the embedded PostgreSQL under `.trading/test`
    (started once and left running for the next test run; `make stop` stops it).
    """
    configured = os.environ.get("DATABASE_URL")
    if configured:
        url = make_url(_async_url(configured)).set(database="postgres")
        return url.render_as_string(hide_password=False)
    from shared.embedded import ensure_postgres

    url = make_url(ensure_postgres(TEST_DATA_DIR)).set(database="postgres")
    server_url = url.render_as_string(hide_password=False)
    # Test databases are thrown away, so this server need not survive a crash: without
    # fsync, creating and dropping a database per test takes half the time. Only ever
    # done to the tests' own embedded server, never to a configured one.
    asyncio.run(
        _admin(
            server_url,
            "ALTER SYSTEM SET fsync = off",
            "ALTER SYSTEM SET synchronous_commit = off",
            "ALTER SYSTEM SET full_page_writes = off",
            "SELECT pg_reload_conf()",
        )
    )
    return server_url


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """URL of a Redis server: REDIS_URL's (7.x on the machine) or the embedded 6.2."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        return configured
    from shared.embedded import ensure_redis

    return ensure_redis(TEST_DATA_DIR)


async def _admin(server_url: str, *statements: str) -> None:
    """Run each statement on its own (outside a transaction, as CREATE DATABASE needs)."""
    import asyncpg

    url = make_url(server_url)
    conn = await asyncpg.connect(
        user=url.username,
        password=url.password,
        host=url.host or url.query.get("host"),
        port=url.port,
        database=url.database,
    )
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test (dropped afterwards)."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin(postgres_server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """A fresh database brought to the head migration."""
    from shared.db import upgrade_to_head

    upgrade_to_head(database_url)
    return database_url


@pytest.fixture
def redis_namespace() -> str:
    """A unique prefix for this test's streams and keys on the shared Redis server."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real Binance candles beside the project (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"{SHARED_DATA} is missing: the tests read real candles from shared/data beside "
            f"the project; clone or copy the project next to that folder"
        )
    return SHARED_DATA
