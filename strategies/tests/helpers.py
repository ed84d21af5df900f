"""Candle builders and readers shared by the strategy tests."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path

import numpy as np
from shared.models import Candle, Signal
from shared.strategy import BaseStrategy

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
START = datetime(2024, 1, 1, tzinfo=UTC)


def make_candle(
    index: int,
    close: float | str | Decimal,
    *,
    high: float | str | Decimal | None = None,
    low: float | str | Decimal | None = None,
    volume: float | str | Decimal = 1,
    interval: str = "1h",
    start: datetime = START,
    symbol: str = "BTCUSDT",
) -> Candle:
    """Candle number `index` of a series starting at `start` (open = close unless given)."""
    step = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1)}[interval]
    c = Decimal(str(close))
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=start + index * step,
        open=c,
        high=Decimal(str(high)) if high is not None else c,
        low=Decimal(str(low)) if low is not None else c,
        close=c,
        volume=Decimal(str(volume)),
    )


def series(closes: Iterable[float | str], **kwargs: object) -> list[Candle]:
    """Consecutive candles with these closes."""
    return [make_candle(i, c, **kwargs) for i, c in enumerate(closes)]  # type: ignore[arg-type]


def run(strategy: BaseStrategy, candles: Iterable[Candle]) -> list[tuple[int, Signal]]:
    """(candle index, signal) for every signal the strategy gives over the candles."""
    out = []
    for i, candle in enumerate(candles):
        signal = strategy.on_candle(candle)
        if signal is not None:
            out.append((i, signal))
    return out


def sides(strategy: BaseStrategy, candles: Sequence[Candle]) -> list[tuple[int, str]]:
    return [(i, s.side.value) for i, s in run(strategy, candles)]


@dataclass(frozen=True)
class Ohlcv:
    """A shared/data CSV as numpy float64 columns (open time in ms)."""

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    rows: tuple[tuple[str, ...], ...]


@cache
def read_ohlcv(name: str) -> Ohlcv:
    with gzip.open(SHARED_DATA / name, "rt", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = tuple(tuple(row[:6]) for row in reader)
    cols = list(zip(*rows, strict=True))
    return Ohlcv(
        open_time=np.array(cols[0], dtype=np.int64),
        open=np.array(cols[1], dtype=np.float64),
        high=np.array(cols[2], dtype=np.float64),
        low=np.array(cols[3], dtype=np.float64),
        close=np.array(cols[4], dtype=np.float64),
        volume=np.array(cols[5], dtype=np.float64),
        rows=rows,
    )


@cache
def read_candles(name: str, interval: str, limit: int | None = None) -> tuple[Candle, ...]:
    symbol = name.split("-")[0]
    data = read_ohlcv(name)
    return tuple(
        Candle(
            symbol=symbol,
            interval=interval,
            open_time=datetime.fromtimestamp(int(row[0]) / 1000, UTC),
            open=Decimal(row[1]),
            high=Decimal(row[2]),
            low=Decimal(row[3]),
            close=Decimal(row[4]),
            volume=Decimal(row[5]),
        )
        for row in data.rows[:limit]
    )
