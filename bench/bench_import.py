"""Candle import throughput vs a plain PostgreSQL COPY of the same rows (issue 2).

    uv run --frozen python bench/bench_import.py [--file PATH] [--symbol S] [--interval I]
        [--repeat N]

The symbol and interval the rows are stored as come from the file's name (BTCUSDT-1m.csv.gz)
unless given.

Uses DATABASE_URL when set, else the embedded PostgreSQL. Creates a scratch database,
runs everything there and drops it. Each case runs once per round, --repeat rounds, and
keeps its best time (the machine is shared: the best run is the least disturbed one). Measured, on
../shared/data/BTCUSDT-15m.csv.gz by default:

- platform import: `import_candle_file` into an empty `candles` table: gunzip, parse,
  validate, store by text COPY, commit, gap report (what `trading data import` runs,
  without the progress bar), then the same file again (every candle already stored);
- its parts: parse only, parse + the COPY text, store only (`upsert_candle_rows`);
- the alternative through `Candle` models and `shared.db.upsert_candles`;
- peers: PostgreSQL COPY of the same rows into an empty table: COPY FROM the file's CSV
  text (decompressed beforehand) into a table of the file's shape; asyncpg
  `copy_records_to_table` of ready-made tuples into a table like `candles`; COPY FROM the
  importer's CSV text into a table like `candles`.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import typer
from rich.console import Console
from rich.table import Table
from shared.candle_io import read_candle_file
from shared.candle_io.bulk import prepare_batch
from shared.candle_io.importer import import_candle_file
from shared.config import load_settings
from shared.db import (
    create_engine,
    create_sessionmaker,
    database_url_from_settings,
    upgrade_to_head_async,
    upsert_candles,
)
from shared.repositories.candles import CANDLE_COLUMNS, upsert_candle_rows
from shared.testing.databases import scratch_database
from sqlalchemy import text
from sqlalchemy.engine import make_url
from trading_cli.data_commands import resolve_series

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT.parent / "shared" / "data" / "BTCUSDT-15m.csv.gz"
BLOCK = 4 << 20  # the importer's default: rows go to the database a few MiB of CSV at a time

PEER_CSV_TABLE = """
CREATE TABLE copy_peer_csv (
    open_time bigint PRIMARY KEY, open numeric, high numeric, low numeric, close numeric,
    volume numeric, close_time bigint, quote_volume numeric, trades bigint,
    taker_buy_base numeric, taker_buy_quote numeric
)"""
PEER_RECORDS_TABLE = "CREATE TABLE copy_peer_records (LIKE candles INCLUDING ALL)"


@dataclass(frozen=True)
class Series:
    """The file to import and the candle series its rows are stored as."""

    path: Path
    symbol: str
    interval: str


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


async def bench_in_scratch_database(
    server: str, series: Series, csv_bytes: bytes, repeat: int
) -> list[Result]:
    """`bench` on a new, migrated database of the server's, dropped afterwards."""
    async with scratch_database(server, "bench_import") as url:
        await upgrade_to_head_async(url)
        return await bench(url, series, csv_bytes, repeat)


@dataclass
class Case:
    name: str
    note: str
    prepare: Callable[[], Awaitable[None]]
    run: Callable[[], Awaitable[int]]
    seconds: list[float] = field(default_factory=list)
    rows: int = 0


