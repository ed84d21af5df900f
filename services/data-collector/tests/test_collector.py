"""The data collector against the exchange simulator on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from data_collector.collector import DataCollector
from data_collector.main import health_checks
from data_collector.storage import CandleStorage
from exchange_simulator.testing import RunningSimulator, running_simulator, synthetic_candles
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.bus_envelope import decode
from shared.config import load_settings
from shared.db import candles_between, create_engine, create_sessionmaker
from shared.exchange import BinanceExchange, ConnectionState
from shared.healthcheck import CheckFailed
from shared.metrics import CANDLES_RECEIVED_TOTAL, WS_RECONNECTIONS_TOTAL
from shared.models import Candle
from shared.streams import CANDLES
from shared.testing.ports import unused_ports
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

SYMBOLS = ("BTCUSDT", "ETHUSDT")
SERIES = {
    s: synthetic_candles(s, 60, price=Decimal(1000 * (i + 1)), seed=i)
    for i, s in enumerate(SYMBOLS)
}
SIM_HISTORY = 20
HISTORY = 5


def key(candle: Candle) -> tuple[object, ...]:
    return (candle.symbol, candle.open_time, candle.open, candle.close, candle.volume)


@pytest.fixture
async def sessions(migrated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def redis(redis_server_url: str, redis_namespace: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server_url)
    yield client
    keys = [k async for k in client.scan_iter(match=redis_namespace + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(SERIES, history=SIM_HISTORY) as running:
        await clock_in_open_candle(running)
        yield running


async def clock_in_open_candle(sim: RunningSimulator) -> None:
    """Put the server clock 1 s into the open candle, as on Binance (the replay is history)."""
    current = (await sim.control.state())["replay"]["current_open_time"]
    await sim.control.set_clock(server_time_ms=current + 1_000)


@pytest.fixture
async def exchange(sim: RunningSimulator) -> AsyncIterator[BinanceExchange]:
    settings = load_settings(binance_base_url=sim.base_url, binance_ws_url=sim.ws_url)
    async with BinanceExchange(settings, enable_rate_limit=False) as adapter:
        yield adapter


class Gate:
    """A backoff sleep that blocks until the test opens it."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self._open = asyncio.Event()

    async def sleep(self, _: float) -> None:
        self.waiting.set()
        await self._open.wait()

    def open(self) -> None:
        self._open.set()


class Started:
    def __init__(self, collector: DataCollector, task: asyncio.Task[None]) -> None:
        self.collector, self.task = collector, task

    async def stop(self) -> None:
        await self.collector.stop()
        await self.task


@pytest.fixture
async def start(sessions, redis, redis_namespace, sim, exchange) -> AsyncIterator[object]:
    running: list[Started] = []

    async def start_collector(**kline_options: object) -> Started:
        collector = DataCollector(
            exchange=exchange,
            storage=CandleStorage(sessions),
            bus=EventBus(redis, namespace=redis_namespace),
            ws_url=sim.ws_url,
            series=[(s, "1m") for s in SYMBOLS],
            history_candles=HISTORY,
            kline_options=dict(kline_options),
        )
        started = Started(collector, asyncio.create_task(collector.run()))
        running.append(started)
        async with asyncio.timeout(20):
            await collector.ready.wait()
        return started

    yield start_collector
    for started in running:
        if not started.task.done():
            await started.stop()


async def published(redis: Redis, namespace: str, count: int) -> list[Candle]:
    """The candles on the stream, once there are at least `count` (waits for them)."""
    stream = namespace + CANDLES
    async with asyncio.timeout(20):
        while True:
            entries = await redis.xrange(stream)
            if len(entries) >= count:
                return [decode(fields).event for _, fields in entries]  # type: ignore[misc]
            await redis.xread({stream: entries[-1][0] if entries else "0"}, block=1000)


async def stored(sessions, symbol: str) -> list[Candle]:
    async with sessions() as session:
        return await candles_between(session, symbol, "1m")


