"""URLs, connection errors and `open_database`: the edges of the PostgreSQL layer."""

from __future__ import annotations

import socket

import pytest
from shared.config import load_settings
from shared.db import (
    DatabaseConnectionError,
    create_engine,
    current_revision,
    describe_database,
    head_revision,
    latest_candle,
    normalise_database_url,
    open_database,
    upgrade_to_head,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/trading", "postgresql+asyncpg://u:p@db:5432/trading"),
        ("postgres://u:p@db/trading", "postgresql+asyncpg://u:p@db/trading"),
        ("postgresql+asyncpg://u@db/trading", "postgresql+asyncpg://u@db/trading"),
        ("postgresql+psycopg2://u@db/trading", "postgresql+asyncpg://u@db/trading"),
        (
            "postgresql://postgres@/trading?host=/data/postgres",
            "postgresql+asyncpg://postgres@/trading?host=%2Fdata%2Fpostgres",
        ),
        (" postgresql://u:p%40ss@db/trading ", "postgresql+asyncpg://u:p%40ss@db/trading"),
    ],
)
def test_postgres_urls_get_the_asyncpg_driver(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected
    assert make_url(normalise_database_url(given)).password == make_url(given.strip()).password


def test_a_url_that_is_not_postgresql_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="only PostgreSQL is supported") as refused:
        normalise_database_url("mysql://root:hunter2@db/trading")
    assert "hunter2" not in str(refused.value)

    with pytest.raises(ValueError, match="not a valid URL") as unparsable:
        normalise_database_url("hunter2 is not a url")
    assert "hunter2" not in str(unparsable.value)


def test_describe_database_never_shows_the_password() -> None:
    assert (
        describe_database("postgresql+asyncpg://trader:hunter2@db.local:6543/trading")
        == "database 'trading' at trader@db.local:6543"
    )
    assert (
        describe_database("postgresql+asyncpg://postgres@/trading?host=/data/pg")
        == "database 'trading' at postgres@/data/pg"
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_gives_one_line_naming_host_and_what_to_check() -> None:
    port = _closed_port()
    url = f"postgresql://trader:hunter2@127.0.0.1:{port}/trading"

    with pytest.raises(DatabaseConnectionError) as refused:
        upgrade_to_head(url)

    message = str(refused.value)
    assert f"127.0.0.1:{port}" in message
    assert "check that PostgreSQL is running" in message
    assert "hunter2" not in message
    assert "\n" not in message


def test_a_missing_database_says_to_create_it(postgres_server_url: str) -> None:
    url = make_url(postgres_server_url).set(database="no_such_database_for_this_test")

    with pytest.raises(DatabaseConnectionError, match="create the database") as missing:
        upgrade_to_head(url.render_as_string(hide_password=False))
    assert "no_such_database_for_this_test" in str(missing.value)


async def test_open_database_migrates_and_hands_out_sessions(database_url: str) -> None:
    settings = load_settings(database_url=database_url)

    async with await open_database(settings) as database:
        assert database.url == normalise_database_url(database_url)
        assert await current_revision(database_url) == head_revision()
        async with database.sessions() as session:
            assert await latest_candle(session, "BTCUSDT", "1m") is None


async def test_open_database_without_migrating_leaves_the_schema_alone(database_url: str) -> None:
    database = await open_database(load_settings(database_url=database_url), migrate=False)
    try:
        async with database.engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
        assert await current_revision(database_url) is None
    finally:
        await database.close()


async def test_engine_accepts_a_plain_postgresql_url(database_url: str) -> None:
    plain = make_url(database_url).set(drivername="postgresql")
    engine = create_engine(plain.render_as_string(hide_password=False))
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_the_database_handle_does_not_show_the_password_in_its_repr(
    database_url: str,
) -> None:
    with_password = make_url(database_url).set(password="hunter2")
    database = await open_database(
        load_settings(database_url=with_password.render_as_string(hide_password=False)),
        migrate=False,
    )
    try:
        assert "hunter2" in database.url
        assert "hunter2" not in repr(database)
    finally:
        await database.close()
