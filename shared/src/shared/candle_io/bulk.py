"""Validated candle batches as COPY text: the file's own value strings, not a digit changed.

Building a pydantic `Candle` per row and having asyncpg encode each Decimal in binary costs
about ten times what PostgreSQL's own text COPY needs (see docs/BENCHMARKS.md, "Candle
import"). A batch that has passed `CandleValidator` is already checked, and its numbers are
the file's exact decimal text, so it is written as CSV in the repository's column order and
stored by `shared.repositories.candles.upsert_candle_rows`, the one bulk path for candles.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv

from shared.candle_io.validation import CandleBatch
from shared.repositories.candles import CANDLE_COLUMNS


@dataclass(frozen=True)
class PreparedBatch:
    """A validated batch as CSV rows in `CANDLE_COLUMNS` order, ready for COPY."""

    rows: int
    csv: bytes


def _text_column(texts: npt.NDArray[np.str_]) -> pa.Array:
    """An Arrow string column of ASCII texts, built from buffers.

    `pa.array()` would import pandas (seconds on a cold start of `trading data import`).
    """
    encoded = [text.encode("ascii") for text in texts.tolist()]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(text) for text in encoded], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(encoded), buffers)


def _all_true(size: int) -> pa.Array:
    bits = np.packbits(np.ones(size, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), size, [None, pa.py_buffer(bits)])


def prepare_batch(batch: CandleBatch, symbol: str, interval: str) -> PreparedBatch:
    """The batch as CSV text for COPY (an empty field is NULL). Pure: runs in any thread.

    Written by Arrow's CSV writer: the numbers are the file's text, unchanged.
    """
    size = len(batch)
    columns = {
        "symbol": _text_column(np.full(size, symbol)),
        "interval": _text_column(np.full(size, interval)),
        # numpy writes ISO times with a "Z" several times faster than Arrow's writer
        # formats a UTC timestamp column.
        "open_time": _text_column(
            np.datetime_as_string(
                batch.open_time_ms.astype("datetime64[ms]"), unit="s", timezone="UTC"
            )
        ),
        "open": batch.open,
        "high": batch.high,
        "low": batch.low,
        "close": batch.close,
        "volume": batch.volume,
        "quote_volume": batch.quote_volume
        if batch.quote_volume is not None
        else pa.nulls(size, pa.string()),
        "trades": batch.trades if batch.trades is not None else pa.nulls(size, pa.int64()),
        "closed": _all_true(size),
    }
    table = pa.Table.from_arrays(
        [columns[name] for name in CANDLE_COLUMNS], names=list(CANDLE_COLUMNS)
    )
    sink = io.BytesIO()
    # Nothing here ever needs quoting: the values passed validation as numbers.
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    pa_csv.write_csv(table, sink, write_options=options)
    return PreparedBatch(size, sink.getvalue())
