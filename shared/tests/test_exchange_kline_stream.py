"""The kline WebSocket consumer against the simulator: one connection, reconnect, backfill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from exchange_simulator.testing import RunningSimulator, running_simulator, synthetic_candles
from shared.config import load_settings
from shared.exchange import BinanceExchange, ConnectionState, KlineStream, Reconnect
from shared.exchange.kline_stream import combined_stream_url
from shared.exchange.parsers import ms_to_datetime
from shared.metrics import WS_RECONNECTIONS_TOTAL
from shared.models import Candle, interval_delta

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
HISTORY = 20
MINUTE = interval_delta("1m")


SERIES = {
    symbol: synthetic_candles(symbol, 60, price=Decimal(1000 * (i + 1)), seed=i)
    for i, symbol in enumerate(SYMBOLS)
}


def ohlcv(candle: Candle) -> tuple[object, ...]:
    return (
        candle.symbol,
        candle.open_time,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
    )


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(SERIES, history=HISTORY) as running:
        yield running


class Gate:
    """An injectable sleep that records each backoff delay and blocks until opened."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.waiting = asyncio.Event()
        self._open = asyncio.Event()

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.waiting.set()
        await self._open.wait()

    def open(self) -> None:
        self._open.set()


async def closed_candles(queue: asyncio.Queue[Candle], count: int) -> list[Candle]:
    """The next ``count`` closed candles from the consumer (open updates skipped)."""
    found: list[Candle] = []
    async with asyncio.timeout(10):
        while len(found) < count:
            candle = await queue.get()
            if candle.closed:
                found.append(candle)
    return found


def test_combined_stream_url_lists_every_stream_lower_case():
    url = combined_stream_url(
        "wss://stream.binance.com:9443/ws/", [("BTCUSDT", "1m"), ("ETHUSDT", "5m")]
    )
    assert url == "wss://stream.binance.com:9443/stream?streams=btcusdt@kline_1m/ethusdt@kline_5m"


async def test_closed_candles_of_three_symbols_arrive_over_one_connection(sim):
    queue: asyncio.Queue[Candle] = asyncio.Queue()
    stream = KlineStream(sim.ws_url, [(s, "1m") for s in SYMBOLS], on_candle=queue.put_nowait)
    task = asyncio.create_task(stream.run())
    try:
        async with asyncio.timeout(10):
            await stream.connected_event.wait()
        assert (await sim.control.state())["websocket_connections"] == 1
        assert await stream.health_check() == "connected, 3 streams"
        await sim.control.advance(2)
        got = await closed_candles(queue, 6)
        assert sorted(ohlcv(c) for c in got) == sorted(
            ohlcv(c) for s in SYMBOLS for c in SERIES[s][HISTORY : HISTORY + 2]
        )
        assert (await sim.control.state())["websocket_connections"] == 1
    finally:
        await stream.stop()
        await task
    assert stream.state is ConnectionState.STOPPED
    with pytest.raises(ConnectionError):
        await stream.health_check()


async def test_after_a_drop_the_consumer_reconnects_and_rest_fills_the_gap_exactly(sim):
    settings = load_settings(
        binance_base_url=sim.base_url,
        binance_ws_url=sim.ws_url,
        binance_api_key=sim.api_key,
        binance_api_secret=sim.api_secret,
    )
    exchange = BinanceExchange(settings, enable_rate_limit=False)
    queue: asyncio.Queue[Candle] = asyncio.Queue()
    backfilled: list[Candle] = []
    reconnects: list[Reconnect] = []
    backfill_done = asyncio.Event()

    async def backfill(event: Reconnect) -> None:
        # What the data collector does: REST from the candle after the last closed one.
        reconnects.append(event)
        await exchange.sync_clock()
        now = ms_to_datetime(exchange.exchange_now_ms())
        for (symbol, interval), last in event.last_closed.items():
            fetched = await exchange.fetch_klines(symbol, interval, last + MINUTE, now)
            backfilled.extend(c for c in fetched if c.closed)
        backfill_done.set()

    gate = Gate()
    stream = KlineStream(
        sim.ws_url,
        [(s, "1m") for s in SYMBOLS],
        on_candle=queue.put_nowait,
        on_reconnect=backfill,
        sleep=gate.sleep,
    )
    counted_before = WS_RECONNECTIONS_TOTAL._value.get()
    task = asyncio.create_task(stream.run())
    try:
        async with asyncio.timeout(10):
            await stream.connected_event.wait()
        await sim.control.advance(2)
        live = await closed_candles(queue, 6)

        assert await sim.control.close_websockets() == 1
        async with asyncio.timeout(10):
            await gate.waiting.wait()  # disconnected, backing off
        assert stream.state is ConnectionState.RECONNECTING
        await sim.control.advance(3)  # three candles close while nobody listens
        # Candle times are replayed history: put the server clock inside the open candle,
        # as it would be on Binance, so REST can tell closed candles from the open one.
        current = (await sim.control.state())["replay"]["current_open_time"]
        await sim.control.set_clock(server_time_ms=current + 1_000)
        gate.open()

        async with asyncio.timeout(10):
            await backfill_done.wait()  # on_reconnect runs once the new connection is up
        assert stream.state is ConnectionState.CONNECTED
        await sim.control.advance(1)
        live += await closed_candles(queue, 3)
    finally:
        await stream.stop()
        await task
        await exchange.close()

    assert len(reconnects) == 1 and stream.reconnections == 1
    assert WS_RECONNECTIONS_TOTAL._value.get() == counted_before + 1
    assert len(gate.delays) == 1 and 1.0 <= gate.delays[0] < 1.5  # base delay, jittered
    for symbol in SYMBOLS:
        mine = [c for c in live + backfilled if c.symbol == symbol]
        times = [c.open_time for c in mine]
        assert len(times) == len(set(times)) == 6, f"{symbol}: missing or duplicated candles"
        expected = SERIES[symbol][HISTORY : HISTORY + 6]
        assert sorted(ohlcv(c) for c in mine) == [ohlcv(c) for c in expected]
    assert len(backfilled) == 9  # 3 gap candles for each of 3 symbols


async def test_server_pings_are_answered_so_the_connection_survives_many_of_them():
    # The simulator pings every 50 ms and drops a connection whose pong is 25 ms late;
    # our own heartbeat is off, so only autoping keeps it alive.
    async with running_simulator(SERIES, history=HISTORY, ping_interval=0.05) as running:
        queue: asyncio.Queue[Candle] = asyncio.Queue()
        stream = KlineStream(
            running.ws_url, [("BTCUSDT", "1m")], on_candle=queue.put_nowait, heartbeat=None
        )
        task = asyncio.create_task(stream.run())
        try:
            async with asyncio.timeout(10):
                await stream.connected_event.wait()
            await asyncio.sleep(1.0)  # twenty ping intervals pass (the scenario, not a wait)
            assert stream.state is ConnectionState.CONNECTED
            assert stream.reconnections == 0
            await running.control.advance(1)
            [candle] = await closed_candles(queue, 1)
            assert ohlcv(candle) == ohlcv(SERIES["BTCUSDT"][HISTORY])
        finally:
            await stream.stop()
            await task