async def bench(url: str, series: Series, csv_bytes: bytes, repeat: int) -> list[Result]:
    path, symbol, interval = series.path, series.symbol, series.interval
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    candles = [
        c for batch in read_candle_file(path, interval) for c in batch.to_candles(symbol, interval)
    ]
    records = [
        (c.symbol, c.interval, c.open_time, c.open, c.high, c.low, c.close, c.volume,
         c.quote_volume, c.trades, c.closed)
        for c in candles
    ]  # fmt: skip
    prepared = [
        prepare_batch(b, symbol, interval)
        for b in read_candle_file(path, interval, block_bytes=BLOCK)
    ]
    candle_csv = b"".join(batch.csv for batch in prepared)
    connection = await asyncpg.connect(asyncpg_dsn(url))

    async def nothing() -> None:
        return None

    async def empty_candles() -> None:
        async with sessions.begin() as session:
            await session.execute(text("TRUNCATE candles"))

    async def fresh_peer_csv() -> None:
        await connection.execute("DROP TABLE IF EXISTS copy_peer_csv; " + PEER_CSV_TABLE)

    async def copy_csv() -> int:
        await connection.copy_to_table(
            "copy_peer_csv", source=io.BytesIO(csv_bytes), format="csv", header=True
        )
        return int(await connection.fetchval("SELECT count(*) FROM copy_peer_csv"))

    async def fresh_peer_records() -> None:
        await connection.execute("DROP TABLE IF EXISTS copy_peer_records; " + PEER_RECORDS_TABLE)

    async def copy_records() -> int:
        await connection.copy_records_to_table("copy_peer_records", records=records)
        return len(records)

    async def copy_candle_csv() -> int:
        await connection.copy_to_table(
            "copy_peer_records", source=io.BytesIO(candle_csv), format="csv", columns=CANDLE_COLUMNS
        )
        return len(records)

    async def platform_import() -> int:
        report = await import_candle_file(sessions, path, symbol, interval, block_bytes=BLOCK)
        assert report.new == report.rows_read, "the table was not empty"
        return report.rows_read

    async def platform_reimport() -> int:
        report = await import_candle_file(sessions, path, symbol, interval, block_bytes=BLOCK)
        assert report.new == 0, "the candles were not stored yet"
        return report.rows_read

    async def parse_only() -> int:
        return sum(len(batch) for batch in read_candle_file(path, interval, block_bytes=BLOCK))

    async def parse_and_prepare() -> int:
        return sum(
            prepare_batch(batch, symbol, interval).rows
            for batch in read_candle_file(path, interval, block_bytes=BLOCK)
        )

    async def store_only() -> int:
        async with sessions.begin() as session:
            return sum([await upsert_candle_rows(session, b.csv, b.rows) for b in prepared])

    async def parse_and_models() -> int:
        return sum(len(b.to_candles(symbol, interval)) for b in read_candle_file(path, interval))

    async def upsert_only() -> int:
        async with sessions.begin() as session:
            new = 0
            for start in range(0, len(candles), 27_000):  # about one 4 MiB block of this file
                new += await upsert_candles(session, candles[start : start + 27_000])
        return new

    cases = [
        Case(
            "peer: COPY FROM CSV (the file)",
            "the file's text, pre-decompressed, into a table of its shape",
            fresh_peer_csv,
            copy_csv,
        ),
        Case(
            "peer: asyncpg copy_records_to_table",
            "ready-made tuples (Decimal values) into a table like candles",
            fresh_peer_records,
            copy_records,
        ),
        Case(
            "peer: COPY FROM CSV (candles' shape)",
            "the CSV the importer sends, into a table like candles",
            fresh_peer_records,
            copy_candle_csv,
        ),
        Case(
            "platform: trading data import",
            "gunzip + parse + validate + store (text COPY) + gaps + commit",
            empty_candles,
            platform_import,
        ),
        Case(
            "platform: the same file again",
            "all already stored: COPY to staging + INSERT ON CONFLICT",
            nothing,
            platform_reimport,
        ),
        Case("  parse only", "gunzip + parse + validate (pyarrow + numpy)", nothing, parse_only),
        Case(
            "  parse + CSV for COPY",
            "the above + prepare_batch (Arrow CSV writer)",
            nothing,
            parse_and_prepare,
        ),
        Case(
            "  store only",
            "upsert_candle_rows of prepared batches + commit",
            empty_candles,
            store_only,
        ),
        Case(
            "alt: parse + Candle models",
            "parse only + a pydantic Candle per row",
            nothing,
            parse_and_models,
        ),
        Case(
            "alt: upsert_candles(models)",
            "shared.db.upsert_candles of ready models + commit",
            empty_candles,
            upsert_only,
        ),
    ]
    # Rounds run every case once, so a burst of load on the shared machine hits all alike.
    for _ in range(repeat):
        for case in cases:
            await case.prepare()
            started = time.perf_counter()
            case.rows = await case.run()
            case.seconds.append(time.perf_counter() - started)

    await connection.execute("DROP TABLE IF EXISTS copy_peer_csv, copy_peer_records")
    await connection.close()
    await engine.dispose()
    return [Result(case.name, min(case.seconds), case.rows, case.note) for case in cases]


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
        f"Goal (platform ≥ half of COPY's rate): platform import at {platform.rate / copy_rate:.0%}"
        f" of COPY FROM CSV, {platform.rate / records.rate:.0%} of copy_records_to_table"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--symbol", help="default: from the file name (BTCUSDT-15m.csv.gz)")
    parser.add_argument("--interval", help="default: from the file name (BTCUSDT-15m.csv.gz)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.file.is_file():
        parser.error(f"--file {str(args.file)!r} is not a file: give a Binance candle CSV (.gz)")
    try:  # the checks and the file-name inference of `trading data import`
        symbol, interval = resolve_series(args.file, args.symbol, args.interval)
    except typer.Exit as exc:  # it printed the one-line error
        raise SystemExit(exc.exit_code) from None
    series = Series(args.file, symbol, interval)
    server = database_url_from_settings(load_settings())
    csv_bytes = gzip.decompress(args.file.read_bytes())
    results = asyncio.run(bench_in_scratch_database(server, series, csv_bytes, args.repeat))
    report(results, args.file, args.repeat)


if __name__ == "__main__":
    main()
