"""The hot-path writes on the asyncpg connection (`DriverStatement`): the same rows as through
SQLAlchemy, joined to a caller's transaction, and a dropped connection replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from shared.db import (
    Writer,
    create_engine,
    get_order,
    insert_order,
    latest_candle,
    list_positions,
    list_trades,
    snapshots_between,
    store_marks,
    update_order_with_trade,
    upsert_candles,
)
from shared.models import Candle, Order, OrderStatus, PortfolioSnapshot, Position, Side, Trade
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

T0 = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    yield engine
    await engine.dispose()


def order(client_order_id: str) -> Order:
    return Order(
        client_order_id=client_order_id,
        signal_id="sig-1",
        strategy="macd",
        symbol="BTCUSDT",
        side=Side.BUY,
        quantity=Decimal("0.015"),
        price=Decimal("42000.5"),
        reason="MACD crossed above its signal line",
        created_at=T0,
        updated_at=T0,
    )


def filled(client_order_id: str) -> tuple[Order, Trade]:
    """The order filled at 42001 with its trade."""
    done = order(client_order_id).model_copy(
        update={
            "status": OrderStatus.FILLED,
            "filled_quantity": Decimal("0.015"),
            "avg_fill_price": Decimal("42001"),
            "fee": Decimal("0.63"),
            "fee_asset": "USDT",
            "updated_at": T0 + timedelta(minutes=1),
        }
    )
    trade = Trade(
        trade_id=f"{client_order_id}-1",
        client_order_id=client_order_id,
        symbol="BTCUSDT",
        side=Side.BUY,
        quantity=Decimal("0.015"),
        price=Decimal("42001"),
        fee=Decimal("0.63"),
        fee_asset="USDT",
        time=T0 + timedelta(minutes=1),
    )
    return done, trade


def position(minute: int) -> Position:
    return Position(
        symbol="BTCUSDT",
        quantity=Decimal("0.015"),
        avg_entry_price=Decimal("42001"),
        unrealized_pnl=Decimal(minute),
        last_price=Decimal(42001 + minute),
        updated_at=T0 + timedelta(minutes=minute),
    )


def snapshot(minute: int) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        time=T0 + timedelta(minutes=minute),
        cash=Decimal("9369.35"),
        positions_value=Decimal("630.03"),
        total_value=Decimal("9999.38"),
    )


def candle(minute: int) -> Candle:
    return Candle(
        symbol="BTCUSDT",
        interval="1m",
        open_time=T0 + timedelta(minutes=minute),
        open=Decimal("100.1"),
        high=Decimal("101"),
        low=Decimal("99.5"),
        close=Decimal("100.7"),
        volume=Decimal("3.25"),
    )


@contextmanager
def statements_through_sqlalchemy(engine: AsyncEngine) -> Iterator[list[str]]:
    """The statements SQLAlchemy executes meanwhile (its cursor events)."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def test_on_an_autocommit_connection_the_insert_runs_on_the_driver_and_commits(
    engine: AsyncEngine,
) -> None:
    writer = Writer(engine, hold=True)
    try:
        with statements_through_sqlalchemy(engine) as seen:
            stored = await writer.statement(lambda c: insert_order(c, order("cid-1")))
            again = await writer.statement(lambda c: insert_order(c, order("cid-1")))
            new = await writer.statement(lambda c: upsert_candles(c, [candle(0)]))
            repeated = await writer.statement(lambda c: upsert_candles(c, [candle(0)]))
            done, trade = filled("cid-1")
            updated = await writer.statement(lambda c: update_order_with_trade(c, done, trade))
            await writer.statement(lambda c: store_marks(c, position(1), [snapshot(1)]))
            await writer.statement(lambda c: store_marks(c, position(2), []))
            await writer.statement(lambda c: store_marks(c, None, [snapshot(3)]))
        assert not [s for s in seen if s.startswith(("INSERT", "WITH"))]
    finally:
        await writer.close()
    assert stored == order("cid-1") and again is None  # the row as stored; then a repeat
    assert (new, repeated) == (1, 0)
    assert updated == done
    async with engine.connect() as connection:  # another connection sees them: committed
        assert await get_order(connection, "cid-1") == done
        assert await list_trades(connection) == [trade]
        assert await latest_candle(connection, "BTCUSDT", "1m") == candle(0)
        assert await list_positions(connection) == [position(2)]
        assert await snapshots_between(connection) == [snapshot(1), snapshot(3)]


async def test_in_a_transaction_the_insert_joins_it_and_rolls_back_with_it(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        assert await insert_order(connection, order("cid-2")) == order("cid-2")
        assert await upsert_candles(connection, [candle(1)]) == 1
        done, trade = filled("cid-2")
        assert await update_order_with_trade(connection, done, trade) == done
        await transaction.rollback()
    async with engine.connect() as connection:
        assert await get_order(connection, "cid-2") is None
        assert await list_trades(connection) == []
        assert await latest_candle(connection, "BTCUSDT", "1m") is None


async def test_a_connection_the_server_dropped_is_replaced_and_the_insert_run_again(
    engine: AsyncEngine,
) -> None:
    writer = Writer(engine, hold=True)
    try:
        first = await writer.statement(lambda c: c.execute(text("SELECT pg_backend_pid()")))
        pid = first.scalar_one()
        async with engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        stored = await writer.statement(lambda c: insert_order(c, order("cid-3")))
        assert stored is not None and stored.status is OrderStatus.PENDING
        assert await writer.statement(lambda c: upsert_candles(c, [candle(2)])) == 1
    finally:
        await writer.close()
    async with engine.connect() as connection:
        assert await get_order(connection, "cid-3") == order("cid-3")
