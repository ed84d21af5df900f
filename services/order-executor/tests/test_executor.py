"""The order executor in dry run on real PostgreSQL and Redis: idempotence, risk rules, parity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from backtester.engine import BacktestConfig, BacktestEngine
from exchange_simulator.replay import load_candles
from order_executor.executor import STOP_LOSS_REASON, OrderExecutor
from order_executor.risk import RiskLimits, RiskManager, RiskReason
from order_executor.risk_store import RiskStateStore
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.bus_envelope import decode
from shared.db import (
    add_signal,
    create_engine,
    create_sessionmaker,
    get_order,
    list_orders,
    list_trades,
    upsert_candles,
)
from shared.exchange import client_order_id_for_signal
from shared.fill_model import FillModel
from shared.metrics import ORDERS_TOTAL, RISK_REJECTIONS_TOTAL
from shared.models import Candle, Order, OrderStatus, Side, Signal, Trade
from shared.streams import ORDERS
from shared.testing.writers import HoldingWriter, RetryingWriter
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from strategy_engine.plugin_loader import load_strategy

D = Decimal
T0 = datetime(2024, 3, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
async def sessions(migrated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def redis(redis_server_url: str, redis_namespace: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server_url)
    yield client
    keys = [key async for key in client.scan_iter(match=redis_namespace + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def make_executor(
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    namespace: str,
    limits: RiskLimits | None = None,
    cash: str = "10000",
) -> OrderExecutor:
    return OrderExecutor(
        sessions=sessions,
        bus=EventBus(redis, namespace=namespace),
        risk=RiskManager(limits or RiskLimits()),
        fill_model=FillModel(),
        initial_cash=D(cash),
        risk_store=RiskStateStore(redis, namespace),
        clock=lambda: T0,
    )


def candle(index: int, open_: str, close: str, symbol: str = "BTCUSDT") -> Candle:
    return Candle(
        symbol=symbol,
        interval="1m",
        open_time=T0 + index * MINUTE,
        open=D(open_),
        high=max(D(open_), D(close)),
        low=min(D(open_), D(close)),
        close=D(close),
        volume=D(1),
    )


def signal(at: Candle, side: Side, quantity: str, sid: str) -> Signal:
    return Signal(
        id=sid,
        strategy="test",
        symbol=at.symbol,
        interval=at.interval,
        side=side,
        quantity=D(quantity),
        price=at.close,
        candle_time=at.open_time,
    )


async def published(redis: Redis, namespace: str) -> list[Order | Trade]:
    entries = await redis.xrange(namespace + ORDERS)
    return [decode(fields).event for _, fields in entries]  # type: ignore[misc]


async def test_redelivered_signal_places_no_second_order(sessions, redis, redis_namespace):
    executor = make_executor(sessions, redis, redis_namespace)
    await executor.start()
    first = candle(0, "100", "100")
    await executor.on_candle(first)
    buy = signal(first, Side.BUY, "2", "sig-a")
    placed = await executor.on_signal(buy)
    again = await executor.on_signal(buy)  # the bus delivers it a second time
    assert again == placed and placed.status is OrderStatus.PENDING
    await executor.on_candle(candle(1, "101", "102"))
    await executor.on_signal(buy)  # and once more after it filled
    async with sessions() as session:
        orders = await list_orders(session)
        trades = await list_trades(session)
    assert len(orders) == 1 and orders[0].status is OrderStatus.FILLED
    assert [(t.quantity, t.price, t.fee) for t in trades] == [(D(2), D(101), D("0.202"))]
    assert executor.account.cash == D(10000) - D(202) - D("0.202")
    events = await published(redis, redis_namespace)
    assert [type(e).__name__ for e in events] == ["Order", "Order", "Trade"]
    assert [e.status for e in events if isinstance(e, Order)] == ["PENDING", "FILLED"]


async def test_a_signal_does_not_wait_for_the_fill_its_candle_is_still_recording(
    sessions, redis, redis_namespace
):
    # A BUY waits for the next candle's open; that candle's own signal comes a few ms after
    # the candle, while the fill is being committed. It is handled at once, against the
    # account with the fill booked; the fill is stored and announced after it.
    executor = make_executor(sessions, redis, redis_namespace)
    writer = executor.writer = HoldingWriter.for_sessions(sessions)
    await executor.start()
    c0, c1 = candle(0, "100", "100"), candle(1, "101", "102")
    await executor.on_candle(c0)
    bought = await executor.on_signal(signal(c0, Side.BUY, "2", "sig-buy"))
    writer.hold_next()
    recording = asyncio.create_task(executor.on_candle(c1))
    await writer.held.wait()  # the BUY's fill is on its way to PostgreSQL, not committed
    async with asyncio.timeout(10):  # before the change: waited for the fill, forever here
        sold = await executor.on_signal(signal(c1, Side.SELL, "2", "sig-sell"))
    assert sold.status is OrderStatus.PENDING
    assert executor.account.position("BTCUSDT") == D(2)  # the fill was booked for it
    async with sessions() as session:
        assert (await get_order(session, bought.client_order_id)).status is OrderStatus.PENDING
    writer.release.set()
    await recording
    async with sessions() as session:
        assert (await get_order(session, bought.client_order_id)).status is OrderStatus.FILLED
    events = await published(redis, redis_namespace)
    assert [(e.client_order_id, type(e).__name__, getattr(e, "status", None)) for e in events] == [
        (bought.client_order_id, "Order", "PENDING"),
        (sold.client_order_id, "Order", "PENDING"),
        (bought.client_order_id, "Order", "FILLED"),
        (bought.client_order_id, "Trade", None),
    ]


async def test_a_restarted_executor_rebuilds_cash_and_fills_the_waiting_order(
    sessions, redis, redis_namespace
):
    executor = make_executor(sessions, redis, redis_namespace)
    await executor.start()
    c0 = candle(0, "100", "100")
    await executor.on_candle(c0)
    await executor.on_signal(signal(c0, Side.BUY, "1", "sig-1"))
    c1 = candle(1, "100", "100")
    await executor.on_candle(c1)
    await executor.on_signal(signal(c1, Side.SELL, "1", "sig-2"))  # waits for a candle
    restarted = make_executor(sessions, redis, redis_namespace)
    await restarted.start()  # "crashed" with sig-2 stored PENDING
    assert restarted.account.position("BTCUSDT") == 1
    assert restarted.account.cash == executor.account.cash
    # The last final orders and their fills go out again (a crash may have eaten them).
    events = await published(redis, redis_namespace)
    filled_buy = [e for e in events if isinstance(e, Order) and e.status is OrderStatus.FILLED]
    assert len(filled_buy) == 2 and filled_buy[0] == filled_buy[1]
    assert [e.trade_id for e in events if isinstance(e, Trade)] == ["sig-sig-1-1"] * 2
    await restarted.on_candle(candle(2, "110", "110"))
    async with sessions() as session:
        orders = await list_orders(session)
    assert [o.status for o in orders] == [OrderStatus.FILLED, OrderStatus.FILLED]
    assert restarted.account.position("BTCUSDT") == 0
    assert restarted.account.cash == D(10000) - D("100.1") + D(110) - D("0.11")


async def test_a_restarted_executor_prices_every_held_position_before_its_next_candle(
    sessions, redis, redis_namespace
):
    """Portfolio value (for the max position size) counts every position at once after a
    restart, at the close of its last stored candle, not at 0 until its next candle."""
    limits = RiskLimits(max_position_size=D("0.5"))
    executor = make_executor(sessions, redis, redis_namespace, limits, cash="1000")
    await executor.start()
    btc, eth = candle(0, "10", "10"), candle(0, "20", "20", symbol="ETHUSDT")
    for bar in (btc, eth):
        await executor.on_candle(bar)
    await executor.on_signal(signal(btc, Side.BUY, "10", "btc"))
    await executor.on_signal(signal(eth, Side.BUY, "10", "eth"))
    btc1, eth1 = candle(1, "10", "12", symbol="BTCUSDT"), candle(1, "20", "30", symbol="ETHUSDT")
    async with sessions.begin() as session:
        await upsert_candles(session, [btc, eth, btc1, eth1])
    for bar in (btc1, eth1):
        await executor.on_candle(bar)  # both bought at the open of candle 1
    assert executor.account.position("ETHUSDT") == 10

    restarted = make_executor(sessions, redis, redis_namespace, limits, cash="1000")
    await restarted.start()
    assert restarted.marks == {"BTCUSDT": D(12), "ETHUSDT": D(30)}
    # cash 1000 - 100.1 - 200.2 = 699.7; value 699.7 + 10 × 12 + 10 × 30 = 1119.7; BTC may
    # reach half of it (559.85 at 12: 46.654…), it holds 10, so a BUY of 100 becomes 36.654…
    btc2 = candle(2, "12", "12")
    await restarted.on_candle(btc2)
    order = await restarted.on_signal(signal(btc2, Side.BUY, "100", "more-btc"))
    value = D("699.7") + 10 * D(12) + 10 * D(30)  # with ETH at 0 it would be 819.7
    allowed = (value * D("0.5") / D(12) - 10).quantize(D("1e-8"), rounding=ROUND_DOWN)
    assert order.quantity == allowed == D("36.65416666")


def rejections(reason: str) -> float:
    return RISK_REJECTIONS_TOTAL.labels(reason)._value.get()


async def limited_to_a_tenth(sessions, redis, redis_namespace):  # type: ignore[no-untyped-def]
    """A started executor with 1000 USDT, no position above 10 % of it, and a first candle
    at 10 taken."""
    executor = make_executor(
        sessions, redis, redis_namespace, RiskLimits(max_position_size=D("0.1")), cash="1000"
    )
    await executor.start()
    c0 = candle(0, "10", "10")
    await executor.on_candle(c0)
    return executor, c0


async def test_max_position_size_reduces_then_rejects_a_buy_and_counts_both(
    sessions, redis, redis_namespace
):
    executor, c0 = await limited_to_a_tenth(sessions, redis, redis_namespace)
    before = rejections(RiskReason.MAX_POSITION_SIZE)
    reduced = await executor.on_signal(signal(c0, Side.BUY, "50", "big"))  # 500 > 10% of 1000
    assert reduced.status is OrderStatus.PENDING and reduced.quantity == D(10)
    assert reduced.reason == "risk: max_position_size"
    await executor.on_candle(candle(1, "10", "10"))
    refused = await executor.on_signal(signal(c0, Side.BUY, "1", "more"))
    assert refused.status is OrderStatus.REJECTED and refused.reason == "risk: max_position_size"
    assert rejections(RiskReason.MAX_POSITION_SIZE) == before + 2
    assert executor.risk.state.rejections == {"max_position_size": 2}


async def test_a_redelivered_signal_reduced_by_a_risk_rule_is_counted_once(
    sessions, redis, redis_namespace
):
    # The order is inserted first and only a conflict reads the stored one back, so the risk
    # rules run again on a redelivery: their count must not.
    executor, c0 = await limited_to_a_tenth(sessions, redis, redis_namespace)
    before = rejections(RiskReason.MAX_POSITION_SIZE)
    big = signal(c0, Side.BUY, "50", "big")  # 500 > 10% of 1000
    reduced = await executor.on_signal(big)
    again = await executor.on_signal(big)  # the bus delivers it a second time
    assert again == reduced and reduced.quantity == D(10)
    assert rejections(RiskReason.MAX_POSITION_SIZE) == before + 1
    assert executor.risk.state.rejections == {"max_position_size": 1}
    assert [e.status for e in await published(redis, redis_namespace)] == ["PENDING"]


async def test_stop_loss_sells_the_position_at_the_next_open_and_is_counted(
    sessions, redis, redis_namespace
):
    executor = make_executor(sessions, redis, redis_namespace, RiskLimits(stop_loss_pct=D(5)))
    await executor.start()
    before = rejections(STOP_LOSS_REASON)
    c0 = candle(0, "100", "100")
    await executor.on_candle(c0)
    await executor.on_signal(signal(c0, Side.BUY, "1", "entry"))
    await executor.on_candle(candle(1, "100", "96"))  # filled at 100; -4 %: holds
    assert rejections(STOP_LOSS_REASON) == before
    await executor.on_candle(candle(2, "96", "95"))  # -5 %: stop loss
    assert rejections(STOP_LOSS_REASON) == before + 1
    await executor.on_candle(candle(3, "94", "94"))
    async with sessions() as session:
        orders = await list_orders(session)
    stop = orders[-1]
    assert (stop.side, stop.status, stop.reason) == (
        Side.SELL,
        OrderStatus.FILLED,
        "risk: stop_loss",
    )
    assert (stop.filled_quantity, stop.avg_fill_price) == (D(1), D(94))
    assert executor.account.position("BTCUSDT") == 0


async def test_daily_loss_limit_halts_buys_for_the_day_and_survives_a_restart(
    sessions, redis, redis_namespace
):
    limits = RiskLimits(daily_loss_limit_pct=D(2))
    executor = make_executor(sessions, redis, redis_namespace, limits)
    await executor.start()
    before = rejections(RiskReason.DAILY_LOSS_LIMIT)
    c0 = candle(0, "100", "100")
    await executor.on_candle(c0)
    await executor.on_signal(signal(c0, Side.BUY, "50", "entry"))  # 5000 of 10000
    await executor.on_candle(candle(1, "100", "100"))
    await executor.on_candle(candle(2, "100", "95"))  # -250 + fee: > 2 % of the day's start
    assert executor.risk.state.buys_halted
    restarted = make_executor(sessions, redis, redis_namespace, limits)
    await restarted.start()
    c3 = candle(3, "95", "99")
    await restarted.on_candle(c3)
    refused = await restarted.on_signal(signal(c3, Side.BUY, "1", "later"))
    assert refused.status is OrderStatus.REJECTED and refused.reason == "risk: daily_loss_limit"
    sold = await restarted.on_signal(signal(c3, Side.SELL, "50", "exit"))  # SELLs still pass
    assert sold.status is OrderStatus.PENDING
    assert rejections(RiskReason.DAILY_LOSS_LIMIT) == before + 1
    # A new UTC day lifts the halt.
    next_day = candle(int(timedelta(days=1) / MINUTE), "99", "99")
    await restarted.on_candle(next_day)
    allowed = await restarted.on_signal(signal(next_day, Side.BUY, "1", "tomorrow"))
    assert allowed.status is OrderStatus.PENDING


async def test_dry_run_fills_equal_the_backtest_on_real_candles(
    sessions, redis, redis_namespace, shared_data: Path
):
    bars = load_candles(shared_data / "BTCUSDT-1m.csv.gz", "BTCUSDT", "1m", limit=600)
    limits = RiskLimits(
        max_position_size=D("0.5"), stop_loss_pct=D("0.3"), daily_loss_limit_pct=D(3)
    )
    overrides = ["short_period=5", "long_period=13", "quantity=0.2"]
    config = BacktestConfig("BTCUSDT", "1m", initial_balance=D(10000), risk=limits)
    engine = BacktestEngine(load_strategy("ema_crossover", overrides), config)
    result = engine.run(bars)
    assert result.counts.signals >= 10  # enough to compare

    executor = make_executor(sessions, redis, redis_namespace, limits)
    await executor.start()
    strategy = load_strategy("ema_crossover", overrides)
    counted_before = ORDERS_TOTAL.labels("FILLED", "BUY")._value.get()
    for bar in bars:  # the live order: the executor sees the candle, then its signal
        await executor.on_candle(bar)
        decision = strategy.on_candle(bar)
        if decision is not None:
            await executor.on_signal(decision)

    async with sessions() as session:
        trades = await list_trades(session)
    live = [(t.time, t.side, t.quantity, t.price, t.fee) for t in trades]
    backtest = [(time, f.side, f.quantity, f.price, f.fee) for time, f in engine.simulator.fills]
    assert live == backtest
    assert executor.account.equity({"BTCUSDT": bars[-1].close}) == result.final_equity
    assert executor.risk.state.rejections == result.counts.risk_rejections
    buys = sum(1 for t in trades if t.side is Side.BUY)
    assert ORDERS_TOTAL.labels("FILLED", "BUY")._value.get() == counted_before + buys


async def test_a_signal_handled_after_later_candles_fills_at_the_open_after_its_own_candle(
    sessions, redis, redis_namespace
):
    executor = make_executor(sessions, redis, redis_namespace)
    await executor.start()
    bars = [candle(0, "100", "100"), candle(1, "101", "102"), candle(2, "103", "104")]
    for bar in bars:  # the candles consumer ran ahead of the signals consumer
        await executor.on_candle(bar)
    order = await executor.on_signal(signal(bars[0], Side.BUY, "1", "late"))
    assert (order.status, order.avg_fill_price) == (OrderStatus.FILLED, D(101))
    assert order.updated_at == bars[1].open_time


async def test_after_a_restart_late_signals_fill_at_the_open_after_their_candle_from_the_db(
    sessions, redis, redis_namespace, shared_data: Path
):
    """Candles t+1..t+10 were stored (and handled by the executor that died) before a signal
    of t reaches the restarted executor, or before the restarted one takes up the PENDING
    order of t: both fill at t+1's open, as in the backtest and the uninterrupted run."""
    bars = load_candles(shared_data / "BTCUSDT-1m.csv.gz", "BTCUSDT", "1m", limit=600)
    overrides = ["short_period=5", "long_period=13", "quantity=0.2"]
    config = BacktestConfig("BTCUSDT", "1m", initial_balance=D(10000))
    engine = BacktestEngine(load_strategy("ema_crossover", overrides), config)
    result = engine.run(bars)
    strategy = load_strategy("ema_crossover", overrides)
    decisions = [strategy.on_candle(bar) for bar in bars]
    at = [index for index, decision in enumerate(decisions) if decision is not None]
    quiet = [i for i, following in pairwise(at) if following - i > 11]
    assert len(quiet) >= 2
    late, pending = quiet[0], quiet[1]  # delivered after a restart / PENDING across one

    async def store(*stored: Candle | Signal) -> None:
        async with sessions.begin() as session:
            for item in stored:
                if isinstance(item, Candle):
                    await upsert_candles(session, [item])
                else:
                    await add_signal(session, item)

    executor = make_executor(sessions, redis, redis_namespace)
    await executor.start()
    for index, bar in enumerate(bars):
        await store(bar)  # the collector stores every closed candle before publishing it
        if pending < index <= pending + 10:  # the executor is down: the candles wait
            if index == pending + 10:
                executor = make_executor(sessions, redis, redis_namespace)
                await executor.start()  # takes up the PENDING order of `pending`
            continue
        await executor.on_candle(bar)
        if index == late + 10:  # the strategy engine's catch-up sends `late` only now
            executor = make_executor(sessions, redis, redis_namespace)
            await executor.start()
            await executor.on_signal(decisions[late])  # type: ignore[arg-type]
        decision = decisions[index]
        if decision is not None:
            await store(decision)
            if index != late:
                order = await executor.on_signal(decision)
                if index == pending:
                    assert order.status is OrderStatus.PENDING  # t+1 not stored yet

    for index in (late, pending):
        decision = decisions[index]
        assert decision is not None
        async with sessions() as session:
            order = await get_order(session, client_order_id_for_signal(decision.id))
        assert order is not None and order.status is OrderStatus.FILLED
        assert (order.updated_at, order.avg_fill_price) == (
            bars[index + 1].open_time,
            bars[index + 1].open,
        )
    async with sessions() as session:
        trades = await list_trades(session)
    live = [(t.time, t.side, t.quantity, t.price, t.fee) for t in trades]
    backtest = [(time, f.side, f.quantity, f.price, f.fee) for time, f in engine.simulator.fills]
    assert live == backtest
    assert executor.account.equity({"BTCUSDT": bars[-1].close}) == result.final_equity


