"""Candle repository: idempotent bulk import, range queries, gaps and per-series summaries.

Every function takes the caller's `AsyncSession` and never commits: the caller owns the
transaction, so a whole file's import can be rolled back as one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    MetaData,
    Select,
    Table,
    and_,
    case,
    cast,
    extract,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.schema import CreateTable, DropTable

from shared.models import INTERVALS, Candle, CandleGap, CandleSeriesSummary, interval_delta
from shared.repositories._convert import (
    CANDLES,
    Connectable,
    connection_of,
    require_aware,
    to_model,
)
from shared.repositories._driver import DriverStatement

CANDLE_COLUMNS = (
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
_INSERT_CANDLE_NOW = DriverStatement(
    pg_insert(CANDLES).on_conflict_do_nothing(index_elements=_KEY), CANDLE_COLUMNS
)

# Up to this many rows go in one multi-row INSERT; more are streamed with COPY. One INSERT
# is cheaper for the data collector's one-candle-at-a-time writes, COPY for file imports.
# (PostgreSQL allows 32,767 bind parameters a statement: 11 per candle.)
COPY_THRESHOLD = 1000

# Where COPY puts the rows before they are merged into `candles`. A session-private TEMP
# table that also disappears at commit or rollback, whatever happens in between.
_STAGING = Table(
    "candles_staging",
    MetaData(),
    *(Column(column.name, column.type) for column in CANDLES.columns),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


def _records(candles: Iterable[Candle]) -> list[tuple[Any, ...]]:
    return [
        (
            c.symbol,
            c.interval,
            c.open_time,
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            c.quote_volume,
            c.trades,
            c.closed,
        )
        for c in candles
    ]


Record = tuple[Any, ...]


async def upsert_candles(session: Connectable, candles: Iterable[Candle]) -> int:
    """Store candles that are not stored yet; return how many were new.

    Idempotent: a candle whose (symbol, interval, open_time) is already stored is left as
    it is (as is a repeat within `candles`: the first one wins), so importing the same file
    twice changes nothing. Runs in the caller's transaction and does not commit, so a
    caller can roll back a whole file's import. Up to `COPY_THRESHOLD` candles it is one
    statement, which an autocommit connection (`shared.db.Writer.statement`) may run; more
    need a transaction (the COPY stages them in a table dropped at commit).
    """
    records = _first_of_each_key(_records(candles))
    connection = await connection_of(session)
    if len(records) > COPY_THRESHOLD:
        # A big batch: leave out what is stored already (one index-only range scan per
        # series), so a re-import costs one query and the COPY below rarely needs a merge.
        stored = await _stored_keys(connection, records)
        records = [record for record in records if record[:3] not in stored]
    if not records:
        return 0
    if len(records) <= COPY_THRESHOLD:
        rows = [dict(zip(CANDLE_COLUMNS, record, strict=True)) for record in records]
        if len(rows) == 1:
            # A live candle: the statement built once, the row passed at execution (a
            # multi-row VALUES list is compiled anew each call, ~0.7 ms, and building even a
            # single-row one costs ~0.2 ms); on the driver when `session` is an autocommit
            # connection: the collector's write between a candle's close and its publish.
            return await _INSERT_CANDLE_NOW.rowcount(connection, rows[0])
        statement = pg_insert(CANDLES).values(rows).on_conflict_do_nothing(index_elements=_KEY)
        return (await connection.execute(statement)).rowcount
    return await upsert_candle_rows(session, _csv(records), len(records))


async def upsert_candle_rows(session: Connectable, rows: bytes, count: int) -> int:
    """Store `count` candles given as COPY CSV text; return how many were new.

    The bulk path of every candle write (`upsert_candles` and the file importer): one CSV
    line per candle, fields in `CANDLE_COLUMNS` order, an empty field for NULL, the numbers
    as exact decimal text, times in ISO 8601 with an offset. PostgreSQL parses and checks
    the text, so nothing is rounded on the way. The keys (symbol, interval, open_time) must
    be distinct within `rows`: the callers pass deduplicated or strictly ordered rows.

    Same contract as `upsert_candles`: runs in the caller's transaction, never commits, and
    is safe against a concurrent writer (a key stored meanwhile is left as it is).
    """
    if not count:
        return 0
    connection = await connection_of(session)
    copied = await _copy_straight_in(connection, rows)
    if copied:
        return count
    return await _copy_then_merge(connection, rows)


def _first_of_each_key(records: list[Record]) -> list[Record]:
    unique: dict[tuple[Any, ...], Record] = {}
    for record in records:
        unique.setdefault(record[:3], record)
    return records if len(unique) == len(records) else list(unique.values())


async def _stored_keys(connection: AsyncConnection, records: Sequence[Record]) -> set[Record]:
    """The keys already stored within each series' time span in the batch."""
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for symbol, interval, open_time, *_ in records:
        first, last = spans.get((symbol, interval), (open_time, open_time))
        spans[(symbol, interval)] = (min(first, open_time), max(last, open_time))
    stored: set[Record] = set()
    for (symbol, interval), (first, last) in spans.items():
        inside = select(CANDLES.c.open_time).where(
            _series(symbol, interval), CANDLES.c.open_time.between(first, last)
        )
        times = (await connection.execute(inside)).scalars()
        stored.update((symbol, interval, open_time) for open_time in times)
    return stored


