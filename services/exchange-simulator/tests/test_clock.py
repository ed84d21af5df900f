"""The exchange clock follows the replay; signed requests are judged by a wall-rate clock."""

from __future__ import annotations

import itertools
import json
import time

import ccxt.async_support as ccxt
import pytest
from exchange_simulator.clock import ExchangeClock
from exchange_simulator.errors import BinanceError
from exchange_simulator.replay import Replay, ms
from exchange_simulator.testing import ccxt_binance, running_simulator, synthetic_candles

MINUTE = 60_000


class FakeTime:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 0.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def clock_over(count: int, history: int = 0) -> tuple[ExchangeClock, Replay, FakeTime, int]:
    series = synthetic_candles("BTCUSDT", count)
    replay = Replay({"BTCUSDT": series}, "1m", history)
    fake = FakeTime()
    clock = ExchangeClock(replay, wall=lambda: fake.wall, monotonic=lambda: fake.mono)
    return clock, replay, fake, ms(series[history].open_time) if history < count else 0


def test_stages_move_the_clock_by_thirds_of_the_interval_then_to_the_next_open() -> None:
    clock, replay, fake, open_ms = clock_over(3, history=1)
    seen = [clock.now_ms()]
    for _ in range(3):
        replay.step()
        clock.replay_moved()
        fake.advance(5)  # manual pace: wall time passing does not move the market clock
        seen.append(clock.now_ms())
    assert seen == [open_ms, open_ms + 20_000, open_ms + 40_000, open_ms + MINUTE]


def test_at_a_pace_the_clock_runs_on_inside_a_stage_but_never_reaches_the_next() -> None:
    clock, replay, fake, open_ms = clock_over(3)
    clock.pace(60)  # a 1m candle a second: 60 replay ms per wall ms
    clock.replay_moved()
    fake.advance(0.1)
    assert clock.now_ms() == open_ms + 6_000
    fake.advance(10)  # the pacer is late: the stage has not moved
    assert clock.now_ms() == open_ms + 20_000 - 1
    replay.step()
    replay.step()
    clock.replay_moved()
    fake.advance(10)
    # the last stage stops at the open candle's close time: it is not closed yet
    assert clock.now_ms() == open_ms + MINUTE - 1
    replay.step()  # closes it
    clock.replay_moved()
    assert clock.now_ms() == open_ms + MINUTE


def test_the_clock_is_monotonic_and_stays_at_the_last_close_when_the_replay_ends() -> None:
    clock, replay, fake, open_ms = clock_over(2)
    clock.pace(60)
    times = []
    while not replay.finished:
        fake.advance(0.13)
        times.append(clock.now_ms())
        replay.step()
        times.append(clock.now_ms())  # the pacer's restart has not been noted yet
        clock.replay_moved()
        times.append(clock.now_ms())
    fake.advance(100)
    times.append(clock.now_ms())
    assert all(b >= a for a, b in itertools.pairwise(times))
    assert times[-1] == open_ms + 2 * MINUTE


def test_offset_and_explicit_time_skew_the_replay_time() -> None:
    clock, replay, _, open_ms = clock_over(3, history=1)
    clock.set_offset(1_500)
    assert clock.now_ms() == open_ms + 1_500
    clock.set_time(open_ms + 30_000)
    replay.step()
    clock.replay_moved()
    assert clock.now_ms() == open_ms + 20_000 + 30_000  # keeps following the replay
    clock.set_offset(0)
    assert clock.now_ms() == open_ms + 20_000


def test_a_client_synced_to_any_issued_server_time_is_accepted_as_the_replay_moves() -> None:
    clock, replay, fake, _ = clock_over(10)
    synced = clock.server_time_for_sync() - int(fake.wall * 1000)  # ccxt's -timeDifference
    for _ in range(12):
        replay.step()  # four candles later...
    clock.replay_moved()
    fake.advance(30)  # ...and 30 s of wall time
    wall_ms = int(fake.wall * 1000)
    clock.check_timestamp(wall_ms + synced, 5_000)  # synced client
    clock.check_timestamp(wall_ms, 5_000)  # a client that never synced
    for stale in (wall_ms + synced - 6_000, wall_ms - 6_000):
        with pytest.raises(BinanceError, match="-1021 Timestamp for this request is outside"):
            clock.check_timestamp(stale, 5_000)
    with pytest.raises(BinanceError, match="-1021 Timestamp for this request was 1000ms ahead"):
        clock.check_timestamp(wall_ms + synced + 1_000, 5_000)
    with pytest.raises(BinanceError, match="-1131"):
        clock.check_timestamp(wall_ms, 60_001)


