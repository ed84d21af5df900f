"""How long a strategy-engine restart takes to replay an instance's whole feed.

    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
    REDIS_URL=redis://127.0.0.1:6379/0 PYTHONPATH=. \\
    uv run --frozen python services/strategy-engine/bench/replay.py [CANDLES]

Stores the first CANDLES (default 70,000) 1m candles of ../shared/data/BTCUSDT-1m.csv.gz in a
fresh database of DATABASE_URL's server (dropped afterwards), records an EMA crossover
instance's feed start at the first and its progress at the last, and times
`StrategyEngine.start` (the replay, paged by `REPLAY_PAGE`) against the old warm-up of
``warmup_period`` candles. Keys go under a unique Redis namespace, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import itertools
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from redis.asyncio import Redis
from shared.bus import EventBus
from shared.db import (
    create_engine,
    create_sessionmaker,
    recent_candles,
    upgrade_to_head,
    upsert_candles,
)
from shared.models import Candle
from shared.testing.databases import scratch_database
from strategy_engine.engine import FEED_START_KEY, PROGRESS_KEY, StrategyEngine
from strategy_engine.instances import StrategyInstance

from strategies.ema_crossover_strategy import EmaCrossoverStrategy

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "BTCUSDT-1m.csv.gz"


def read(count: int) -> list[Candle]:
    with gzip.open(DATA, "rt", newline="") as handle:
        return [
            Candle(
                symbol="BTCUSDT",
                interval="1m",
                open_time=datetime.fromtimestamp(int(row["open_time"]) / 1000, UTC),
                open=Decimal(row["open"]),
                high=Decimal(row["high"]),
                low=Decimal(row["low"]),
                close=Decimal(row["close"]),
                volume=Decimal(row["volume"]),
            )
            for row in itertools.islice(csv.DictReader(handle), count)
        ]


async def bench(count: int) -> None:
    async with scratch_database(os.environ["DATABASE_URL"], "bench_replay") as url:
        await measure(count, url)


async def measure(count: int, url: str) -> None:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    bus = EventBus(redis, namespace=f"bench:{uuid.uuid4().hex[:8]}:")
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        candles = read(count)
        for start in range(0, len(candles), 10_000):
            async with sessions.begin() as session:
                await upsert_candles(session, candles[start : start + 10_000])
        strategy = EmaCrossoverStrategy({"short_period": 9, "long_period": 21})
        instance = StrategyInstance("ema", strategy, "BTCUSDT", "1m")
        first, last = candles[0].open_time, candles[-1].open_time
        await redis.hset(bus.key(FEED_START_KEY), "ema", str(int(first.timestamp() * 1000)))
        await redis.hset(bus.key(PROGRESS_KEY), "ema", str(int(last.timestamp() * 1000)))

        started = time.perf_counter()
        await StrategyEngine([instance], sessions=sessions, bus=bus).start(
            now=last + timedelta(minutes=1)
        )
        replay = time.perf_counter() - started

        started = time.perf_counter()
        strategy.reset()
        async with sessions() as session:
            warmup = await recent_candles(
                session, "BTCUSDT", "1m", strategy.warmup_period, before=last + timedelta(1)
            )
        for candle in warmup:
            strategy.on_candle(candle)
        old = time.perf_counter() - started
        await engine.dispose()
        print(f"replay of {len(candles):,} candles: {replay:.2f} s")
        print(f"old warm-up of {strategy.warmup_period} candles: {old * 1000:.1f} ms")
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{bus.key('')}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(bench(int(sys.argv[1]) if len(sys.argv) > 1 else 70_000))
