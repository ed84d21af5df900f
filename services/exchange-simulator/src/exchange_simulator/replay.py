"""The candle clock: replays candles of one interval for several symbols in lockstep.

Time is a position on the timeline (every open time present in any series) and a stage
within the current candle. Each candle is shown in four stages that walk the real price
path a candle implies, so every price shown is a value from the data:

    stage 0  just opened        o=h=l=c=open, volume 0
    stage 1  first extreme      low for a rising candle (open→low→high→close), else high
    stage 2  second extreme     high and low both reached
    final    closed (x: true)   the candle as recorded

`step()` moves one stage; from stage 2 it closes the candle and opens the next one, so a
final event and the next candle's first event arrive together, as on Binance at a boundary.
Candles before the current position are closed; REST serves those plus the current one.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from shared.candle_io import read_candle_file
from shared.models import Candle, interval_delta

STAGES = 3  # partial stages per candle before the final event
VOLUME_QUANTUM = Decimal("0.00000001")


@dataclass(frozen=True)
class PriceMove:
    """One kline update of one symbol: the candle so far and the price path it covered."""

    candle: Candle
    low: Decimal  # lowest price traded since the previous update of this symbol
    high: Decimal


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def load_candles(path: Path, symbol: str, interval: str, limit: int | None = None) -> list[Candle]:
    """Candles of a file (any format `shared.candle_io` reads), optionally the first `limit`.

    `shared.candle_io` has validated every row exactly already; `CandleBatch.candles` builds
    the models without validating them a second time.
    """
    result: list[Candle] = []
    for batch in read_candle_file(path, interval):
        result.extend(batch.candles(symbol, interval))
        if limit is not None and len(result) >= limit:
            return result[:limit]
    return result


class Replay:
    """Lockstep replay of `candles` (per symbol, one interval) starting after `history` candles."""

    def __init__(self, candles: Mapping[str, Sequence[Candle]], interval: str, history: int = 0):
        if not candles:
            raise ValueError("the simulator needs candles of at least one symbol to replay")
        interval_delta(interval)
        self.interval = interval
        self.interval_ms = int(interval_delta(interval).total_seconds() * 1000)
        self._series: dict[str, list[Candle]] = {}
        self._times: dict[str, list[int]] = {}
        for symbol, series in candles.items():
            ordered = sorted(series, key=lambda c: c.open_time)
            if not ordered:
                raise ValueError(f"no candles given for {symbol}")
            wrong = [c for c in ordered if c.interval != interval or c.symbol != symbol]
            if wrong:
                raise ValueError(
                    f"candle {wrong[0].symbol} {wrong[0].interval} at {wrong[0].open_time} "
                    f"given as {symbol} {interval}: every series must match its symbol and "
                    "the simulator's interval"
                )
            self._series[symbol] = ordered
            self._times[symbol] = [ms(c.open_time) for c in ordered]
        self.timeline = sorted({t for times in self._times.values() for t in times})
        self.position = max(0, min(history, len(self.timeline)))
        self.stage = 0
        self._last_price: dict[str, Decimal] = {}
        # A price set through the control API holds until the replay moves on.
        self._override: dict[str, Decimal] = {}
        for symbol in self._series:
            self._last_price[symbol] = self._price_before(symbol)

    # --- what is visible ---------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        return list(self._series)

    @property
    def finished(self) -> bool:
        return self.position >= len(self.timeline)

    @property
    def current_open_ms(self) -> int | None:
        return None if self.finished else self.timeline[self.position]

    @property
    def stage_time_ms(self) -> int:
        """The replay's time as its stages show it: the open candle's open time plus a third
        of the interval per stage shown; after the last candle, that candle's close + 1 ms."""
        if self.finished:
            return self.timeline[-1] + self.interval_ms
        return self.timeline[self.position] + self.stage * self.interval_ms // STAGES

    @property
    def next_stage_time_ms(self) -> int | None:
        """When the next stage begins (the open candle's close + 1 ms after the last one)."""
        if self.finished:
            return None
        return self.timeline[self.position] + (self.stage + 1) * self.interval_ms // STAGES

    def current_candle(self, symbol: str) -> Candle | None:
        """The open candle of `symbol` as far as it has traded, or None in a gap."""
        index = self._current_index(symbol)
        if index is None:
            return None
        return self._partial(self._series[symbol][index], self.stage)

    def price(self, symbol: str) -> Decimal:
        """The last traded price: the current candle's close so far."""
        return self._last_price[symbol]

    def klines(
        self,
        symbol: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Candle]:
        """Binance's klines query over the candles that exist by now (closed + current)."""
        times = self._times[symbol]
        visible = self._visible_count(symbol)
        lo = 0 if start_ms is None else bisect.bisect_left(times, start_ms, 0, visible)
        hi = visible if end_ms is None else bisect.bisect_right(times, end_ms, 0, visible)
        if start_ms is None and hi - lo > limit:
            lo = hi - limit
        hi = min(hi, lo + limit)
        result = self._series[symbol][lo:hi]
        current = self._current_index(symbol)
        if current is not None and lo <= current < hi:
            result = list(result)
            result[current - lo] = self._partial(self._series[symbol][current], self.stage)
        return result

    def closes(self, symbol: str, count: int) -> list[Decimal]:
        """The closes of the last `count` candles up to now (the current one so far)."""
        candles = self.klines(symbol, limit=count)
        return [c.close for c in candles] or [self.price(symbol)]

    # --- moving ------------------------------------------------------------------------

    def step(self) -> list[PriceMove]:
        """Advance one stage; the updates every symbol pushes for it (final ones first)."""
        if self.finished:
            return []
        self._override.clear()
        if self.stage < STAGES - 1:
            self.stage += 1
            return self._moves(final=False)
        closing = self._moves(final=True)
        self.position += 1
        self.stage = 0
        return closing + ([] if self.finished else self._moves(final=False))

    def set_price(self, symbol: str, price: Decimal) -> PriceMove | None:
        """Trade `symbol` at `price` now: the current candle's close so far becomes `price`.

        The candle's high/low widen to include it (kept in its final version too). In a gap
        there is no candle to update; the price still moves (None is returned).
        """
        previous = self._last_price[symbol]
        self._last_price[symbol] = price
        index = self._current_index(symbol)
        if index is None:
            return None
        recorded = self._series[symbol][index]
        self._series[symbol][index] = recorded.model_copy(
            update={"high": max(recorded.high, price), "low": min(recorded.low, price)}
        )
        self._override[symbol] = price
        candle = self._partial(self._series[symbol][index], self.stage)
        return PriceMove(candle, min(previous, price), max(previous, price))

    # --- internals ---------------------------------------------------------------------

    def _current_index(self, symbol: str) -> int | None:
        if self.finished:
            return None
        now = self.timeline[self.position]
        times = self._times[symbol]
        index = bisect.bisect_left(times, now)
        return index if index < len(times) and times[index] == now else None

    def _visible_count(self, symbol: str) -> int:
        if self.finished:
            return len(self._times[symbol])
        return bisect.bisect_right(self._times[symbol], self.timeline[self.position])

    def _price_before(self, symbol: str) -> Decimal:
        current = self._current_index(symbol)
        if current is not None:
            return self._series[symbol][current].open
        visible = self._visible_count(symbol)
        series = self._series[symbol]
        return series[visible - 1].close if visible else series[0].open

    def _moves(self, *, final: bool) -> list[PriceMove]:
        moves = []
        for symbol, series in self._series.items():
            index = self._current_index(symbol)
            if index is None:
                continue
            candle = series[index] if final else self._partial(series[index], self.stage)
            previous = self._last_price[symbol]
            self._last_price[symbol] = candle.close
            # Between stages the price walks straight from one value to the next.
            moves.append(
                PriceMove(candle, min(previous, candle.close), max(previous, candle.close))
            )
        return moves

    def _partial(self, candle: Candle, stage: int) -> Candle:
        override = self._override.get(candle.symbol)
        rising = candle.close >= candle.open
        first, second = (candle.low, candle.high) if rising else (candle.high, candle.low)
        if stage == 0:
            close, high, low = candle.open, candle.open, candle.open
        elif stage == 1:
            close, high, low = first, max(candle.open, first), min(candle.open, first)
        else:
            close, high, low = second, candle.high, candle.low
        if override is not None:
            close, high, low = override, max(high, override), min(low, override)
        fraction = Decimal(stage) / STAGES
        quote = candle.quote_volume
        return candle.model_copy(
            update={
                "close": close,
                "high": high,
                "low": low,
                "volume": (candle.volume * fraction).quantize(VOLUME_QUANTUM),
                "quote_volume": None
                if quote is None
                else (quote * fraction).quantize(VOLUME_QUANTUM),
                "trades": None if candle.trades is None else candle.trades * stage // STAGES,
                "closed": False,
            }
        )