async def test_a_signal_of_the_newest_candle_waits_for_the_next_without_asking_the_database(
    sessions, redis, redis_namespace
):
    """A live signal's candle is the newest the executor has handled: the next one can only
    come later on the candles stream, so the order waits for it without a lookup (a round
    trip that would find nothing, on the connection the next signal's INSERT needs). A
    signal that overtook stored candles still looks them up, on the same executor."""
    candle_queries: list[str] = []

    def count_candle_queries(conn, cursor, statement, parameters, context, executemany):
        if "FROM candles" in statement:
            candle_queries.append(statement)

    engine = sessions.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", count_candle_queries)
    try:
        executor = make_executor(sessions, redis, redis_namespace)
        await executor.start()
        bars = [candle(i, str(100 + i), str(100 + i)) for i in range(4)]
        async with sessions.begin() as session:
            await upsert_candles(session, bars[:1])
        candle_queries.clear()
        await executor.on_candle(bars[0])
        buy = await executor.on_signal(signal(bars[0], Side.BUY, "1", "sig-live"))
        assert buy.status is OrderStatus.PENDING
        assert candle_queries == []
        await executor.on_candle(bars[1])  # the next candle fills it at its open
        async with sessions() as session:
            filled = await get_order(session, buy.client_order_id)
        assert filled is not None
        assert (filled.status, filled.avg_fill_price) == (OrderStatus.FILLED, D(101))

        async with sessions.begin() as session:
            await upsert_candles(session, bars[1:])  # stored, not yet handled here
        sell = await executor.on_signal(signal(bars[2], Side.SELL, "1", "sig-ahead"))
        assert len(candle_queries) == 1  # bars[2] not seen here: its next one is looked up
        assert (sell.status, sell.avg_fill_price) == (OrderStatus.FILLED, D(103))
    finally:
        event.remove(engine, "before_cursor_execute", count_candle_queries)