def _csv(records: Sequence[Record]) -> bytes:
    # Text COPY rather than asyncpg's binary records: encoding a Decimal for the binary
    # protocol costs more in Python than str() does, and PostgreSQL parses the text fast.
    # str(Decimal) is exact (1E-8 included); None becomes an unquoted empty field: NULL.
    buffer = io.StringIO()
    csv.writer(buffer).writerows(
        (symbol, interval, open_time.isoformat(), *rest)
        for symbol, interval, open_time, *rest in records
    )
    return buffer.getvalue().encode()


async def _driver_copy(connection: AsyncConnection, table: str, rows: bytes) -> None:
    # asyncpg's COPY on the session's own connection, inside its open transaction.
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await driver.copy_to_table(table, source=io.BytesIO(rows), columns=CANDLE_COLUMNS, format="csv")


async def _copy_straight_in(connection: AsyncConnection, rows: bytes) -> bool:
    """COPY the rows directly into `candles`: the fast path, for a range not stored yet.

    If any of them is stored already (or a concurrent writer stores one first), the COPY
    fails on the primary key, the savepoint undoes it, and False says "merge instead".
    """
    import asyncpg  # the driver's own error type: the COPY bypasses SQLAlchemy's wrapping

    try:
        async with connection.begin_nested():
            await _driver_copy(connection, CANDLES.name, rows)
    except asyncpg.UniqueViolationError:
        return False
    return True


async def _copy_then_merge(connection: AsyncConnection, rows: bytes) -> int:
    # COPY cannot skip rows already stored, so the rows land in a TEMP table first and one
    # INSERT ... SELECT ... ON CONFLICT DO NOTHING merges them. The CREATE runs through
    # SQLAlchemy, inside the transaction that the driver-level COPY then joins.
    await connection.execute(CreateTable(_STAGING))
    await _driver_copy(connection, _STAGING.name, rows)
    merge = (
        pg_insert(CANDLES)
        .from_select(CANDLE_COLUMNS, select(*(_STAGING.c[name] for name in CANDLE_COLUMNS)))
        .on_conflict_do_nothing(index_elements=_KEY)
    )
    inserted = (await connection.execute(merge)).rowcount
    await connection.execute(DropTable(_STAGING))
    return inserted


def _series(symbol: str, interval: str) -> ColumnElement[bool]:
    return and_(CANDLES.c.symbol == symbol, CANDLES.c.interval == interval)


# Validating a whole list in one call stays inside pydantic-core: markedly faster than one
# model_validate per row when a backtest loads a hundred thousand candles.
_CANDLE_LIST = TypeAdapter(list[Candle])


async def _fetch(session: Connectable, statement: Select[Any]) -> list[Candle]:
    result = await session.execute(statement)
    names = list(result.keys())
    return _CANDLE_LIST.validate_python(
        [dict(zip(names, row, strict=True)) for row in result.all()]
    )


async def candles_between(
    session: Connectable,
    symbol: str,
    interval: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Candle]:
    """Candles of one series with `start <= open_time < end`, oldest first.

    `None` leaves that side open, so `candles_between(s, "BTCUSDT", "1m")` is the whole series.
    """
    require_aware("start", start)
    require_aware("end", end)
    statement = select(CANDLES).where(_series(symbol, interval))
    if start is not None:
        statement = statement.where(CANDLES.c.open_time >= start)
    if end is not None:
        statement = statement.where(CANDLES.c.open_time < end)
    return await _fetch(session, statement.order_by(CANDLES.c.open_time))


