"""scratch_database: an empty database of its own for a bench, gone afterwards."""

from __future__ import annotations

import pytest
from shared.db import create_engine
from shared.testing.databases import scratch_database
from sqlalchemy import text


async def _databases(server_url: str) -> set[str]:
    engine = create_engine(server_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT datname FROM pg_database"))
            return {row[0] for row in rows}
    finally:
        await engine.dispose()


async def test_a_scratch_database_is_made_empty_and_dropped_even_after_an_error(
    postgres_server_url: str,
) -> None:
    with pytest.raises(RuntimeError, match="the bench failed"):
        async with scratch_database(postgres_server_url, "test_scratch") as url:
            name = url.rsplit("/", 1)[1].split("?")[0]
            assert name.startswith("test_scratch_") and name in await _databases(
                postgres_server_url
            )
            assert await _databases(url)  # reachable under the URL it gave
            engine = create_engine(url)
            async with engine.connect() as connection:
                tables = await connection.execute(
                    text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                )
                assert tables.scalar_one() == 0
            await engine.dispose()
            raise RuntimeError("the bench failed")
    assert name not in await _databases(postgres_server_url)
