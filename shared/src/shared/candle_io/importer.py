"""Import one candle file into the database: all of it, or (on any bad row) none of it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.candle_io.bulk import PreparedBatch, prepare_batch
from shared.candle_io.errors import CandleFileError
from shared.candle_io.readers import DEFAULT_BLOCK_BYTES, CandleReader
from shared.candle_io.sources import detect_source
from shared.candle_io.validation import CandleValidator
from shared.db import find_gaps
from shared.models import INTERVALS, CandleGap
from shared.repositories.candles import upsert_candle_rows

ProgressCallback = Callable[[int, int], None]
"""Called after each batch with (done, total), in the reader's unit (bytes or rows)."""

# BTCUSDT-1m.csv.gz, BTCUSDT-1m-2023-03.zip (Binance's monthly archives), ETHUSDT-15m.parquet
_FILE_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]{2,})-(?P<interval>\d+[smhdw])(?=$|[-_.])")


@dataclass(frozen=True)
class ImportReport:
    """What one import did: rows read, how many were new, and the series' gaps afterwards."""

    path: Path
    symbol: str
    interval: str
    rows_read: int
    new: int
    gaps: list[CandleGap]

    @property
    def already_present(self) -> int:
        return self.rows_read - self.new

    @property
    def missing_candles(self) -> int:
        return sum(gap.missing_candles for gap in self.gaps)


def infer_series(path: Path) -> tuple[str | None, str | None]:
    """Symbol and interval from a file name like BTCUSDT-1m.csv.gz (None where it says nothing)."""
    match = _FILE_NAME.match(path.name)
    if match is None:
        return None, None
    interval = match["interval"]
    return match["symbol"], interval if interval in INTERVALS else None


def _prepared_batches(
    reader: CandleReader, validator: CandleValidator, symbol: str, interval: str
) -> Generator[tuple[int, PreparedBatch]]:
    for raw in reader.batches():
        yield raw.position, prepare_batch(validator.validate(raw), symbol, interval)


def _next_or_none(
    batches: Generator[tuple[int, PreparedBatch]],
) -> tuple[int, PreparedBatch] | None:
    return next(batches, None)


async def import_candle_file(
    sessions: async_sessionmaker[AsyncSession],
    path: Path,
    symbol: str,
    interval: str,
    *,
    progress: ProgressCallback | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> ImportReport:
    """Validate and store every candle of `path` in one transaction.

    Raises `CandleFileError` (naming the file, line and problem) at the first bad row; the
    transaction is then rolled back, so nothing of the file is stored. Candles already in
    the database are left as they are and counted as already present. `block_bytes` is how
    much of a CSV is parsed, checked and sent to the database at a time.
    """
    if not (symbol.isalnum() and symbol.isupper()):
        raise ValueError(f"symbol {symbol!r} must be upper-case letters and digits, e.g. BTCUSDT")
    source = detect_source(path)
    reader = CandleReader(source, block_bytes=block_bytes)
    validator = CandleValidator(path, interval)
    batches = _prepared_batches(reader, validator, symbol, interval)
    rows_read = new = 0
    async with sessions() as session:
        # The next batch is parsed and checked in a worker thread while PostgreSQL stores
        # the current one, so the two costs overlap instead of adding up.
        pending = asyncio.ensure_future(asyncio.to_thread(_next_or_none, batches))
        try:
            async with session.begin():
                while (item := await pending) is not None:
                    position, batch = item
                    pending = asyncio.ensure_future(asyncio.to_thread(_next_or_none, batches))
                    new += await upsert_candle_rows(session, batch.csv, batch.rows)
                    rows_read += batch.rows
                    if progress is not None:
                        progress(position, reader.total)
        finally:
            # A database error leaves a parse running: let it finish before the file closes.
            if not pending.done():
                await asyncio.gather(pending, return_exceptions=True)
            batches.close()
        if rows_read == 0:
            raise CandleFileError(path, "holds no candles")
        gaps = await find_gaps(session, symbol, interval)
    return ImportReport(path, symbol, interval, rows_read, new, gaps)
