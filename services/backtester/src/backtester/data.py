"""Where a backtest's candles come from: a candle file or the database.

Both sources give the same `CandleData` for the same candles: the candles of [start, end) and,
before them, up to `warmup` earlier candles that only warm the strategy up. Without a start the
run begins at the first candle and nothing is fed beforehand (the strategy still does not signal
during its own warm-up period).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.candle_io import CandleBatch, read_candle_file
from shared.models import Candle
from sqlalchemy.ext.asyncio import AsyncSession

HASH_CHUNK = 1 << 20


class NoCandlesError(ValueError):
    """The source holds no candle in the requested range."""


@dataclass(frozen=True, slots=True)
class CandleData:
    """The candles to trade on, the warm-up before them, and a description for the manifest."""

    candles: list[Candle]
    warmup: list[Candle]
    source: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def batch_candles(batch: CandleBatch, symbol: str, interval: str) -> list[Candle]:
    """`Candle`s of a batch that `CandleValidator` has already checked.

    Built by `CandleBatch.candles` without validating every row a second time (pydantic's
    validation, or even `model_construct`, was most of a backtest's loading time). Same
    values as `CandleBatch.to_candles`.
    """
    return batch.candles(symbol, interval)


def _split(
    candles: list[Candle], start: datetime | None, end: datetime | None, warmup: int
) -> tuple[list[Candle], list[Candle]]:
    """(warm-up, traded) from sorted candles: [start, end) and up to `warmup` before start."""
    first = 0
    if start is not None:
        first = next((i for i, c in enumerate(candles) if c.open_time >= start), len(candles))
    last = len(candles)
    if end is not None:
        last = next((i for i, c in enumerate(candles) if c.open_time >= end), len(candles))
    traded = candles[first:last] if last > first else []
    before = candles[max(0, first - warmup) : first] if start is not None else []
    return before, traded


def _range_text(start: datetime | None, end: datetime | None) -> str:
    lower = start.isoformat() if start else "the first candle"
    upper = end.isoformat() if end else "the last candle"
    return f"from {lower} to {upper}"


def load_file_candles(
    path: Path,
    symbol: str,
    interval: str,
    start: datetime | None = None,
    end: datetime | None = None,
    warmup: int = 0,
) -> CandleData:
    """Candles of a file `trading data import` reads (CSV, gzip, zip or Parquet).

    Raises FileNotFoundError, `shared.candle_io.CandleFileError` for a bad file, and
    `NoCandlesError` when no candle falls in [start, end).
    """
    if not path.is_file():
        raise FileNotFoundError(f"candle file {path} not found: pass an existing --data FILE")
    candles: list[Candle] = []
    # Oldest first already: the reader rejects a file whose times do not strictly increase.
    for batch in read_candle_file(path, interval):
        candles.extend(batch_candles(batch, symbol, interval))
    before, traded = _split(candles, start, end, warmup)
    if not traded:
        raise NoCandlesError(
            f"no candles in {path} {_range_text(start, end)}: "
            "check --start/--end against the file's dates"
        )
    source = {
        "type": "file",
        "path": str(path),
        "sha256": file_sha256(path),
        "first_candle": traded[0].open_time.isoformat(),
        "last_candle": traded[-1].open_time.isoformat(),
    }
    return CandleData(traded, before, source)


async def load_db_candles(
    session: AsyncSession,
    symbol: str,
    interval: str,
    start: datetime | None = None,
    end: datetime | None = None,
    warmup: int = 0,
) -> CandleData:
    """Candles of one series from the database; raises `NoCandlesError` when none in range."""
    from shared.db import candles_between, recent_candles

    traded = await candles_between(session, symbol, interval, start, end)
    if not traded:
        raise NoCandlesError(
            f"no {symbol} {interval} candles in the database {_range_text(start, end)}: "
            "import some with `trading data import` or widen --start/--end"
        )
    before: list[Candle] = []
    if start is not None and warmup > 0:
        before = await recent_candles(session, symbol, interval, warmup, before=start)
    source = {
        "type": "database",
        "symbol": symbol,
        "interval": interval,
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "first_candle": traded[0].open_time.isoformat(),
        "last_candle": traded[-1].open_time.isoformat(),
    }
    return CandleData(traded, before, source)
