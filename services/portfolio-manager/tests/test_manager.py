"""The portfolio manager on real PostgreSQL: booking once, restarts, snapshots, summaries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from portfolio_manager.manager import PortfolioManager
from shared.db import (
    Database,
    Writer,
    add_trade,
    create_engine,
    create_order,
    create_sessionmaker,
    get_position,
    list_trades,
)
from shared.metrics import PORTFOLIO_VALUE, UNREALIZED_PNL
from shared.models import Candle, Order, OrderStatus, Side, Trade
from shared.notifier import TelegramNotifier
from shared.repositories.orders import OrderNotFoundError
from shared.repositories.portfolio import latest_snapshot, snapshots_between
from shared.testing.telegram_standin import TelegramStandIn

D = Decimal
T0 = datetime(2024, 1, 1, 23, 40, tzinfo=UTC)


@pytest.fixture
async def database(migrated_database_url: str) -> AsyncIterator[Database]:
    engine = create_engine(migrated_database_url)
    yield Database(
        url=migrated_database_url,
        engine=engine,
        sessions=create_sessionmaker(engine),
        writer=Writer(engine),
    )
    await engine.dispose()


@pytest.fixture
async def telegram_standin() -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn() as standin:
        yield standin


def manager(database: Database, notifier: TelegramNotifier | None = None) -> PortfolioManager:
    return PortfolioManager(
        sessions=database.sessions,
        initial_cash=D(10000),
        snapshot_interval=timedelta(minutes=5),
        notifier=notifier,
    )


def order(n: int, side: Side, quantity: str, price: str, fee: str) -> tuple[Order, Trade]:
    time = T0 + timedelta(minutes=n)
    placed = Order(
        client_order_id=f"o{n}",
        signal_id=f"s{n}",
        symbol="BTCUSDT",
        side=side,
        quantity=D(quantity),
        status=OrderStatus.FILLED,
        filled_quantity=D(quantity),
        avg_fill_price=D(price),
        fee=D(fee),
        fee_asset="USDT",
        created_at=time,
        updated_at=time,
    )
    fill = Trade(
        trade_id=f"t{n}",
        client_order_id=f"o{n}",
        symbol="BTCUSDT",
        side=side,
        quantity=D(quantity),
        price=D(price),
        fee=D(fee),
        fee_asset="USDT",
        time=time,
    )
    return placed, fill


async def executor_stores(database: Database, placed: Order, fill: Trade | None = None) -> None:
    """What the order executor does before it publishes: the order, then its fills."""
    async with database.sessions.begin() as session:
        await create_order(session, placed)
        if fill is not None:
            await add_trade(session, fill)


def candle(minute: int, close: str, symbol: str = "BTCUSDT") -> Candle:
    price = D(close)
    return Candle(
        symbol=symbol,
        interval="1m",
        open_time=T0 + timedelta(minutes=minute),
        open=price,
        high=price,
        low=price,
        close=price,
        volume=D(1),
    )


async def test_fills_give_the_hand_computed_position_in_the_database(database: Database) -> None:
    pm = manager(database)
    await pm.start()
    fills = [
        order(1, Side.BUY, "1", "100", "0.1"),
        order(2, Side.BUY, "1", "200", "0.2"),
        order(3, Side.SELL, "1.5", "300", "0.45"),
    ]
    for placed, fill in fills:
        await executor_stores(database, placed, fill)
        await pm.on_order_event(placed)  # the filled order first, its trade after
        await pm.on_order_event(fill)
    await pm.on_candle(candle(4, "250"))

    async with database.sessions() as session:
        stored = await get_position(session, "BTCUSDT")
    assert stored is not None
    assert stored.quantity == D("0.5")
    assert stored.avg_entry_price == D(200)
    assert stored.realized_pnl == D("249.35")
    assert stored.unrealized_pnl == D("24.9")
    assert stored.fees_paid == D("0.75")
    assert stored.last_price == D(250)
    assert PORTFOLIO_VALUE._value.get() == float(D("10274.25"))
    assert UNREALIZED_PNL.labels("BTCUSDT")._value.get() == float(D("24.9"))


async def test_redelivered_trade_changes_nothing_even_after_a_restart(database: Database) -> None:
    pm = manager(database)
    await pm.start()
    placed, fill = order(1, Side.BUY, "0.5", "100", "0.05")
    await executor_stores(database, placed)
    assert await pm.book([fill]) == 1  # stored by the manager when the executor had not
    async with database.sessions() as session:
        before = await get_position(session, "BTCUSDT")
    for _ in range(3):
        await pm.on_order_event(fill)
        await pm.on_order_event(placed)
    restarted = manager(database)
    await restarted.start()
    await restarted.on_order_event(fill)
    async with database.sessions() as session:
        assert await get_position(session, "BTCUSDT") == before
        assert await list_trades(session) == [fill]
    assert restarted.portfolio.cash == pm.portfolio.cash == D(10000) - D("50.05")


async def test_trade_stored_before_a_crash_is_booked_once_on_restart(database: Database) -> None:
    placed, fill = order(1, Side.BUY, "1", "100", "0.1")
    await executor_stores(database, placed, fill)  # published, never handled: the manager died
    pm = manager(database)
    await pm.start()
    async with database.sessions() as session:
        recovered = await get_position(session, "BTCUSDT")
    assert recovered is not None
    assert (recovered.quantity, recovered.fees_paid) == (D(1), D("0.1"))
    await pm.on_order_event(fill)  # the redelivery
    assert pm.portfolio.cash == D(10000) - D("100.1")
    assert pm.portfolio.books["BTCUSDT"].quantity == D(1)


async def test_snapshots_at_each_interval_and_midnight_with_one_daily_summary(
    database: Database, telegram_standin: TelegramStandIn
) -> None:
    notifier = TelegramNotifier("1:token", "42", api_url=telegram_standin.api_url, enabled=True)
    await notifier.start()
    pm = manager(database, notifier)
    await pm.start()
    placed, fill = order(0, Side.BUY, "1", "100", "0")
    await executor_stores(database, placed, fill)
    await pm.on_order_event(fill)
    # 23:40 .. 00:09 by candle time; candles of another symbol do not move the clock back.
    for minute in range(30):
        await pm.on_candle(candle(minute, str(100 + minute)))
        await pm.on_candle(candle(minute, "5", symbol="ETHUSDT"))
    await notifier.close()

    async with database.sessions() as session:
        snapshots = await snapshots_between(session)
    midnight = datetime(2024, 1, 2, tzinfo=UTC)
    expected_times = [midnight + timedelta(minutes=m) for m in (-15, -10, -5, 0, 5, 10)]
    assert [s.time for s in snapshots] == expected_times
    at_midnight = snapshots[3]
    # The candle opened at 23:59 closes at 00:00 at 119: one BTC held, bought at 100.
    assert at_midnight.positions_value == D(119)
    assert at_midnight.total_value == D(10000) - 100 + 119
    summaries = [m.text for m in telegram_standin.messages if "Daily summary" in m.text]
    assert len(summaries) == 1
    assert "PnL: 19" in summaries[0]
    assert "BTCUSDT" in summaries[0]

    # A restart resumes the clock from the last snapshot: redelivered candles take none again.
    restarted = manager(database)
    await restarted.start()
    for minute in range(30):
        await restarted.on_candle(candle(minute, str(100 + minute)))
    async with database.sessions() as session:
        assert len(await snapshots_between(session)) == len(expected_times)


async def test_a_fill_booked_after_the_snapshot_it_belongs_to_is_put_into_that_snapshot(
    database: Database,
) -> None:
    """A fill at a candle's open reaches this service on the orders stream, usually after the
    candle itself (whose close took the snapshot): the snapshot is taken again with it, so
    the latest snapshot is the value as of its time, as the backtest reports it."""
    pm = manager(database)  # a snapshot every 5 minutes
    await pm.start()
    for minute in range(5):  # candles 0..4; the close of 4 (minute 5) takes a snapshot
        await pm.on_candle(candle(minute, "100"))
    placed, fill = order(4, Side.BUY, "1", "100", "0.1")  # filled at the open of candle 4
    await executor_stores(database, placed, fill)
    await pm.on_order_event(fill)
    async with database.sessions() as session:
        latest = await latest_snapshot(session)
        every = await snapshots_between(session)
    assert latest is not None and latest.time == T0 + timedelta(minutes=5)
    assert latest.positions_value == D(100)
    assert latest.total_value == D(10000) - D("0.1")
    assert [s.time for s in every] == [latest.time, latest.time]  # the first one is kept

    # Once a later candle has marked the portfolio, the late fill waits for the next one.
    await pm.on_candle(candle(5, "110"))
    late_placed, late_fill = order(3, Side.BUY, "1", "100", "0")
    await executor_stores(database, late_placed, late_fill)
    await pm.on_order_event(late_fill)
    async with database.sessions() as session:
        assert len(await snapshots_between(session)) == 2


async def test_trade_of_an_unknown_order_raises_and_books_nothing(database: Database) -> None:
    pm = manager(database)
    await pm.start()
    _, fill = order(1, Side.BUY, "1", "100", "0.1")
    with pytest.raises(OrderNotFoundError):
        await pm.on_order_event(fill)  # the bus retries it, then dead-letters it
    assert pm.portfolio.cash == D(10000)
    assert not pm.portfolio.has_applied(fill)
    async with database.sessions() as session:
        assert await get_position(session, "BTCUSDT") is None
