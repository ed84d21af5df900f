"""URLs, connection errors and `open_database`: the edges of the PostgreSQL layer."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from shared.config import load_settings
from shared.db import (
    DatabaseConnectionError,
    add_signal,
    create_engine,
    current_revision,
    describe_database,
    get_signal,
    head_revision,
    latest_candle,
    normalise_database_url,
    open_database,
    upgrade_to_head,
)
from shared.models import Side, Signal
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection


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


async def test_the_writer_replaces_a_connection_the_server_dropped(database_url: str) -> None:
    # What pool_pre_ping did for the sessions, without its round trips: a pooled connection
    # that died (PostgreSQL restarted) is replaced and the work run once more.
    async with await open_database(load_settings(database_url=database_url)) as database:

        async def backend(connection: AsyncConnection) -> int:
            return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())

        first = await database.writer.statement(backend)
        async with database.engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})

        assert await database.writer.statement(backend) != first


async def test_the_writer_commits_a_statement_and_rolls_back_a_failed_transaction(
    migrated_database_url: str,
) -> None:
    async with await open_database(load_settings(database_url=migrated_database_url)) as database:
        signal = Signal(
            id="writer-test-signal",
            strategy="rsi",
            symbol="BTCUSDT",
            interval="1m",
            side=Side.BUY,
            price=Decimal("100"),
            quantity=Decimal("0.001"),
            candle_time=datetime(2024, 1, 1, tzinfo=UTC),
        )

        async def store_then_fail(connection: AsyncConnection) -> None:
            await add_signal(connection, signal)
            raise RuntimeError("after the insert")

        with pytest.raises(RuntimeError):
            await database.writer.transaction(store_then_fail)
        async with database.sessions() as session:
            assert await get_signal(session, signal.id) is None

        assert await database.writer.statement(lambda c: add_signal(c, signal)) is True
        async with database.sessions() as session:
            assert await get_signal(session, signal.id) == signal
        assert await database.writer.statement(lambda c: add_signal(c, signal)) is False
