"""The data collector: kline WebSocket → PostgreSQL → the candles stream, each candle once.

Gaps: on start (once the WebSocket is connected) and after every reconnect, each series is
backfilled over REST from the candle after the last stored one up to the exchange's now;
with nothing stored yet, the last COLLECTOR_HISTORY_CANDLES candles are fetched. Live
candles wait while a backfill runs (one lock), so a series is always stored in order.

"Published once", across reconnects and restarts: store first, then publish. Per series a
Redis marker holds the open time of the last published candle; publishing sends every stored
candle after the marker, oldest first, and moves the marker in the same MULTI/EXEC
transaction as the XADDs, so a candle is either published with its marker or not at all.
After a crash between storing and publishing, the next start publishes what was stored but
not published. On a first start (no marker yet) the marker starts at the last candle closed
before the exchange's now: the history fetched then is stored for warm-ups, not published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.bus_envelope import encode
from shared.exchange import BinanceExchange, ConnectionState, KlineStream, Reconnect
from shared.exchange.parsers import ms_to_datetime
from shared.metrics import BUS_PUBLISHED_TOTAL, CANDLES_RECEIVED_TOTAL
from shared.models import Candle, interval_delta
from shared.streams import CANDLES

from data_collector.storage import CandleStorage

__all__ = ["DataCollector", "Series"]

log = structlog.get_logger("data_collector")

Series = tuple[str, str]
"""(symbol, interval)."""
PUBLISH_BATCH = 500


class DataCollector:
    """Collects `series` from `exchange` (REST) and `ws_url` (klines) into `storage` and `bus`."""

    def __init__(
        self,
        *,
        exchange: BinanceExchange,
        storage: CandleStorage,
        bus: EventBus,
        ws_url: str,
        series: Sequence[Series],
        history_candles: int,
        kline_options: dict[str, Any] | None = None,
    ) -> None:
        if not series:
            raise ValueError("the data collector needs at least one (symbol, interval)")
        self.exchange = exchange
        self.storage = storage
        self.bus = bus
        self.redis: Redis = bus.redis
        self.series = [(symbol.upper(), interval) for symbol, interval in series]
        self.history_candles = history_candles
        self.stream = KlineStream(
            ws_url,
            self.series,
            on_candle=self.on_candle,
            on_reconnect=self.on_reconnect,
            **(kline_options or {}),
        )
        self.last_close: dict[Series, datetime] = {}
        """Close time of the newest stored candle per series (for /health)."""
        self.ready = asyncio.Event()
        """Set once the first backfill is stored and published."""
        self._lock = asyncio.Lock()
        self._published_to: dict[Series, int] = {}
        """The publish marker (open time, ms) this process last wrote per series: while a
        new candle follows it directly, it is published without reading the marker and the
        stored candles back (the live path, one candle a minute per series)."""

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, backfill, then store and publish live candles until `stop`."""
        async with self._lock:
            stream = asyncio.create_task(self.stream.run())
            connected = asyncio.create_task(self.stream.connected_event.wait())
            await asyncio.wait({stream, connected}, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            if not stream.done():
                await self.backfill(first=True)
                self.ready.set()
        await stream

    async def stop(self) -> None:
        await self.stream.stop()

    def connected(self) -> bool:
        return self.stream.state is ConnectionState.CONNECTED

    def exchange_now(self) -> datetime:
        return ms_to_datetime(self.exchange.exchange_now_ms())

    # --- events --------------------------------------------------------------------------

    async def on_candle(self, candle: Candle) -> None:
        """A kline update: a closed candle is stored, then published."""
        if not candle.closed:
            return
        series = (candle.symbol, candle.interval)
        CANDLES_RECEIVED_TOTAL.labels(*series).inc()
        async with self._lock:
            stored = await self.storage.store([candle])
            self._seen(candle)
            step = _ms_step(interval_delta(candle.interval))
            if stored and self._published_to.get(series) == _ms(candle.open_time) - step:
                # Stored just now, and the next after the last one published: exactly what
                # publish_new would read back from the database and publish.
                await self._publish_batch(series, [candle])
            else:
                await self.publish_new(series)

    async def on_reconnect(self, event: Reconnect) -> None:
        """The WebSocket is back: fill what closed while it was down."""
        log.info("backfilling after reconnect", attempt=event.attempt)
        async with self._lock:
            await self.backfill()

    # --- backfill and publishing ---------------------------------------------------------

    async def backfill(self, *, first: bool = False) -> None:
        """Fetch, store and publish every closed candle missing since the last stored one."""
        await self.exchange.sync_clock()
        now = self.exchange_now()
        for series in self.series:
            symbol, interval = series
            step = interval_delta(interval)
            latest = await self.storage.latest(symbol, interval)
            current_open = ms_to_datetime(_ms(now) // _ms_step(step) * _ms_step(step))
            start = (
                latest.open_time + step if latest else current_open - self.history_candles * step
            )
            if latest is not None:
                self._seen(latest)
            if first and await self.redis.get(self._marker_key(series)) is None:
                # First start: what closed before now is history, stored for warm-ups but
                # not published; a candle closing from now on is published.
                await self.redis.set(self._marker_key(series), _ms(current_open - step))
            if start <= now and (latest is not None or self.history_candles > 0):
                fetched = [
                    c
                    for c in await self.exchange.fetch_klines(symbol, interval, start, now)
                    if c.closed
                ]
                if fetched:
                    CANDLES_RECEIVED_TOTAL.labels(symbol, interval).inc(len(fetched))
                    stored = await self.storage.store(fetched)
                    self._seen(fetched[-1])
                    log.info(
                        "backfilled",
                        symbol=symbol,
                        interval=interval,
                        fetched=len(fetched),
                        stored=stored,
                    )
            await self.publish_new(series)

    async def publish_new(self, series: Series) -> int:
        """Publish the stored candles of `series` after its marker; how many were published."""
        symbol, interval = series
        key = self._marker_key(series)
        raw = await self.redis.get(key)
        if raw is None:
            start = datetime.min.replace(tzinfo=UTC)
        else:
            start = ms_to_datetime(int(raw)) + timedelta(milliseconds=1)
        pending = await self.storage.since(symbol, interval, start)
        if not pending and raw is not None:
            self._published_to[series] = int(raw)
        for offset in range(0, len(pending), PUBLISH_BATCH):
            await self._publish_batch(series, pending[offset : offset + PUBLISH_BATCH])
        return len(pending)

    async def _publish_batch(self, series: Series, batch: Sequence[Candle]) -> None:
        """XADD the candles and move the series' marker past them, atomically (MULTI)."""
        stream_key = self.bus.key(CANDLES)
        marker = _ms(batch[-1].open_time)
        async with self.redis.pipeline(transaction=True) as pipe:
            for candle in batch:
                pipe.xadd(stream_key, encode(candle), maxlen=self.bus.maxlen, approximate=True)  # type: ignore[arg-type]
            pipe.set(self._marker_key(series), marker)
            await pipe.execute()
        self._published_to[series] = marker
        BUS_PUBLISHED_TOTAL.labels(CANDLES).inc(len(batch))

    def _marker_key(self, series: Series) -> str:
        symbol, interval = series
        return f"{self.bus.namespace}data-collector:published:{symbol}:{interval}"

    def _seen(self, candle: Candle) -> None:
        series = (candle.symbol, candle.interval)
        last = self.last_close.get(series)
        if last is None or candle.close_time > last:
            self.last_close[series] = candle.close_time

    def last_close_of(self, series: Series) -> Callable[[], datetime | None]:
        """For `shared.healthcheck.age_check`."""
        return lambda: self.last_close.get(series)


def _ms(time: datetime) -> int:
    return int(time.timestamp() * 1000)


def _ms_step(step: timedelta) -> int:
    return int(step.total_seconds() * 1000)
