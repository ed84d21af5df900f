"""DRY_RUN=false against the exchange simulator, crash recovery, and the service process."""

from __future__ import annotations

import asyncio
import os
import signal as signals
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from exchange_simulator.testing import RunningSimulator, running_simulator, synthetic_candles
from order_executor.executor import OrderExecutor
from order_executor.live import LiveBroker
from order_executor.risk import RiskLimits, RiskManager
from order_executor.risk_store import RiskStateStore
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.bus_envelope import decode
from shared.config import load_settings
from shared.db import create_engine, create_order, create_sessionmaker, list_orders, list_trades
from shared.exchange import BinanceExchange, OrderRequest, client_order_id_for_signal
from shared.fill_model import FillModel
from shared.models import Order, OrderStatus, Side, Signal
from shared.streams import CANDLES, ORDERS, SIGNALS
from shared.testing.ports import unused_ports
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

D = Decimal
CANDLES_ = synthetic_candles("BTCUSDT", 80, price=D(30000), seed=7)
HISTORY = 40
PRICE = CANDLES_[HISTORY - 1].close


async def no_sleep(_: float) -> None:
    return None


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


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator({"BTCUSDT": CANDLES_}, history=HISTORY) as running:
        yield running


@pytest.fixture
async def exchange(sim: RunningSimulator) -> AsyncIterator[BinanceExchange]:
    settings = load_settings(
        binance_base_url=sim.base_url,
        binance_ws_url=sim.ws_url,
        binance_api_key=sim.api_key,
        binance_api_secret=sim.api_secret,
    )
    async with BinanceExchange(settings, sleep=no_sleep, enable_rate_limit=False) as adapter:
        yield adapter


def live_executor(sessions, redis, namespace, exchange, limits=None) -> OrderExecutor:
    return OrderExecutor(
        sessions=sessions,
        bus=EventBus(redis, namespace=namespace),
        risk=RiskManager(limits or RiskLimits()),
        fill_model=FillModel(),
        initial_cash=D(10000),
        broker=LiveBroker(exchange, fee_rate=FillModel().fee_rate),
        risk_store=RiskStateStore(redis, namespace),
    )


def buy(n: int, quantity: str = "0.01") -> Signal:
    return Signal(
        id=f"{n:032x}",
        strategy="test",
        symbol="BTCUSDT",
        interval="1m",
        side=Side.BUY,
        quantity=D(quantity),
        price=PRICE,
        candle_time=CANDLES_[HISTORY - 1].open_time,
    )


async def test_every_signal_that_passes_risk_makes_exactly_one_order_despite_dropped_answers(
    sessions, redis, redis_namespace, sim, exchange
):
    executor = live_executor(
        sessions, redis, redis_namespace, exchange, RiskLimits(max_position_size=D("0.1"))
    )
    await executor.start()
    await sim.control.add_fault("drop", path="/api/v3/order", method="POST", every=2)
    for n in range(6):
        await executor.on_signal(buy(n))
        await executor.on_signal(buy(n))  # every signal delivered twice
    async with sessions() as session:
        stored = await list_orders(session)
    passed = {o.client_order_id for o in stored if o.status is OrderStatus.FILLED}
    refused = {o.client_order_id for o in stored if o.status is OrderStatus.REJECTED}
    on_exchange = [o["clientOrderId"] for o in await sim.control.orders(api_key=sim.api_key)]
    assert len(stored) == 6 and len(passed) >= 3 and refused  # 10 % of 10000 fits ~3 buys
    assert sorted(on_exchange) == sorted(passed)  # exactly one each, none for a rejection
    # The rule cut the later BUYs to what still fits, the last ones below Binance's lot step.
    reasons = [o.reason or "" for o in stored]
    assert "risk: max_position_size" in reasons
    assert all(
        r.startswith("Filter failure: LOT_SIZE")
        for o, r in zip(stored, reasons, strict=True)
        if o.client_order_id in refused
    )
    requests = await sim.control.requests()
    assert any(r.get("status") == "dropped" for r in requests)  # the fault did fire
    assert executor.account.position("BTCUSDT") == sum(
        (o.filled_quantity for o in stored if o.status is OrderStatus.FILLED), D(0)
    )


async def test_an_order_sent_before_a_crash_is_found_on_restart_and_one_never_sent_is_sent(
    sessions, redis, redis_namespace, sim, exchange
):
    now = datetime.now(UTC)
    sent, unsent = buy(1), buy(2, "0.02")
    async with sessions.begin() as session:
        for sig in (sent, unsent):
            await create_order(
                session,
                Order(
                    client_order_id=client_order_id_for_signal(sig.id),
                    signal_id=sig.id,
                    symbol="BTCUSDT",
                    side=Side.BUY,
                    quantity=sig.quantity,
                    price=sig.price,
                    created_at=now,
                    updated_at=now,
                ),
            )
    # The crashed executor had sent the first one: the exchange filled it, the DB never knew.
    await exchange.submit_order(OrderRequest.from_signal(sent), lookup_first=False)

    executor = live_executor(sessions, redis, redis_namespace, exchange)
    await executor.start()
    on_exchange = await sim.control.orders(api_key=sim.api_key)
    assert sorted(o["clientOrderId"] for o in on_exchange) == sorted(
        client_order_id_for_signal(s.id) for s in (sent, unsent)
    )
    async with sessions() as session:
        stored = await list_orders(session)
        trades = await list_trades(session)
    assert [o.status for o in stored] == [OrderStatus.FILLED, OrderStatus.FILLED]
    assert sorted(t.quantity for t in trades) == [D("0.01"), D("0.02")]
    assert executor.account.position("BTCUSDT") == D("0.03")
    # A redelivered signal after the recovery still makes nothing new.
    await executor.on_signal(sent)
    assert len(await sim.control.orders(api_key=sim.api_key)) == 2


async def test_python_m_order_executor_fills_a_dry_run_signal_and_exits_0_on_sigterm(
    tmp_path: Path, redis, redis_namespace, redis_server_url, migrated_database_url
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BINANCE_"))}
    env.update(
        REDIS_URL=redis_server_url,
        DATABASE_URL=migrated_database_url,
        HEALTH_PORT=str(unused_ports()),
        BUS_NAMESPACE=redis_namespace,
        DRY_RUN="true",
        TRADING_DATA_DIR=str(tmp_path),
    )
    stderr = (tmp_path / "stderr.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "order_executor", env=env, stdout=stderr, stderr=stderr
    )
    try:
        bus = EventBus(redis, namespace=redis_namespace)
        first, second = CANDLES_[0], CANDLES_[1]
        await bus.publish(CANDLES, first)
        sig = buy(9).model_copy(update={"price": first.close, "candle_time": first.open_time})
        await bus.publish(SIGNALS, sig)
        await bus.publish(CANDLES, second)
        statuses: list[str] = []
        last = "0"
        async with asyncio.timeout(60):
            while "FILLED" not in statuses:
                reply = await redis.xread({redis_namespace + ORDERS: last}, block=1000)
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        event = decode(fields).event
                        if isinstance(event, Order):
                            statuses.append(event.status.value)
        assert statuses == ["PENDING", "FILLED"]
        proc.send_signal(signals.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr.close()
