"""`python -m portfolio_manager` as its own process: fills and candles in, positions out."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.db import (
    Database,
    Writer,
    add_trade,
    create_engine,
    create_order,
    create_sessionmaker,
    get_position,
    latest_snapshot,
)
from shared.models import Candle, Order, OrderStatus, Position, Side, Trade
from shared.streams import CANDLES, ORDERS
from shared.testing.ports import unused_ports

ROOT = Path(__file__).resolve().parents[3]
D = Decimal
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


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
async def bus(redis_server_url: str, redis_namespace: str) -> AsyncIterator[EventBus]:
    redis = Redis.from_url(redis_server_url)
    yield EventBus(redis, namespace=redis_namespace)
    keys = [key async for key in redis.scan_iter(match=f"{redis_namespace}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def position_when(database: Database, ready: object, within: float = 60) -> Position:
    """Poll the stored position until `ready(position)` holds (the service's output)."""
    async with asyncio.timeout(within):
        while True:
            async with database.sessions() as session:
                position = await get_position(session, "BTCUSDT")
            if position is not None and ready(position):  # type: ignore[operator]
                return position
            await asyncio.sleep(0.05)


async def test_service_books_fills_marks_to_candles_and_stops_on_sigterm(
    tmp_path: Path,
    database: Database,
    bus: EventBus,
    redis_server_url: str,
    redis_namespace: str,
) -> None:
    placed = Order(
        client_order_id="o1",
        symbol="BTCUSDT",
        side=Side.BUY,
        quantity=D("0.2"),
        status=OrderStatus.FILLED,
        filled_quantity=D("0.2"),
        avg_fill_price=D(60000),
        fee=D(12),
        fee_asset="USDT",
        created_at=T0,
        updated_at=T0,
    )
    fill = Trade(
        trade_id="1",
        client_order_id="o1",
        symbol="BTCUSDT",
        side=Side.BUY,
        quantity=D("0.2"),
        price=D(60000),
        fee=D(12),
        fee_asset="USDT",
        time=T0,
    )
    async with database.sessions.begin() as session:  # as the executor does, before publishing
        await create_order(session, placed)
        await add_trade(session, fill)
    await bus.publish(ORDERS, placed)
    await bus.publish(ORDERS, fill)
    await bus.publish(ORDERS, fill)  # a redelivery
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TELEGRAM_", "BINANCE_", "HEALTH_", "LOG_", "PORTFOLIO_"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        DATABASE_URL=database.url,
        REDIS_URL=redis_server_url,
        BUS_NAMESPACE=redis_namespace,
        HEALTH_PORT=str(unused_ports()),
        PORTFOLIO_SNAPSHOT_INTERVAL="60",
        PORTFOLIO_INITIAL_CASH="20000",
        TRADING_DATA_DIR=str(tmp_path / "data"),
        LOG_FORMAT="json",
    )
    log = tmp_path / "service.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "portfolio_manager",
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=sink,
        )
    try:
        booked = await position_when(database, lambda p: p.quantity > 0)
        assert booked.quantity == D("0.2")
        assert booked.avg_entry_price == D(60000)
        await bus.publish(
            CANDLES,
            Candle(
                symbol="BTCUSDT",
                interval="1m",
                open_time=T0,
                open=D(60000),
                high=D(61000),
                low=D(59000),
                close=D(61000),
                volume=D(3),
            ),
        )
        marked = await position_when(database, lambda p: p.last_price == D(61000))
        # 0.2 × 61000 − 0.2 × 60000 − the entry fee 12
        assert marked.unrealized_pnl == D(188)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0, log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    async with database.sessions() as session:
        snapshot = await latest_snapshot(session)
    assert snapshot is not None
    assert snapshot.time == T0 + timedelta(minutes=1)
    assert snapshot.cash == D(20000) - D(12000) - D(12)
    assert snapshot.total_value == snapshot.cash + D(12200)
