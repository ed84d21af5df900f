"""Import one candle file into the database: all of it, or (on any bad row) none of it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.candle_io.errors import CandleFileError
from shared.candle_io.readers import DEFAULT_BLOCK_BYTES, CandleReader
from shared.candle_io.sources import detect_source
from shared.candle_io.validation import CandleValidator
from shared.db import find_gaps, upsert_candles
from shared.models import INTERVALS, CandleGap

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
    source = detect_source(path)
    reader = CandleReader(source, block_bytes=block_bytes)
    validator = CandleValidator(path, interval)
    rows_read = new = 0
    async with sessions() as session:
        async with session.begin():
            for raw in reader.batches():
                batch = validator.validate(raw)
                rows_read += len(batch)
                new += await upsert_candles(session, batch.to_candles(symbol, interval))
                if progress is not None:
                    progress(raw.position, reader.total)
        if rows_read == 0:
            raise CandleFileError(path, "holds no candles")
        gaps = await find_gaps(session, symbol, interval)
    return ImportReport(path, symbol, interval, rows_read, new, gaps)
