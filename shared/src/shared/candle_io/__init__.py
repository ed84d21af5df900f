"""Candle files: read, validate and import Binance klines from CSV (plain, gzip, zip) or Parquet.

`read_candle_file` streams validated batches without a database; `import_candle_file`
stores a whole file in one transaction. Both raise `CandleFileError` naming the file,
the line and what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from shared.candle_io.errors import CandleFileError
from shared.candle_io.readers import (
    BINANCE_KLINE_COLUMNS,
    CANDLE_COLUMNS,
    DEFAULT_BLOCK_BYTES,
    CandleReader,
)
from shared.candle_io.sources import CandleSource, detect_source
from shared.candle_io.validation import CandleBatch, CandleValidator

__all__ = [
    "BINANCE_KLINE_COLUMNS",
    "CANDLE_COLUMNS",
    "CandleBatch",
    "CandleFileError",
    "CandleReader",
    "CandleSource",
    "CandleValidator",
    "detect_source",
    "read_candle_file",
]


def read_candle_file(
    path: Path, interval: str, *, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> Iterator[CandleBatch]:
    """Every row of a candle file, validated, in batches; no database involved."""
    reader = CandleReader(detect_source(path), block_bytes=block_bytes)
    validator = CandleValidator(path, interval)
    for raw in reader.batches():
        yield validator.validate(raw)
