"""Kline streams: combined and raw connections, subscriptions, pings, closing, gap backfill."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import aiohttp
import pytest
from exchange_simulator.testing import running_simulator, synthetic_candles

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")


def three_symbols(count: int = 30) -> dict[str, list]:
    return {
        symbol: synthetic_candles(symbol, count, seed=index + 1)
        for index, symbol in enumerate(SYMBOLS)
    }


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict:
    message = await ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def test_combined_stream_delivers_closed_candles_of_three_symbols(http) -> None:
    candles = three_symbols()
    async with running_simulator(candles, history=10) as sim:
        streams = "/".join(f"{s.lower()}@kline_1m" for s in SYMBOLS)
        async with http.ws_connect(f"{sim.ws_url}/stream?streams={streams}") as ws:
            await sim.control.advance(2)
            closed: dict[str, list[dict]] = defaultdict(list)
            while sum(len(v) for v in closed.values()) < 6:
                wrapped = await receive_json(ws)
                event = wrapped["data"]
                assert wrapped["stream"] == f"{event['s'].lower()}@kline_1m"
                assert event["e"] == "kline"
                if event["k"]["x"]:
                    closed[event["s"]].append(event["k"])
    for symbol in SYMBOLS:
        expected = candles[symbol][10:12]
        got = closed[symbol]
        assert [k["t"] for k in got] == [int(c.open_time.timestamp() * 1000) for c in expected]
        assert [k["c"] for k in got] == [f"{c.close:.8f}" for c in expected]
        assert [k["h"] for k in got] == [f"{c.high:.8f}" for c in expected]
        assert all(k["T"] == k["t"] + 59_999 and k["i"] == "1m" for k in got)


async def test_partial_updates_precede_the_final_one(sim, http) -> None:
    async with http.ws_connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws:
        await sim.control.advance(1)
        events = [await receive_json(ws) for _ in range(4)]
    # raw stream: the event itself, no wrapper
    flags = [(e["k"]["t"], e["k"]["x"]) for e in events]
    first, second = flags[0][0], flags[0][0] + 60_000
    assert flags == [(first, False), (first, False), (first, True), (second, False)]
    final = events[2]["k"]
    assert all(float(e["k"]["h"]) <= float(final["h"]) for e in events[:3])
    assert all(float(e["k"]["v"]) <= float(final["v"]) for e in events[:3])


async def test_subscribe_unsubscribe_and_list(sim, http) -> None:
    async with http.ws_connect(f"{sim.ws_url}/ws") as ws:
        await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1})
        assert await receive_json(ws) == {"result": None, "id": 1}
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
        assert await receive_json(ws) == {"result": ["btcusdt@kline_1m"], "id": 2}
        await sim.control.step(1)
        assert (await receive_json(ws))["s"] == "BTCUSDT"
        await ws.send_json({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 3})
        assert await receive_json(ws) == {"result": None, "id": 3}
        await sim.control.step(1)
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 4})
        # nothing was queued for us in between: the next message is the answer
        assert await receive_json(ws) == {"result": [], "id": 4}
        await ws.send_json({"method": "SUBSCRIBE", "params": ["nonsense"], "id": 5})
        assert (await receive_json(ws))["error"]["code"] == 2


async def test_server_sends_ping_frames(http) -> None:
    async with (
        running_simulator(synthetic_candles("BTCUSDT", 5), ping_interval=0.05) as sim,
        http.ws_connect(f"{sim.ws_url}/ws/btcusdt@kline_1m", autoping=False) as ws,
    ):
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.PING
        await ws.pong(message.data)


async def test_control_api_closes_every_connection(sim, http) -> None:
    async with (
        http.ws_connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as first,
        http.ws_connect(f"{sim.ws_url}/stream?streams=btcusdt@kline_1m") as second,
    ):
        assert await sim.control.close_websockets() == 2
        for ws in (first, second):
            message = await ws.receive(timeout=10)
            assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert (await sim.control.state())["websocket_connections"] == 0


async def test_gap_while_disconnected_is_recovered_over_rest(sim, http) -> None:
    stream = f"{sim.ws_url}/ws/btcusdt@kline_1m"
    seen: list[int] = []
    async with http.ws_connect(stream) as ws:
        await sim.control.advance(2)
        while len(seen) < 2:
            k = (await receive_json(ws))["k"]
            if k["x"]:
                seen.append(k["t"])
        assert await sim.control.close_websockets() == 1
    await sim.control.advance(5)  # closed while nobody listened
    async with http.ws_connect(stream) as ws:
        async with http.get(
            f"{sim.base_url}/api/v3/klines",
            params={"symbol": "BTCUSDT", "interval": "1m", "startTime": str(seen[-1] + 60_000)},
        ) as response:
            backfill = [row[0] for row in await response.json()]
        await sim.control.advance(1)
        while True:
            k = (await receive_json(ws))["k"]
            if k["x"]:
                live = k["t"]
                break
    # REST gives the 5 missed candles plus the open one, which then closes live
    assert backfill[:5] == [seen[-1] + 60_000 * i for i in range(1, 6)]
    assert backfill[5] == live
    assert len(backfill) == 6


async def test_control_waits_until_a_consumer_has_subscribed(sim, http) -> None:
    async with http.ws_connect(f"{sim.ws_url}/ws") as ws:
        waiting = asyncio.create_task(sim.control.wait_for_subscribers(1))
        await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1})
        assert await waiting == 1
    with pytest.raises(RuntimeError, match="fewer than 2"):
        await sim.control.wait_for_subscribers(2, within=0.1)


async def test_bad_stream_name_refused(sim, http) -> None:
    async with http.get(f"{sim.base_url}/stream?streams=btcusdt@depth") as response:
        assert response.status == 400


async def test_advance_answers_when_its_move_began_on_the_wall_clock(sim, http) -> None:
    """`moved_at_ms`: the close's time for a latency measurement (the bench's zero), taken
    before the move, so before its closing event reaches a client."""
    async with http.ws_connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws:
        before_ms = time.time() * 1000
        async with http.post(f"{sim.base_url}/_sim/advance", json={"stages": 3}) as response:
            answer = await response.json()
        events = [await receive_json(ws) for _ in range(4)]
        received_ms = time.time() * 1000
    assert answer["moved"] == 3 and answer["replay"]["stage"] == 0
    assert [e["k"]["x"] for e in events] == [False, False, True, False]
    assert before_ms <= answer["moved_at_ms"] <= received_ms