async def test_a_waiting_order_fills_before_a_later_signal_that_overtook_its_candle(
    sessions, redis, redis_namespace
):
    """The executor reads candles and signals from two streams: with a burst of candles, a
    later signal can arrive before the candle that fills an earlier waiting order has been
    handled. That order's candle is stored (the collector stores before publishing), so it
    fills first, as in the backtest: a SELL right after a waiting BUY sells what it bought."""
    executor = make_executor(sessions, redis, redis_namespace)
    await executor.start()
    bars = [candle(i, str(100 + i), str(100 + i)) for i in range(6)]
    async with sessions.begin() as session:
        await upsert_candles(session, bars[:1])
    await executor.on_candle(bars[0])
    buy = await executor.on_signal(signal(bars[0], Side.BUY, "1", "sig-buy"))
    assert buy.status is OrderStatus.PENDING  # bars[1] does not exist yet
    async with sessions.begin() as session:
        await upsert_candles(session, bars[1:])  # stored and published; not yet handled here
    sell = await executor.on_signal(signal(bars[4], Side.SELL, "1", "sig-sell"))
    assert sell.status is OrderStatus.FILLED
    for bar in bars[1:]:
        await executor.on_candle(bar)  # the candle stream catches up: nothing fills twice
    async with sessions() as session:
        trades = await list_trades(session)
    assert [(t.side, t.price, t.time) for t in trades] == [
        (Side.BUY, D(101), bars[1].open_time),
        (Side.SELL, D(105), bars[5].open_time),
    ]
    assert executor.account.position("BTCUSDT") == 0


