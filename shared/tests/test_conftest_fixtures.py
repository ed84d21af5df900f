"""The shared test fixtures (root conftest.py) give each test real, isolated servers.

Run both ways: with DATABASE_URL / REDIS_URL set (the machine's servers) and without (the
embedded servers under `.trading/test`).
"""

from __future__ import annotations

import os

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url


async def _connect(url: str) -> asyncpg.Connection:
    parsed = make_url(url)
    return await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.host or parsed.query.get("host"),
        port=parsed.port,
        database=parsed.database,
    )


def test_servers_are_the_configured_ones_or_the_embedded_ones(
    postgres_server_url: str, redis_server_url: str
) -> None:
    postgres = make_url(postgres_server_url)
    assert postgres.drivername == "postgresql+asyncpg"
    assert postgres.database == "postgres"
    if os.environ.get("DATABASE_URL"):
        assert postgres.host == make_url(os.environ["DATABASE_URL"]).host
    else:
        assert str(postgres.query["host"]).endswith("/.trading/test/postgres")
    if os.environ.get("REDIS_URL"):
        assert redis_server_url == os.environ["REDIS_URL"]
    else:
        assert redis_server_url.startswith("redis://127.0.0.1:")


async def _create_marker_table(database_url: str) -> int:
    conn = await _connect(database_url)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        # Without IF NOT EXISTS: fails if another test's table were visible here.
        await conn.execute("CREATE TABLE marker (n int)")
        return int(tables)
    finally:
        await conn.close()


async def test_database_url_is_a_fresh_empty_database(database_url: str) -> None:
    assert make_url(database_url).database.startswith("test_")
    assert await _create_marker_table(database_url) == 0


async def test_another_test_gets_another_fresh_database(database_url: str) -> None:
    assert await _create_marker_table(database_url) == 0


async def test_redis_namespace_is_unique_on_a_live_server(
    redis_server_url: str, redis_namespace: str
) -> None:
    client = aioredis.from_url(redis_server_url)
    try:
        key = f"{redis_namespace}probe"
        assert await client.set(key, "1", nx=True, ex=60) is True
        await client.delete(key)
    finally:
        await client.aclose()
    assert redis_namespace.startswith("test:") and redis_namespace.endswith(":")
