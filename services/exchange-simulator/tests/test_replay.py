"""The candle clock: stages walk the real price path; symbols move in lockstep; pace modes."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from decimal import Decimal

import aiohttp
import pytest
from exchange_simulator.app import parse_speed
from exchange_simulator.replay import Replay, load_candles, ms
from exchange_simulator.testing import running_simulator, synthetic_candles
from shared.candle_io import CANDLE_COLUMNS
from shared.models import Candle


def candle(symbol: str, minute: int, o: str, h: str, lo: str, c: str) -> Candle:
    start = synthetic_candles(symbol, 1)[0].open_time
    return Candle(
        symbol=symbol,
        interval="1m",
        open_time=start + timedelta(minutes=minute),
        open=Decimal(o),
        high=Decimal(h),
        low=Decimal(lo),
        close=Decimal(c),
        volume=Decimal(30),
    )


def test_a_rising_candle_goes_open_low_high_close() -> None:
    replay = Replay({"BTCUSDT": [candle("BTCUSDT", 0, "10", "14", "8", "12")]}, "1m")
    assert replay.price("BTCUSDT") == Decimal(10)
    seen = [
        (m.candle.close, m.candle.high, m.candle.low, m.candle.closed, m.low, m.high)
        for _ in range(3)
        for m in replay.step()
    ]
    assert seen == [
        (Decimal(8), Decimal(10), Decimal(8), False, Decimal(8), Decimal(10)),
        (Decimal(14), Decimal(14), Decimal(8), False, Decimal(8), Decimal(14)),
        (Decimal(12), Decimal(14), Decimal(8), True, Decimal(12), Decimal(14)),
    ]
    assert replay.finished and replay.step() == []


def test_a_falling_candle_goes_open_high_low_close() -> None:
    replay = Replay({"BTCUSDT": [candle("BTCUSDT", 0, "10", "14", "8", "9")]}, "1m")
    closes = [m.candle.close for _ in range(3) for m in replay.step()]
    assert closes == [Decimal(14), Decimal(8), Decimal(9)]


def test_partial_volume_grows_to_the_recorded_volume() -> None:
    replay = Replay({"BTCUSDT": [candle("BTCUSDT", 0, "10", "14", "8", "12")]}, "1m")
    volumes = [replay.current_candle("BTCUSDT").volume]  # type: ignore[union-attr]
    volumes += [m.candle.volume for _ in range(3) for m in replay.step()]
    assert volumes == [Decimal(0), Decimal(10), Decimal(20), Decimal(30)]


def test_symbols_move_in_lockstep_and_a_gap_skips_a_symbol() -> None:
    btc = [candle("BTCUSDT", i, "10", "11", "9", "10") for i in range(3)]
    eth = [candle("ETHUSDT", i, "5", "6", "4", "5") for i in (0, 2)]  # no candle at minute 1
    replay = Replay({"BTCUSDT": btc, "ETHUSDT": eth}, "1m")
    closed = []
    while not replay.finished:
        closed += [
            (m.candle.symbol, ms(m.candle.open_time)) for m in replay.step() if m.candle.closed
        ]
    t0 = ms(btc[0].open_time)
    assert closed == [
        ("BTCUSDT", t0),
        ("ETHUSDT", t0),
        ("BTCUSDT", t0 + 60_000),
        ("BTCUSDT", t0 + 120_000),
        ("ETHUSDT", t0 + 120_000),
    ]


def test_klines_show_history_and_the_open_candle_only() -> None:
    series = synthetic_candles("BTCUSDT", 10)
    replay = Replay({"BTCUSDT": series}, "1m", history=4)
    shown = replay.klines("BTCUSDT")
    assert [c.open_time for c in shown] == [c.open_time for c in series[:5]]
    assert shown[:4] == series[:4]
    assert shown[4].closed is False and shown[4].close == series[4].open
    assert replay.klines("BTCUSDT", start_ms=ms(series[8].open_time)) == []


def test_set_price_moves_the_candle_and_stays_in_its_final_version() -> None:
    replay = Replay({"BTCUSDT": [candle("BTCUSDT", 0, "10", "14", "8", "12")]}, "1m")
    move = replay.set_price("BTCUSDT", Decimal(20))
    assert move is not None
    assert (move.candle.close, move.candle.high, move.low, move.high) == (
        Decimal(20),
        Decimal(20),
        Decimal(10),
        Decimal(20),
    )
    final = [m.candle for _ in range(3) for m in replay.step()][-1]
    assert final.closed and final.high == Decimal(20) and final.close == Decimal(12)


def test_candles_of_another_symbol_are_refused() -> None:
    with pytest.raises(ValueError, match="every series must match"):
        Replay({"ETHUSDT": synthetic_candles("BTCUSDT", 2)}, "1m")


def test_speed_values() -> None:
    assert parse_speed("60") == 60.0
    assert parse_speed(0) == "manual"
    assert parse_speed("max") == "max"
    with pytest.raises(ValueError, match="'max'"):
        parse_speed("fast")


def test_a_candle_file_loads_exactly(tmp_path) -> None:
    series = synthetic_candles("BTCUSDT", 40)
    path = tmp_path / "BTCUSDT-1m.csv"
    rows = [",".join(CANDLE_COLUMNS)]
    for c in series:
        t = ms(c.open_time)
        rows.append(
            f"{t},{c.open},{c.high},{c.low},{c.close},{c.volume},{t + 59_999},,{c.trades},,"
        )
    path.write_text("\n".join(rows) + "\n")
    assert load_candles(path, "BTCUSDT", "1m") == series
    assert load_candles(path, "BTCUSDT", "1m", limit=5) == series[:5]


async def closed_events(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[int]:
    opened = []
    while len(opened) < count:
        message = await ws.receive(timeout=10)
        event = json.loads(message.data)
        if event.get("k", {}).get("x"):
            opened.append(event["k"]["t"])
    return opened


async def test_max_speed_replays_as_fast_as_the_client_reads(http) -> None:
    series = synthetic_candles("BTCUSDT", 20)
    async with running_simulator(series, speed="max") as sim:
        async with http.ws_connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws:
            opened = await closed_events(ws, 20)
        assert (await sim.control.state())["replay"]["finished"] is True
    assert opened == [ms(c.open_time) for c in series]


async def test_numeric_speed_replays_without_control_calls(http) -> None:
    series = synthetic_candles("BTCUSDT", 50)
    # 6000 × real time: a 1m candle every 10 ms
    async with (
        running_simulator(series, speed=6000) as sim,
        http.ws_connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws,
    ):
        opened = await closed_events(ws, 3)
    assert all(b - a == 60_000 for a, b in itertools.pairwise(opened))