def test_a_skew_refuses_clients_synced_before_it_until_they_resync() -> None:
    clock, _, fake, _ = clock_over(10)
    synced = clock.server_time_for_sync() - int(fake.wall * 1000)
    clock.set_offset(120_000)
    wall_ms = int(fake.wall * 1000)
    with pytest.raises(BinanceError, match="-1021"):
        clock.check_timestamp(wall_ms + synced, 10_000)
    with pytest.raises(BinanceError, match="-1021"):
        clock.check_timestamp(wall_ms, 10_000)
    resynced = clock.server_time_for_sync() - int(fake.wall * 1000)
    assert resynced == synced + 120_000
    clock.check_timestamp(wall_ms + resynced, 10_000)


def test_an_explicit_server_time_moves_the_market_clock_only() -> None:
    """Setting serverTime (e.g. to the replay's candle open) is no clock skew: clients
    synced before it and clients that never synced keep signing without -1021."""
    clock, _, fake, open_ms = clock_over(10, history=2)
    synced = clock.server_time_for_sync() - int(fake.wall * 1000)
    clock.set_time(open_ms - 45_000)
    assert clock.now_ms() == open_ms - 45_000
    wall_ms = int(fake.wall * 1000)
    clock.check_timestamp(wall_ms + synced, 5_000)
    clock.check_timestamp(wall_ms, 5_000)
    resynced = clock.server_time_for_sync() - int(fake.wall * 1000)
    assert resynced == synced - 45_000
    clock.check_timestamp(wall_ms + resynced, 5_000)


async def test_server_time_events_and_orders_follow_the_replay(sim, http) -> None:
    """What REST, the stream and the matcher report is the replay's time, not today's."""
    replay_open = (await sim.control.state())["replay"]["current_open_time"]
    exchange = ccxt_binance(sim)
    try:
        assert await exchange.fetch_time() == replay_open
        async with http.ws_connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws:
            await sim.control.advance(1)
            events = [json.loads((await ws.receive(timeout=10)).data) for _ in range(4)]
        stamps = [(e["E"], e["k"]["t"], e["k"]["x"]) for e in events]
        assert stamps == [
            (replay_open + 20_000, replay_open, False),
            (replay_open + 40_000, replay_open, False),
            (replay_open + MINUTE, replay_open, True),  # E after the candle's close time
            (replay_open + MINUTE, replay_open + MINUTE, False),
        ]
        await exchange.load_markets()
        order = await exchange.create_order(
            "BTC/USDT", "market", "buy", 0.01, None, {"newClientOrderId": "clock-1"}
        )
        assert order["info"]["transactTime"] == replay_open + MINUTE
        assert await exchange.fetch_time() == replay_open + MINUTE
        # the kline REST view agrees: the open candle is the one serverTime falls in
        rows = await exchange.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "limit": 2})
        assert [int(r[0]) for r in rows] == [replay_open, replay_open + MINUTE]
    finally:
        await exchange.close()


async def test_ccxt_synced_to_the_replay_keeps_trading_while_it_moves(sim) -> None:
    exchange = ccxt_binance(sim)
    try:
        difference = await exchange.load_time_difference()
        expected = time.time() * 1000 - await exchange.fetch_time()
        assert difference == pytest.approx(expected, abs=5_000)
        await sim.control.advance(30)  # half an hour of replay in no time
        assert (await exchange.fetch_balance())["USDT"]["free"] == 10_000
        exchange.options["timeDifference"] += 20_000  # its clock now lags 20 s
        with pytest.raises(ccxt.InvalidNonce):
            await exchange.fetch_balance()
    finally:
        await exchange.close()


async def test_a_paced_replay_keeps_server_time_inside_the_open_candle(http) -> None:
    series = synthetic_candles("BTCUSDT", 40)
    # 600 x real time: a 1m candle every 100 ms
    async with (
        running_simulator(series, speed=600) as sim,
        http.ws_connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws,
    ):
        seen = []
        event_times = []
        while len(seen) < 8:
            event = json.loads((await ws.receive(timeout=10)).data)
            event_times.append(event["E"])
            state = await sim.control.state()  # one answer: clock and replay agree
            if state["replay"]["finished"]:
                break
            seen.append((state["replay"]["current_open_time"], state["server_time_ms"]))
            assert event["E"] <= state["server_time_ms"]
    assert all(b >= a for a, b in itertools.pairwise(event_times))
    for open_ms, server_ms in seen:
        assert open_ms <= server_ms < open_ms + MINUTE
    assert seen[-1][1] > seen[0][1]