async def test_candles_of_two_symbols_are_stored_and_published_once(
    start, sim, redis, redis_namespace, sessions
):
    received = {s: CANDLES_RECEIVED_TOTAL.labels(s, "1m")._value.get() for s in SYMBOLS}
    await start()
    for symbol in SYMBOLS:  # history: stored for warm-ups, not published
        assert [key(c) for c in await stored(sessions, symbol)] == [
            key(c) for c in SERIES[symbol][SIM_HISTORY - HISTORY : SIM_HISTORY]
        ]
    assert await redis.xlen(redis_namespace + CANDLES) == 0
    await sim.control.advance(3)
    events = await published(redis, redis_namespace, 6)
    assert len(events) == 6
    for symbol in SYMBOLS:
        expected = SERIES[symbol][SIM_HISTORY : SIM_HISTORY + 3]
        assert [key(c) for c in events if c.symbol == symbol] == [key(c) for c in expected]
        assert len(await stored(sessions, symbol)) == HISTORY + 3
        counted = CANDLES_RECEIVED_TOTAL.labels(symbol, "1m")._value.get()
        assert counted == received[symbol] + HISTORY + 3


async def test_a_live_candle_after_a_hole_in_what_was_published_brings_the_hole_along(
    start, sim, redis, redis_namespace, sessions
):
    """The live path publishes a candle straight away only when it directly follows the
    last one published; otherwise what is stored in between is read back and published
    first, in order. Here one candle was stored (say by a concurrent backfill) but never
    published when the next one arrives."""
    started = await start()
    collector = started.collector
    await sim.control.advance(1)
    first = await published(redis, redis_namespace, 2)
    symbol = SYMBOLS[0]
    hole, live = SERIES[symbol][SIM_HISTORY + 1 : SIM_HISTORY + 3]
    await started.stop()  # the rest is driven by hand
    assert await collector.storage.store([hole]) == 1
    await collector.on_candle(live)
    events = await published(redis, redis_namespace, 4)
    assert [key(c) for c in events[len(first) :]] == [key(hole), key(live)]
    await collector.on_candle(live)  # redelivered by the WebSocket: not published again
    assert await redis.xlen(redis_namespace + CANDLES) == 4


async def test_a_dropped_websocket_is_backfilled_over_rest_none_missing_none_twice(
    start, sim, redis, redis_namespace, sessions
):
    reconnections = WS_RECONNECTIONS_TOTAL._value.get()
    gate = Gate()
    running = await start(sleep=gate.sleep)
    await sim.control.advance(2)
    await published(redis, redis_namespace, 4)
    assert await sim.control.close_websockets() == 1
    async with asyncio.timeout(10):
        await gate.waiting.wait()
    assert running.collector.stream.state is ConnectionState.RECONNECTING
    await sim.control.advance(3)  # close while nobody listens
    await clock_in_open_candle(sim)
    gate.open()
    events = await published(redis, redis_namespace, 10)  # the gap, over REST
    await sim.control.advance(1)
    events = await published(redis, redis_namespace, 12)
    assert running.collector.stream.reconnections == 1
    assert WS_RECONNECTIONS_TOTAL._value.get() == reconnections + 1
    for symbol in SYMBOLS:
        expected = SERIES[symbol][SIM_HISTORY : SIM_HISTORY + 6]
        assert [key(c) for c in events if c.symbol == symbol] == [key(c) for c in expected]
        times = [c.open_time for c in await stored(sessions, symbol)]
        assert times == [
            SERIES[symbol][0].open_time + i * timedelta(minutes=1)
            for i in range(SIM_HISTORY - HISTORY, SIM_HISTORY + 6)
        ]


async def test_a_restart_resumes_from_the_last_stored_candle_and_publishes_the_unpublished(
    start, sim, redis, redis_namespace, sessions
):
    first = await start()
    await sim.control.advance(2)
    await published(redis, redis_namespace, 4)
    await first.stop()
    # A crash between storing and publishing: candle 22 stored, never published.
    await CandleStorage(sessions).store([SERIES[s][SIM_HISTORY + 2] for s in SYMBOLS])
    await sim.control.advance(3)  # 22, 23, 24 close while the collector is down
    await clock_in_open_candle(sim)
    await start()
    events = await published(redis, redis_namespace, 10)
    assert len(await redis.xrange(redis_namespace + CANDLES)) == 10
    for symbol in SYMBOLS:
        expected = SERIES[symbol][SIM_HISTORY : SIM_HISTORY + 5]
        assert [key(c) for c in events if c.symbol == symbol] == [key(c) for c in expected]
        assert len(await stored(sessions, symbol)) == HISTORY + 5