async def test_an_order_whose_insert_committed_before_its_connection_died_is_still_placed(
    sessions, redis, redis_namespace
):
    """The retried INSERT finds exactly its own order stored: it is still this signal's new
    order to publish and fill, not a redelivery (which places nothing); the retried fill
    finds its own update and trade stored: they are still announced."""
    bars = [candle(0, "100", "100"), candle(1, "101", "101")]
    async with sessions.begin() as session:
        await upsert_candles(session, bars[:1])
    executor = make_executor(sessions, redis, redis_namespace)
    executor.writer = RetryingWriter.for_sessions(sessions)
    await executor.start()
    await executor.on_candle(bars[0])
    placed = await executor.on_signal(signal(bars[0], Side.BUY, "1", "sig-died"))
    assert placed.status is OrderStatus.PENDING
    assert [e.client_order_id for e in await published(redis, redis_namespace)] == [
        placed.client_order_id
    ]
    async with sessions.begin() as session:
        await upsert_candles(session, bars[1:])
    await executor.on_candle(bars[1])
    async with sessions() as session:
        stored = await get_order(session, placed.client_order_id)
    assert stored is not None and stored.status is OrderStatus.FILLED
    events = await published(redis, redis_namespace)
    assert [(type(e).__name__, getattr(e, "status", None)) for e in events] == [
        ("Order", "PENDING"),
        ("Order", "FILLED"),
        ("Trade", None),
    ]


async def test_a_signal_redelivered_to_a_new_process_places_nothing(
    sessions, redis, redis_namespace
):
    bars = [candle(0, "100", "100")]
    buy = signal(bars[0], Side.BUY, "1", "sig-again")
    first = make_executor(sessions, redis, redis_namespace)
    await first.start()
    await first.on_candle(bars[0])
    placed = await first.on_signal(buy)
    later = OrderExecutor(
        sessions=sessions,
        bus=EventBus(redis, namespace=redis_namespace),
        risk=RiskManager(RiskLimits()),
        fill_model=FillModel(),
        initial_cash=D(10000),
        risk_store=RiskStateStore(redis, redis_namespace),
        clock=lambda: T0 + MINUTE,  # a later process: its order would be made later
    )
    await later.start()
    events = len(await published(redis, redis_namespace))
    assert await later.on_signal(buy) == placed
    assert len(await published(redis, redis_namespace)) == events
