"""`trading data`: import candle files and list what the database holds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from shared.config import Settings, SettingsError, load_settings
from shared.models import INTERVALS, CandleSeriesSummary

if TYPE_CHECKING:
    # SQLAlchemy, Alembic and pyarrow take seconds to import: only the commands that use
    # them pay for it, not `trading --help`.
    from shared.candle_io.importer import ImportReport
    from shared.db import Database

app = typer.Typer(help="Import and inspect candles.", no_args_is_help=True)

console = Console()
errors = Console(stderr=True)

T = TypeVar("T")

EXIT_BAD_INPUT = 1
EXIT_BAD_SETTING = 2
SHOWN_GAPS = 10


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one error line to stderr; the caller raises the returned Exit."""
    errors.print(f"Error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    """The settings, or exit 2 with the one-line message naming the bad variable."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise fail(str(exc), EXIT_BAD_SETTING) from None


def with_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Open the database (schema at head), run `work`, close it; connection errors exit 1."""

    from shared.db import DatabaseConnectionError, open_database
    from shared.embedded import EmbeddedServerError

    async def run() -> T:
        database = await open_database(settings)
        try:
            return await work(database)
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except (DatabaseConnectionError, EmbeddedServerError) as exc:
        raise fail(str(exc)) from None


def resolve_series(file: Path, symbol: str | None, interval: str | None) -> tuple[str, str]:
    """Symbol and interval from the options, else from a name like BTCUSDT-1m.csv.gz."""
    from shared.candle_io.importer import infer_series

    named_symbol, named_interval = infer_series(file)
    symbol = symbol or named_symbol
    interval = interval or named_interval
    if symbol is None:
        raise fail(
            f"cannot tell the symbol from the file name {file.name!r}: "
            "pass it with --symbol, e.g. --symbol BTCUSDT"
        )
    if interval is None:
        raise fail(
            f"cannot tell the interval from the file name {file.name!r}: "
            "pass it with --interval, e.g. --interval 1m"
        )
    if interval not in INTERVALS:
        raise fail(f"unknown interval {interval!r}: expected one of {', '.join(INTERVALS)}")
    symbol = symbol.upper()
    if not symbol.isalnum():
        raise fail(f"symbol {symbol!r} must be letters and digits only, e.g. BTCUSDT")
    return symbol, interval


@contextmanager
def progress_bar(file: Path, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar over the file's bytes (CSV) or rows (Parquet)."""
    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        amount,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"Importing {file.name}", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def print_report(report: ImportReport) -> None:
    """The import's summary: rows read, new, already present, and the series' gaps."""
    console.print(
        f"[bold]{report.symbol} {report.interval}[/] from {report.path.name}: "
        f"{report.rows_read:,} rows read, {report.new:,} new, "
        f"{report.already_present:,} already present",
        highlight=False,
        soft_wrap=True,
    )
    if not report.gaps:
        console.print("Gaps in the stored series: none", highlight=False)
        return
    console.print(
        f"Gaps in the stored series: {len(report.gaps)} "
        f"({report.missing_candles:,} missing candles)",
        highlight=False,
        soft_wrap=True,
    )
    for gap in report.gaps[:SHOWN_GAPS]:
        console.print(
            f"  {_when(gap.start)} → {_when(gap.end)} UTC: {gap.missing_candles:,} missing",
            highlight=False,
            soft_wrap=True,
        )
    if len(report.gaps) > SHOWN_GAPS:
        console.print(f"  … and {len(report.gaps) - SHOWN_GAPS} more (see `trading data list`)")


def import_file(
    settings: Settings, file: Path, symbol: str, interval: str, *, show_progress: bool = True
) -> ImportReport:
    """Import one file with a progress bar; a bad file exits 1 with its one-line error."""
    from shared.candle_io import CandleFileError, CandleReader, detect_source
    from shared.candle_io.importer import import_candle_file

    try:
        unit = CandleReader(detect_source(file)).unit
    except CandleFileError as exc:
        raise fail(str(exc)) from None

    async def work(database: Database) -> ImportReport:
        if not show_progress:
            return await import_candle_file(database.sessions, file, symbol, interval)
        with progress_bar(file, unit) as advance:
            return await import_candle_file(
                database.sessions, file, symbol, interval, progress=advance
            )

    try:
        return with_database(settings, work)
    except CandleFileError as exc:
        raise fail(f"{exc} (nothing of the file was stored)") from None


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV (plain, .gz or .zip) or Parquet file.")],
    symbol: Annotated[
        str | None, typer.Option(help="e.g. BTCUSDT; default: from a file name like BTCUSDT-1m.csv")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="e.g. 1m, 15m, 1h; default: from the file name")
    ] = None,
) -> None:
    """Import candles from a file; a bad row stops the import and nothing of the file is kept.

    Reads this project's CSV (header open_time,open,high,low,close,volume,...), Binance's
    raw 12-column kline CSV (ms or µs times), gzip/zip or plain, and Parquet. Candles already
    stored are left unchanged, so importing a file twice is harmless.
    """
    symbol, interval = resolve_series(file, symbol, interval)
    settings = settings_or_exit()
    print_report(import_file(settings, file, symbol, interval))


def summaries(settings: Settings) -> list[CandleSeriesSummary]:
    """Per symbol and interval: what the database holds."""
    from shared.db import candle_series_summary

    async def work(database: Database) -> list[CandleSeriesSummary]:
        async with database.sessions() as session:
            return await candle_series_summary(session)

    return with_database(settings, work)


def print_summaries(rows: list[CandleSeriesSummary]) -> None:
    """The `data list` table."""
    if not rows:
        console.print("No candles stored yet: import some with `trading data import FILE`.")
        return
    # Compact enough for an 80-column terminal without cutting a date.
    table = Table(title="Stored candles", box=None, pad_edge=False, header_style="bold underline")
    for name in ("symbol", "interval", "first (UTC)", "last (UTC)"):
        table.add_column(name, no_wrap=True)
    for name in ("rows", "gaps", "missing"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row.symbol,
            row.interval,
            _when(row.first),
            _when(row.last),
            f"{row.rows:,}",
            f"{row.gaps:,}",
            f"{row.missing_candles:,}",
        )
    console.print(table)


@app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show per symbol and interval: first and last candle, rows, and gaps (missing candles)."""
    rows = summaries(settings_or_exit())
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
    else:
        print_summaries(rows)