async def test_health_fails_when_the_last_candle_is_older_than_two_intervals_or_ws_is_down(
    start, sim, exchange
):
    running = await start()
    checks = health_checks(running.collector)
    assert await checks["websocket"]() == "connected"
    assert "s ago" in str(await checks["candles BTCUSDT 1m"]())  # closed a second ago
    current = (await sim.control.state())["replay"]["current_open_time"]
    await sim.control.set_clock(server_time_ms=current + 2 * 60_000)  # 2 min with no candle
    await exchange.sync_clock()
    with pytest.raises(CheckFailed, match=r"last closed ETHUSDT 1m candle is .* old"):
        await checks["candles ETHUSDT 1m"]()
    await running.stop()
    with pytest.raises(CheckFailed, match="not connected"):
        await checks["websocket"]()


def collector_env(
    tmp_path: Path,
    sim: RunningSimulator,
    namespace: str,
    redis_url: str,
    database_url: str,
    health_port: int,
) -> dict[str, str]:
    """`python -m data_collector`'s environment: the test's stores, the simulator, SYMBOLS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BINANCE_"))}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        HEALTH_PORT=str(health_port),
        BUS_NAMESPACE=namespace,
        BINANCE_BASE_URL=sim.base_url,
        BINANCE_WS_URL=sim.ws_url,
        COLLECTOR_SYMBOLS=",".join(SYMBOLS),
        COLLECTOR_HISTORY_CANDLES="3",
        TRADING_DATA_DIR=str(tmp_path),
    )
    return env


async def run_to_exit(env: dict[str, str]) -> tuple[int, str]:
    """`python -m data_collector` until it exits by itself: (status, its output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "data_collector",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(90):
        output, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, output.decode()


async def test_a_symbol_the_exchange_does_not_list_stops_the_collector_with_exit_2(
    tmp_path: Path, sim, redis_namespace, redis_server_url, migrated_database_url
):
    """A typo in COLLECTOR_SYMBOLS is one error line naming it, and exit 2 (not restarted by
    `trading run`), instead of a crash on the first kline request at every restart."""
    env = collector_env(
        tmp_path, sim, redis_namespace, redis_server_url, migrated_database_url, unused_ports()
    )
    env["COLLECTOR_SYMBOLS"] = "BTCUSDT,BTCUSTD"
    status, text = await run_to_exit(env)
    assert status == 2, text
    assert (
        f"COLLECTOR_SYMBOLS: BTCUSTD is not a spot market on {sim.base_url}: check the spelling"
        in text
    )
    assert "Traceback" not in text


async def test_an_exchange_that_does_not_answer_is_one_line_naming_the_url_and_exit_1(
    tmp_path: Path, sim, redis_namespace, redis_server_url, migrated_database_url
):
    """A wrong BINANCE_BASE_URL (or an outage): once the REST retries are spent, one line
    naming the setting, no traceback, and exit 1 so that `trading run` restarts it."""
    env = collector_env(
        tmp_path, sim, redis_namespace, redis_server_url, migrated_database_url, unused_ports()
    )
    env["BINANCE_BASE_URL"] = nowhere = f"http://127.0.0.1:{unused_ports()}"
    status, text = await run_to_exit(env)
    assert status == 1, text
    assert f"the exchange at BINANCE_BASE_URL={nowhere} does not answer" in text
    assert "Traceback" not in text


async def test_python_m_data_collector_publishes_candles_reports_health_and_exits_0_on_sigterm(
    tmp_path: Path, sim, redis, redis_namespace, redis_server_url, migrated_database_url
):
    port = unused_ports()
    env = collector_env(
        tmp_path, sim, redis_namespace, redis_server_url, migrated_database_url, port
    )
    log = (tmp_path / "collector.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "data_collector", env=env, stdout=log, stderr=log
    )
    try:
        async with aiohttp.ClientSession() as http:
            health: dict[str, object] = {}
            async with asyncio.timeout(60):
                while health.get("status") != "ok":  # connected and history stored
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/health") as response:
                            health = await response.json()
                    except aiohttp.ClientConnectionError:
                        pass
                    if health.get("status") != "ok":
                        await asyncio.sleep(0.2)  # polling a subprocess: no event to wait on
            checks = health["checks"]
            assert isinstance(checks, dict) and "websocket" in checks
            assert "candles BTCUSDT 1m" in checks and "candles ETHUSDT 1m" in checks
        await sim.control.advance(1)
        events = await published(redis, redis_namespace, 2)
        assert sorted(key(c) for c in events) == sorted(
            key(SERIES[s][SIM_HISTORY]) for s in SYMBOLS
        )
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
