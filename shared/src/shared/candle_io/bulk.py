"""Store validated candle batches fast: the file's own text goes to PostgreSQL by COPY.

`shared.db.upsert_candles` takes `Candle` models; building a pydantic model per row and
having asyncpg encode each Decimal in binary costs about ten times what PostgreSQL's own
text COPY needs (see docs/BENCHMARKS.md, "Candle import"). A batch that has passed
`CandleValidator` is already checked, and its numbers are the file's exact decimal text,
so it can be sent as CSV and parsed by the server, without changing a digit.

Same contract as `upsert_candles`: runs in the caller's transaction, never commits,
leaves rows already stored untouched and returns how many were new.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import cast

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Column, MetaData, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.schema import CreateTable, DropTable

from shared import sa_models
from shared.candle_io.validation import CandleBatch

CANDLES = cast(Table, sa_models.CandleRow.__table__)
COLUMNS = (
    "symbol",
    "interval",
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "closed",
)
_KEY = ("symbol", "interval", "open_time")

# Where a batch lands when some of its candles are already stored: COPY cannot skip rows,
# so they are merged from here with INSERT ... ON CONFLICT DO NOTHING. Session-private,
# and dropped at commit or rollback whatever happens.
_STAGING = Table(
    "candle_import_staging",
    MetaData(),
    *(Column(column.name, column.type) for column in CANDLES.columns),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


@dataclass(frozen=True)
class PreparedBatch:
    """A validated batch as CSV rows in `COLUMNS` order, ready for COPY."""

    rows: int
    csv: bytes


def prepare_batch(batch: CandleBatch, symbol: str, interval: str) -> PreparedBatch:
    """The batch as CSV text for COPY (an empty field is NULL). Pure: runs in any thread.

    Written by Arrow's CSV writer: the numbers are the file's text, unchanged.
    """
    size = len(batch)
    first = pa.array(np.zeros(size, dtype=np.int64))
    table = pa.table(
        {
            "symbol": pa.array([symbol]).take(first),
            "interval": pa.array([interval]).take(first),
            # numpy writes ISO times with a "Z" several times faster than Arrow's writer
            # formats a UTC timestamp column.
            "open_time": pa.array(
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
            "closed": pa.array(np.ones(size, dtype=bool)),
        }
    )
    sink = io.BytesIO()
    # Nothing here ever needs quoting: the values passed validation as numbers.
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    pa_csv.write_csv(table, sink, write_options=options)
    return PreparedBatch(size, sink.getvalue())


async def _copy(connection: AsyncConnection, table: str, data: bytes) -> None:
    raw = await connection.get_raw_connection()
    driver = cast(asyncpg.Connection, raw.driver_connection)
    await driver.copy_to_table(table, source=io.BytesIO(data), columns=COLUMNS, format="csv")


async def store_batch(session: AsyncSession, batch: PreparedBatch) -> int:
    """Store a prepared batch; candles already stored stay as they are. Returns the new count."""
    if not batch.rows:
        return 0
    connection = await session.connection()
    # The common case, a range not stored yet, goes straight in. If any candle is already
    # there the COPY fails on the primary key, the savepoint undoes it, and the batch
    # takes the staging route instead.
    try:
        async with connection.begin_nested():
            await _copy(connection, CANDLES.name, batch.csv)
        return batch.rows
    except asyncpg.UniqueViolationError:
        pass
    await connection.execute(CreateTable(_STAGING))
    await _copy(connection, _STAGING.name, batch.csv)
    merge = (
        pg_insert(CANDLES)
        .from_select(COLUMNS, select(*(_STAGING.c[name] for name in COLUMNS)))
        .on_conflict_do_nothing(index_elements=_KEY)
    )
    inserted = (await connection.execute(merge)).rowcount
    await connection.execute(DropTable(_STAGING))
    return inserted
