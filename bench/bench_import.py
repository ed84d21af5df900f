"""Candle import throughput vs a plain PostgreSQL COPY of the same rows (issue 2).

    uv run --frozen python bench/bench_import.py [--file PATH] [--repeat N]

Uses DATABASE_URL when set, else the embedded PostgreSQL. Creates a scratch database,
runs everything there and drops it. Each measurement is the best of --repeat runs (the
machine is shared, so the best run is the least disturbed one). Measured, on
../shared/data/BTCUSDT-15m.csv.gz by default:

- platform import: `import_candle_file` into an empty `candles` table: gunzip, parse,
  validate, build `Candle` models, `shared.db.upsert_candles`, commit (what
  `trading data import` runs, without the progress bar);
- parse only: gunzip + parse + validate (`read_candle_file`), then also building the models;
- upsert only: `upsert_candles` of the ready-made models into an empty `candles` table;
- peers: PostgreSQL COPY of the same rows into an empty table, (a) COPY FROM the CSV text
  (server-side parsing; the file already decompressed in memory) into a table shaped like
  the file, and (b) asyncpg `copy_records_to_table` of ready-made tuples into a table like
  `candles` (same columns and primary key).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table
from shared.candle_io import read_candle_file
from shared.candle_io.bulk import prepare_batch, store_batch
from shared.candle_io.importer import import_candle_file
from shared.config import load_settings
from shared.db import (
    create_engine,
    create_sessionmaker,
    database_url_from_settings,
    upgrade_to_head,
    upsert_candles,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT.parent / "shared" / "data" / "BTCUSDT-15m.csv.gz"
SYMBOL, INTERVAL = "BTCUSDT", "15m"
BLOCK = 4 << 20  # the importer's default: rows go to the database a few MiB of CSV at a time

PEER_CSV_TABLE = """
CREATE TABLE copy_peer_csv (
    open_time bigint PRIMARY KEY, open numeric, high numeric, low numeric, close numeric,
    volume numeric, close_time bigint, quote_volume numeric, trades bigint,
    taker_buy_base numeric, taker_buy_quote numeric
)"""
PEER_RECORDS_TABLE = "CREATE TABLE copy_peer_records (LIKE candles INCLUDING ALL)"


@dataclass
class Result:
    name: str
    seconds: float
    rows: int
    note: str

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def best_of(
    repeat: int, prepare: Callable[[], Awaitable[None]], run: Callable[[], Awaitable[int]]
) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(repeat):
        await prepare()
        started = time.perf_counter()
        rows = await run()
        best = min(best, time.perf_counter() - started)
    return best, rows


async def bench(url: str, path: Path, csv_bytes: bytes, repeat: int) -> list[Result]:
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    candles = [
        c for batch in read_candle_file(path, INTERVAL) for c in batch.to_candles(SYMBOL, INTERVAL)
    ]
    records = [
        (c.symbol, c.interval, c.open_time, c.open, c.high, c.low, c.close, c.volume,
         c.quote_volume, c.trades, c.closed)
        for c in candles
    ]  # fmt: skip
    connection = await asyncpg.connect(asyncpg_dsn(url))
    results: list[Result] = []

    async def empty_candles() -> None:
        async with sessions.begin() as session:
            await session.execute(text("TRUNCATE candles"))

    async def nothing() -> None:
        return None

    # Peers first: plain COPY into empty tables.
    async def fresh_peer_csv() -> None:
        await connection.execute("DROP TABLE IF EXISTS copy_peer_csv; " + PEER_CSV_TABLE)

    async def copy_csv() -> int:
        await connection.copy_to_table(
            "copy_peer_csv", source=io.BytesIO(csv_bytes), format="csv", header=True
        )
        return int(await connection.fetchval("SELECT count(*) FROM copy_peer_csv"))

    seconds, rows = await best_of(repeat, fresh_peer_csv, copy_csv)
    results.append(
        Result(
            "peer: COPY FROM CSV text",
            seconds,
            rows,
            "server parses the text; file pre-decompressed",
        )
    )

    async def fresh_peer_records() -> None:
        await connection.execute("DROP TABLE IF EXISTS copy_peer_records; " + PEER_RECORDS_TABLE)

    async def copy_records() -> int:
        await connection.copy_records_to_table("copy_peer_records", records=records)
        return len(records)

    seconds, rows = await best_of(repeat, fresh_peer_records, copy_records)
    results.append(
        Result(
            "peer: asyncpg copy_records_to_table",
            seconds,
            rows,
            "ready-made tuples, Decimal values, candles' shape",
        )
    )

    # The platform.
    async def platform_import() -> int:
        report = await import_candle_file(sessions, path, SYMBOL, INTERVAL, block_bytes=BLOCK)
        assert report.new == report.rows_read, "the table was not empty"
        return report.rows_read

    seconds, rows = await best_of(repeat, empty_candles, platform_import)
    results.append(
        Result(
            "platform: trading data import",
            seconds,
            rows,
            "gunzip + parse + validate + store (text COPY) + commit",
        )
    )

    async def platform_reimport() -> int:
        report = await import_candle_file(sessions, path, SYMBOL, INTERVAL, block_bytes=BLOCK)
        assert report.new == 0, "the candles were not stored yet"
        return report.rows_read

    seconds, rows = await best_of(repeat, nothing, platform_reimport)
    results.append(
        Result(
            "platform: the same file again",
            seconds,
            rows,
            "every candle already stored: COPY to staging + INSERT ON CONFLICT",
        )
    )

    async def parse_only() -> int:
        return sum(len(batch) for batch in read_candle_file(path, INTERVAL, block_bytes=BLOCK))

    seconds, rows = await best_of(repeat, nothing, parse_only)
    results.append(
        Result(
            "  parse only",
            seconds,
            rows,
            "gunzip + parse + validate (pyarrow + numpy), no CSV for COPY",
        )
    )

    batches = [
        prepare_batch(b, SYMBOL, INTERVAL)
        for b in read_candle_file(path, INTERVAL, block_bytes=BLOCK)
    ]

    async def store_only() -> int:
        async with sessions.begin() as session:
            return sum([await store_batch(session, b) for b in batches])

    seconds, rows = await best_of(repeat, empty_candles, store_only)
    results.append(
        Result(
            "  store only", seconds, rows, "store_batch of prepared batches: text COPY into candles"
        )
    )

    async def parse_and_models() -> int:
        return sum(len(b.to_candles(SYMBOL, INTERVAL)) for b in read_candle_file(path, INTERVAL))

    seconds, rows = await best_of(repeat, nothing, parse_and_models)
    results.append(
        Result(
            "alt: parse + Candle models", seconds, rows, "parse only + a pydantic Candle per row"
        )
    )

    async def upsert_only() -> int:
        async with sessions.begin() as session:
            new = 0
            for start in range(0, len(candles), 27_000):  # about one 4 MiB block of this file
                new += await upsert_candles(session, candles[start : start + 27_000])
        return new

    seconds, rows = await best_of(repeat, empty_candles, upsert_only)
    results.append(
        Result(
            "alt: upsert_candles(models)",
            seconds,
            rows,
            "shared.db.upsert_candles of ready models (binary COPY to temp + INSERT)",
        )
    )

    await connection.execute("DROP TABLE IF EXISTS copy_peer_csv, copy_peer_records")
    await connection.close()
    await engine.dispose()
    return results


def report(results: list[Result], path: Path, repeat: int) -> None:
    copy_rate = results[0].rate
    table = Table(title=f"Candle import: {path.name}, best of {repeat}")
    table.add_column("path")
    table.add_column("rows", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("candles/s", justify="right")
    table.add_column("vs COPY CSV", justify="right")
    table.add_column("what is timed")
    for result in results:
        table.add_row(
            result.name,
            f"{result.rows:,}",
            f"{result.seconds:.2f}",
            f"{result.rate:,.0f}",
            f"{result.rate / copy_rate:.0%}",
            result.note,
        )
    console = Console(width=160)
    console.print(table)
    platform = next(r for r in results if r.name.startswith("platform"))
    records = results[1]
    console.print(
        f"Goal (platform ≥ half of COPY's rate): {platform.rate / copy_rate:.0%} of COPY FROM CSV, "
        f"{platform.rate / records.rate:.0%} of copy_records_to_table"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = database_url_from_settings(load_settings())
    name = f"bench_import_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(server, f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_to_head(url)
        csv_bytes = gzip.decompress(args.file.read_bytes())
        results = asyncio.run(bench(url, args.file, csv_bytes, args.repeat))
    finally:
        asyncio.run(admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    report(results, args.file, args.repeat)


if __name__ == "__main__":
    main()
