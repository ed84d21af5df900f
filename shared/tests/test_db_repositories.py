"""Round trips through the order, trade, position, snapshot and signal repositories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from shared.db import (
    OrderNotFoundError,
    add_signal,
    add_snapshot,
    add_trade,
    create_engine,
    create_order,
    create_sessionmaker,
    get_order,
    get_position,
    get_signal,
    latest_snapshot,
    list_orders,
    list_positions,
    list_trades,
    snapshots_between,
    store_marks,
    update_order,
    update_order_with_trade,
    upsert_position,
)
from shared.models import (
    Order,
    OrderStatus,
    OrderType,
    PortfolioSnapshot,
    Position,
    Side,
    Signal,
    Trade,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

TINY = Decimal("0.00000001")
HUGE = Decimal("987654321098765432109876543210.000000000000000001")
SEOUL = timezone(timedelta(hours=9))
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=SEOUL)  # 00:00 UTC


@pytest.fixture
async def sessions(migrated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def make_order(client_order_id: str = "sig-1", **changes: object) -> Order:
    values: dict[str, object] = {
        "client_order_id": client_order_id,
        "signal_id": "signal-1",
        "strategy": "ema_crossover",
        "symbol": "BTCUSDT",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "quantity": TINY,
        "price": HUGE,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(changes)
    return Order.model_validate(values)


def make_trade(trade_id: str = "1", client_order_id: str = "sig-1", **changes: object) -> Trade:
    values: dict[str, object] = {
        "trade_id": trade_id,
        "client_order_id": client_order_id,
        "symbol": "BTCUSDT",
        "side": Side.BUY,
        "quantity": TINY,
        "price": HUGE,
        "fee": TINY,
        "fee_asset": "BNB",
        "time": T0,
    }
    values.update(changes)
    return Trade.model_validate(values)


def make_snapshot(step: int, unit: timedelta) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        time=T0 + step * unit,
        cash=HUGE,
        positions_value=TINY * step,
        total_value=HUGE + TINY * step,
        realized_pnl=Decimal("-1.5"),
        fees_paid=TINY,
    )


def assert_utc(*moments: datetime) -> None:
    for moment in moments:
        assert moment.utcoffset() == timedelta(0), moment


async def test_order_round_trip_is_exact(sessions) -> None:
    order = make_order()
    async with sessions.begin() as session:
        assert await create_order(session, order) == order

    async with sessions() as session:
        stored = await get_order(session, "sig-1")
        assert await get_order(session, "unknown") is None
    assert stored == order
    assert stored is not None
    assert (stored.quantity, stored.price) == (TINY, HUGE)
    assert str(stored.price) == str(HUGE)
    assert_utc(stored.created_at, stored.updated_at)
    assert stored.created_at == datetime(2024, 3, 1, tzinfo=UTC)


async def test_creating_an_order_twice_is_idempotent_and_returns_the_stored_one(sessions) -> None:
    first = make_order()
    async with sessions.begin() as session:
        await create_order(session, first)
    retried = make_order(quantity=Decimal(5), created_at=T0 + timedelta(minutes=1))
    async with sessions.begin() as session:
        assert await create_order(session, retried) == first

    async with sessions() as session:
        assert await list_orders(session) == [first]


async def test_updating_an_order_keeps_its_creation_time(sessions) -> None:
    order = make_order()
    async with sessions.begin() as session:
        await create_order(session, order)
    later = T0 + timedelta(seconds=3)
    filled = order.model_copy(
        update={
            "status": OrderStatus.FILLED,
            "filled_quantity": TINY,
            "avg_fill_price": Decimal("42000.12345678"),
            "fee": TINY,
            "fee_asset": "BTC",
            "exchange_order_id": "123456",
            "created_at": later,  # ignored: an order's creation time never changes
            "updated_at": later,
        }
    )
    async with sessions.begin() as session:
        updated = await update_order(session, filled)

    assert updated == filled.model_copy(update={"created_at": order.created_at})
    async with sessions() as session:
        assert await get_order(session, "sig-1") == updated


async def test_updating_an_order_never_created_names_its_client_order_id(sessions) -> None:
    async with sessions() as session:
        with pytest.raises(OrderNotFoundError, match=r"'nope'.*create_order"):
            await update_order(session, make_order("nope"))


async def test_orders_listed_by_status_and_symbol(sessions) -> None:
    pending = make_order("a")
    sent = make_order("b", status=OrderStatus.SENT, created_at=T0 + timedelta(seconds=1))
    eth = make_order("c", symbol="ETHUSDT", created_at=T0 + timedelta(seconds=2))
    async with sessions.begin() as session:
        for order in (eth, sent, pending):
            await create_order(session, order)

    async with sessions() as session:
        assert await list_orders(session) == [pending, sent, eth]
        open_statuses = [OrderStatus.PENDING, OrderStatus.SENT]
        assert await list_orders(session, statuses=open_statuses, symbol="BTCUSDT") == [
            pending,
            sent,
        ]
        assert await list_orders(session, statuses=[OrderStatus.FILLED]) == []


async def test_trade_round_trip_and_duplicates(sessions) -> None:
    async with sessions.begin() as session:
        await create_order(session, make_order("sig-1"))
        await create_order(session, make_order("sig-2", symbol="ETHUSDT"))
    first = make_trade("7")
    second = make_trade("8", time=T0 + timedelta(seconds=1))
    # Binance numbers trades per symbol: the same id on another symbol is another trade.
    other_symbol = make_trade("7", "sig-2", symbol="ETHUSDT", time=T0 + timedelta(seconds=2))
    async with sessions.begin() as session:
        assert await add_trade(session, second)
        assert await add_trade(session, first)
        assert await add_trade(session, other_symbol)
        assert not await add_trade(session, first)

    async with sessions() as session:
        everything = await list_trades(session)
        assert await list_trades(session, client_order_id="sig-1") == [first, second]
        assert await list_trades(session, symbol="ETHUSDT") == [other_symbol]
        assert await list_trades(session, since=second.time) == [second, other_symbol]
    assert everything == [first, second, other_symbol]
    assert (everything[0].quantity, everything[0].price, everything[0].fee) == (TINY, HUGE, TINY)
    assert_utc(*(trade.time for trade in everything))


async def test_a_trade_of_an_unknown_order_is_refused(sessions) -> None:
    async with sessions() as session:
        with pytest.raises(OrderNotFoundError, match="'ghost'"):
            await add_trade(session, make_trade(client_order_id="ghost"))


async def test_an_order_and_its_fill_are_written_in_one_statement_once(sessions) -> None:
    async with sessions.begin() as session:
        order = await create_order(session, make_order("sig-1"))
    filled = order.model_copy(
        update={
            "status": OrderStatus.FILLED,
            "filled_quantity": TINY,
            "avg_fill_price": HUGE,
            "fee": TINY,
            "fee_asset": "USDT",
            "updated_at": T0 + timedelta(minutes=1),
        }
    )
    trade = make_trade("sig-1-1")
    for _ in range(2):  # written again (a retry after a lost answer): the same rows
        async with sessions.begin() as session:
            assert await update_order_with_trade(session, filled, trade) == filled
    async with sessions() as session:
        assert await get_order(session, "sig-1") == filled
        assert await list_trades(session) == [trade]


async def test_a_fill_of_an_unknown_order_stores_nothing(sessions) -> None:
    async with sessions() as session:
        with pytest.raises(OrderNotFoundError, match="'ghost'"):
            await update_order_with_trade(
                session, make_order("ghost"), make_trade(client_order_id="ghost")
            )
        with pytest.raises(ValueError, match="not a fill"):
            await update_order_with_trade(session, make_order("sig-1"), make_trade("1", "other"))
        assert await list_trades(session) == []


async def test_position_upsert_replaces_the_stored_one(sessions) -> None:
    opened = Position(
        symbol="BTCUSDT",
        quantity=TINY,
        avg_entry_price=HUGE,
        realized_pnl=Decimal("-0.00000001"),
        updated_at=T0,
    )
    changed = opened.model_copy(
        update={
            "quantity": Decimal("0.5"),
            "unrealized_pnl": Decimal("12.5"),
            "fees_paid": TINY,
            "last_price": Decimal("43000"),
            "updated_at": T0 + timedelta(minutes=1),
        }
    )
    eth = Position(symbol="ETHUSDT", quantity=Decimal(0), updated_at=T0)
    async with sessions.begin() as session:
        assert await upsert_position(session, opened) == opened
        assert await upsert_position(session, eth) == eth
        assert await upsert_position(session, changed) == changed

    async with sessions() as session:
        stored = await get_position(session, "BTCUSDT")
        assert await get_position(session, "SOLUSDT") is None
        assert await list_positions(session) == [changed, eth]
    assert stored == changed
    assert stored is not None
    assert stored.avg_entry_price == HUGE
    assert_utc(stored.updated_at)


async def test_snapshots_latest_and_range(sessions) -> None:
    snapshots = [make_snapshot(hour, timedelta(hours=1)) for hour in range(3)]
    async with sessions.begin() as session:
        assert await latest_snapshot(session) is None
        for snapshot in reversed(snapshots):
            await add_snapshot(session, snapshot)

    async with sessions() as session:
        latest = await latest_snapshot(session)
        in_range = await snapshots_between(session, snapshots[1].time, snapshots[2].time)
        everything = await snapshots_between(session)
    assert latest == snapshots[2]
    assert latest is not None
    assert latest.total_value == HUGE + TINY * 2
    assert in_range == snapshots[1:2]
    assert everything == snapshots
    assert_utc(*(s.time for s in everything))


async def test_marks_are_stored_in_one_autocommit_statement_or_all_in_a_transaction(
    migrated_database_url: str,
) -> None:
    def snapshot(minute: int) -> PortfolioSnapshot:
        return make_snapshot(minute, timedelta(minutes=1))

    def position(minute: int) -> Position:
        return Position(
            symbol="BTCUSDT",
            quantity=TINY,
            avg_entry_price=HUGE,
            unrealized_pnl=Decimal(minute),
            last_price=Decimal(43000 + minute),
            updated_at=T0 + timedelta(minutes=minute),
        )

    engine = create_engine(migrated_database_url)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with autocommit.connect() as connection:  # one statement each: no transaction
            await store_marks(connection, position(1), [snapshot(1)])
            await store_marks(connection, position(2), [snapshot(2)])
            await store_marks(connection, position(3), [])
            await store_marks(connection, None, [snapshot(4)])
        async with engine.begin() as connection:
            await store_marks(connection, position(5), [snapshot(5), snapshot(6)])
        async with engine.begin() as connection:
            await connection.exec_driver_sql("ALTER TABLE portfolio_snapshots RENAME TO away")
        async with autocommit.connect() as connection:  # the snapshot fails: nothing stored
            with pytest.raises(Exception, match="portfolio_snapshots"):
                await store_marks(connection, position(7), [snapshot(7)])
        async with engine.begin() as connection:
            await connection.exec_driver_sql("ALTER TABLE away RENAME TO portfolio_snapshots")
        sessions = create_sessionmaker(engine)
        async with sessions() as session:
            assert await list_positions(session) == [position(5)]
            assert await snapshots_between(session) == [snapshot(m) for m in (1, 2, 4, 5, 6)]
    finally:
        await engine.dispose()


async def test_signal_round_trip_and_redelivery(sessions) -> None:
    signal = Signal(
        id="ema_crossover:BTCUSDT:1m:1709251200000:BUY",
        strategy="ema_crossover",
        symbol="BTCUSDT",
        interval="1m",
        side=Side.BUY,
        quantity=TINY,
        price=HUGE,
        candle_time=T0,
        reason="fast EMA crossed above slow EMA",
    )
    async with sessions.begin() as session:
        assert await add_signal(session, signal)
        assert not await add_signal(session, signal.model_copy(update={"reason": "again"}))

    async with sessions() as session:
        stored = await get_signal(session, signal.id)
        assert await get_signal(session, "unknown") is None
    assert stored == signal
    assert stored is not None
    assert_utc(stored.candle_time)
