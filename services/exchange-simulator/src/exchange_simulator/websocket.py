"""Binance's kline WebSocket streams: `/ws`, `/ws/<stream>[/<stream>...]`, `/stream?streams=a/b`.

Raw connections get the event itself; combined ones (`/stream`) get
`{"stream": "<name>", "data": <event>}`. Streams can be added and removed with
`{"method": "SUBSCRIBE"|"UNSUBSCRIBE"|"LIST_SUBSCRIPTIONS", "params": [...], "id": N}`.
The server pings every `ping_interval` seconds (Binance: 20 s) and drops a connection that
does not answer. Each connection has its own queue and writer, so a slow reader delays only
itself; `drain()` waits until every queued message has been written to its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterable

from aiohttp import WSMsgType, web
from shared.models import Candle

from exchange_simulator.filters import fmt
from exchange_simulator.replay import ms

STREAM_NAME = re.compile(r"^[a-z0-9]+@kline_[0-9]+[smhdwM]$")


def stream_name(symbol: str, interval: str) -> str:
    return f"{symbol.lower()}@kline_{interval}"


def kline_event(candle: Candle, event_time_ms: int, trade_ids: tuple[int, int]) -> str:
    """A kline event as Binance sends it (decimals as strings), serialised."""
    open_ms = ms(candle.open_time)
    return json.dumps(
        {
            "e": "kline",
            "E": event_time_ms,
            "s": candle.symbol,
            "k": {
                "t": open_ms,
                "T": ms(candle.close_time),
                "s": candle.symbol,
                "i": candle.interval,
                "f": trade_ids[0],
                "L": trade_ids[1],
                "o": fmt(candle.open),
                "c": fmt(candle.close),
                "h": fmt(candle.high),
                "l": fmt(candle.low),
                "v": fmt(candle.volume),
                "n": candle.trades or 0,
                "x": candle.closed,
                "q": fmt(candle.quote_volume or 0),
                # The recorded files carry no taker split for 1m/5m; the model drops it.
                "V": fmt(0),
                "Q": fmt(0),
                "B": "0",
            },
        },
        separators=(",", ":"),
    )


class StreamConnection:
    """One client connection: its streams, its outgoing queue and its writer task."""

    def __init__(self, ws: web.WebSocketResponse, combined: bool, streams: Iterable[str]) -> None:
        self.ws = ws
        self.combined = combined
        self.streams: list[str] = list(dict.fromkeys(streams))
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.writer = asyncio.create_task(self._write())

    def offer(self, stream: str, payload: str) -> None:
        if stream in self.streams and not self.ws.closed:
            if self.combined:
                payload = f'{{"stream":"{stream}","data":{payload}}}'
            self.queue.put_nowait(payload)

    async def _write(self) -> None:
        while True:
            message = await self.queue.get()
            try:
                if not self.ws.closed:
                    await self.ws.send_str(message)
            except (ConnectionError, RuntimeError):
                pass  # the reader loop notices the closed socket and unregisters us
            finally:
                self.queue.task_done()

    async def stop(self) -> None:
        self.writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.writer
        # Release anyone waiting in `drain()` for messages that will never be sent.
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()


class StreamHub:
    """Every open stream connection; fans kline events out to the subscribers."""

    def __init__(self, ping_interval: float = 20.0) -> None:
        self.ping_interval = ping_interval
        self.connections: set[StreamConnection] = set()
        self._changed = asyncio.Condition()

    @property
    def subscriber_count(self) -> int:
        return sum(1 for c in self.connections if c.streams)

    def publish(self, stream: str, payload: str) -> None:
        for connection in self.connections:
            connection.offer(stream, payload)

    async def drain(self) -> None:
        """Wait until every queued message has been written to its socket."""
        for connection in list(self.connections):
            await connection.queue.join()

    async def wait_for_subscriber(self, count: int = 1) -> None:
        """Wait until at least `count` connections subscribe to some stream."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.subscriber_count >= count)

    async def close_all(self) -> int:
        """Close every connection (code 1001, going away); how many there were."""
        connections = list(self.connections)
        await asyncio.gather(
            *(c.ws.close(code=1001, message=b"closed by the simulator") for c in connections)
        )
        return len(connections)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one connection on /ws, /ws/<streams> or /stream?streams=..."""
        combined = request.path.startswith("/stream")
        if combined:
            names = [s for s in request.query.get("streams", "").split("/") if s]
        else:
            names = [s for s in request.match_info.get("streams", "").split("/") if s]
        bad = [s for s in names if not STREAM_NAME.match(s)]
        if bad:
            raise web.HTTPBadRequest(text=f"Invalid stream name {bad[0]!r}")
        ws = web.WebSocketResponse(heartbeat=self.ping_interval, autoping=True)
        await ws.prepare(request)
        connection = StreamConnection(ws, combined, names)
        self.connections.add(connection)
        await self._notify()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    reply = self._command(connection, message.data)
                    connection.queue.put_nowait(json.dumps(reply))
                    await self._notify()
        finally:
            self.connections.discard(connection)
            await connection.stop()
            await self._notify()
        return ws

    @staticmethod
    def _command(connection: StreamConnection, text: str) -> dict[str, object]:
        try:
            request = json.loads(text)
            method, request_id = request["method"], request.get("id")
            params = request.get("params", [])
        except (ValueError, KeyError, TypeError):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected a method"}, "id": None}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(connection.streams), "id": request_id}
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            return {"error": {"code": 2, "msg": f"Invalid request: {method!r}"}, "id": request_id}
        bad = [p for p in params if not isinstance(p, str) or not STREAM_NAME.match(p)]
        if bad:
            return {
                "error": {"code": 2, "msg": f"Invalid request: invalid stream name {bad[0]!r}"},
                "id": request_id,
            }
        if method == "SUBSCRIBE":
            connection.streams.extend(p for p in params if p not in connection.streams)
        else:
            connection.streams = [s for s in connection.streams if s not in params]
        return {"result": None, "id": request_id}