async def recent_candles(
    session: AsyncSession,
    symbol: str,
    interval: str,
    limit: int,
    *,
    before: datetime | None = None,
) -> list[Candle]:
    """The last `limit` candles of a series (opened before `before`, if given), oldest first.

    What a strategy needs to warm up its indicators.
    """
    require_aware("before", before)
    statement = select(CANDLES).where(_series(symbol, interval))
    if before is not None:
        statement = statement.where(CANDLES.c.open_time < before)
    newest_first = await _fetch(
        session, statement.order_by(CANDLES.c.open_time.desc()).limit(limit)
    )
    return newest_first[::-1]


async def latest_candle(session: AsyncSession, symbol: str, interval: str) -> Candle | None:
    """The most recent candle of a series, or None when none is stored."""
    latest = await recent_candles(session, symbol, interval, 1)
    return latest[0] if latest else None


async def latest_closes(session: AsyncSession, symbols: Iterable[str]) -> dict[str, Decimal]:
    """Per symbol, the close of its stored candle that closed last, whatever its interval
    (symbols without a stored candle are left out). One index lookup per symbol and interval.
    """
    found: dict[str, tuple[datetime, Decimal]] = {}
    for symbol in sorted(set(symbols)):
        for interval, step in INTERVALS.items():
            candle = await latest_candle(session, symbol, interval)
            if candle is None:
                continue
            closes = candle.open_time + step
            if symbol not in found or closes > found[symbol][0]:
                found[symbol] = (closes, candle.close)
    return {symbol: close for symbol, (_, close) in found.items()}


def _missing_before_each_candle(where: ColumnElement[bool] | None = None) -> Any:
    """Per candle: how many candles of its series are missing right before it.

    lag() looks at the previous stored candle of the same series; the difference in
    interval lengths, minus one, is the number missing. A series' first candle gives NULL.
    """
    step_seconds = case(
        {name: int(delta.total_seconds()) for name, delta in INTERVALS.items()},
        value=CANDLES.c.interval,
    )
    previous = func.lag(CANDLES.c.open_time).over(
        partition_by=(CANDLES.c.symbol, CANDLES.c.interval), order_by=CANDLES.c.open_time
    )
    missing = cast(
        func.floor(extract("epoch", CANDLES.c.open_time - previous) / step_seconds) - 1,
        BigInteger,
    )
    statement = select(
        CANDLES.c.symbol,
        CANDLES.c.interval,
        CANDLES.c.open_time,
        missing.label("missing"),
    )
    if where is not None:
        statement = statement.where(where)
    return statement.subquery("steps")


async def find_gaps(session: AsyncSession, symbol: str, interval: str) -> list[CandleGap]:
    """The runs of missing candles between the first and last stored candle, oldest first."""
    step = interval_delta(interval)
    steps = _missing_before_each_candle(_series(symbol, interval))
    statement = (
        select(steps.c.open_time, steps.c.missing)
        .where(steps.c.missing > 0)
        .order_by(steps.c.open_time)
    )
    gaps = []
    for resumed_at, missing in await session.execute(statement):
        gaps.append(
            CandleGap(
                start=resumed_at - missing * step, end=resumed_at - step, missing_candles=missing
            )
        )
    return gaps


async def candle_series_summary(session: AsyncSession) -> list[CandleSeriesSummary]:
    """Per symbol and interval: first and last open time, rows, gaps and missing candles.

    One pass over the primary-key index in SQL, however many candles are stored.
    """
    steps = _missing_before_each_candle()
    in_gap = steps.c.missing > 0
    statement = (
        select(
            steps.c.symbol,
            steps.c.interval,
            func.min(steps.c.open_time).label("first"),
            func.max(steps.c.open_time).label("last"),
            func.count().label("rows"),
            func.count().filter(in_gap).label("gaps"),
            cast(func.coalesce(func.sum(steps.c.missing).filter(in_gap), 0), BigInteger).label(
                "missing_candles"
            ),
        )
        .group_by(steps.c.symbol, steps.c.interval)
        .order_by(steps.c.symbol, steps.c.interval)
    )
    result = await session.execute(statement)
    return [to_model(CandleSeriesSummary, row) for row in result.mappings()]
