"""A kline WebSocket consumer: many symbols and intervals over one combined stream.

ccxt's ``watch_ohlcv`` drops the kline's ``x`` (closed) flag and returns floats, so this
small aiohttp consumer reads ``/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m`` itself.
aiohttp answers the server's pings (autoping); when the connection drops it reconnects
with jittered backoff (`shared.resilience.backoff_delay`), counts the reconnect in
``ws_reconnections_total`` and calls ``on_reconnect`` with the last closed candle seen per
stream, so the caller can backfill the gap over REST.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiohttp
import structlog

from shared.exchange.parsers import parse_ws_kline_event
from shared.metrics import WS_RECONNECTIONS_TOTAL
from shared.models import Candle, interval_delta
from shared.resilience import Sleep, backoff_delay

__all__ = ["ConnectionState", "KlineStream", "Reconnect", "combined_stream_url"]

_log = structlog.get_logger("shared.exchange.kline_stream")

StreamKey = tuple[str, str]
"""(symbol, interval), e.g. ("BTCUSDT", "1m")."""


class ConnectionState(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Reconnect:
    """A reconnect that succeeded. ``last_closed`` holds, per (symbol, interval), the open
    time of the last closed candle received before the drop (absent: none yet), so candles
    after it and before the first one on the new connection are the gap to backfill."""

    attempt: int
    disconnected_at: datetime
    reconnected_at: datetime
    last_closed: dict[StreamKey, datetime]


def combined_stream_url(ws_url: str, streams: Iterable[StreamKey]) -> str:
    """``{ws_url}/stream?streams=btcusdt@kline_1m/...`` (a trailing /ws or /stream is dropped)."""
    base = ws_url.rstrip("/")
    for suffix in ("/ws", "/stream"):
        base = base.removesuffix(suffix)
    names = [f"{symbol.lower()}@kline_{interval}" for symbol, interval in streams]
    if not names:
        raise ValueError("a kline stream needs at least one (symbol, interval)")
    return f"{base}/stream?streams={'/'.join(names)}"


class KlineStream:
    """Consume kline events for ``streams`` until `stop`; one connection for all of them.

    ``on_candle(candle)`` gets every update (``candle.closed`` tells the final one);
    ``on_reconnect(Reconnect)`` is called after each successful reconnect, before any new
    candle is delivered. Both may be async. `state` and `health_check` serve /health.
    """

    def __init__(
        self,
        ws_url: str,
        streams: Iterable[StreamKey],
        *,
        on_candle: Callable[[Candle], Any],
        on_reconnect: Callable[[Reconnect], Any] | None = None,
        session: aiohttp.ClientSession | None = None,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        heartbeat: float | None = 30.0,
        receive_timeout: float | None = 90.0,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.streams = [(symbol.upper(), interval) for symbol, interval in streams]
        for _, interval in self.streams:
            interval_delta(interval)
        self.url = combined_stream_url(ws_url, self.streams)
        self._on_candle = on_candle
        self._on_reconnect = on_reconnect
        self._session = session
        self._own_session = session is None
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._heartbeat = heartbeat
        self._receive_timeout = receive_timeout
        self._sleep = sleep
        self._rng = rng
        self._state = ConnectionState.IDLE
        self._stopping = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._last_closed: dict[StreamKey, datetime] = {}
        self.reconnections = 0
        self.connected_event = asyncio.Event()

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def last_closed(self) -> dict[StreamKey, datetime]:
        """Open time of the last closed candle received, per (symbol, interval)."""
        return dict(self._last_closed)

    async def health_check(self) -> str:
        """For `HealthCheckServer.add_check`: raises unless connected."""
        if self._state is not ConnectionState.CONNECTED:
            raise ConnectionError(f"kline stream is {self._state.value}")
        return f"connected, {len(self.streams)} streams"

    async def stop(self) -> None:
        """Close the connection and make `run` return."""
        self._stopping.set()
        if self._ws is not None:
            await self._ws.close()

    async def run(self) -> None:
        """Connect, consume, reconnect on drops; returns after `stop`."""
        session = self._session or aiohttp.ClientSession()
        retry = 0
        dropped_at: datetime | None = None
        try:
            while not self._stopping.is_set():
                self._state = (
                    ConnectionState.CONNECTING
                    if dropped_at is None
                    else ConnectionState.RECONNECTING
                )
                try:
                    async with session.ws_connect(
                        self.url, autoping=True, heartbeat=self._heartbeat
                    ) as ws:
                        self._ws = ws
                        self._state = ConnectionState.CONNECTED
                        self.connected_event.set()
                        retry = 0
                        if dropped_at is not None:
                            await self._reconnected(dropped_at)
                        await self._consume(ws)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    _log.warning("kline_stream_connect_failed", url=self.url, error=str(exc))
                finally:
                    self._ws = None
                    self.connected_event.clear()
                if self._stopping.is_set():
                    break
                if self._state is ConnectionState.CONNECTED:
                    dropped_at = datetime.now(UTC)  # a live connection ended: a gap begins
                self._state = ConnectionState.RECONNECTING
                delay = backoff_delay(
                    retry, self._base_delay, max_delay=self._max_delay, rng=self._rng
                )
                retry += 1
                _log.warning(
                    "kline_stream_reconnecting", delay_seconds=round(delay, 3), retry=retry
                )
                await self._sleep(delay)
        finally:
            self._state = ConnectionState.STOPPED
            if self._own_session:
                await session.close()

    async def _reconnected(self, dropped_at: datetime) -> None:
        self.reconnections += 1
        WS_RECONNECTIONS_TOTAL.inc()
        event = Reconnect(
            attempt=self.reconnections,
            disconnected_at=dropped_at,
            reconnected_at=datetime.now(UTC),
            last_closed=dict(self._last_closed),
        )
        _log.info("kline_stream_reconnected", attempt=event.attempt)
        if self._on_reconnect is not None:
            await _maybe_await(self._on_reconnect(event))

    async def _consume(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive(timeout=self._receive_timeout)
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self._handle(msg.data)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return

    async def _handle(self, text: str) -> None:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            _log.warning("kline_stream_bad_json", data=text[:200])
            return
        data = payload.get("data", payload) if isinstance(payload, dict) else None
        if not isinstance(data, dict) or data.get("e") != "kline":
            return  # subscription answers and other events
        try:
            candle = parse_ws_kline_event(payload)
        except ValueError as exc:
            _log.warning("kline_stream_bad_event", error=str(exc))
            return
        if candle.closed:
            self._last_closed[(candle.symbol, candle.interval)] = candle.open_time
        await _maybe_await(self._on_candle(candle))


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result
