"""`trading backtest`: Run strategies on history."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from backtester.data import CandleData
    from backtester.engine import BacktestEngine, BacktestResult
    from order_executor.risk import RiskLimits
    from shared.config import Settings

app = typer.Typer(help="Run strategies on history.", no_args_is_help=True)

console = Console()
errors = Console(stderr=True)

EXIT_BAD_INPUT = 1
PROGRESS_FROM_CANDLES = 100_000
"""Runs at least this long (about a second or more) show a progress bar."""


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class BacktestInputError(ValueError):
    """Bad input to `backtest run`; the message is the one line shown to the user."""


def fail(message: str) -> typer.Exit:
    errors.print(f"Error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def parse_time(text: str | None, option: str) -> datetime | None:
    """A date (YYYY-MM-DD) or ISO 8601 time; without a zone it is UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BacktestInputError(
            f"{option} {text!r} is not a date: use YYYY-MM-DD or an ISO 8601 time "
            "such as 2024-01-31T12:00Z"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_decimal(text: str | None, option: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BacktestInputError(f"{option} {text!r} is not a number") from None
    if not value.is_finite():
        raise BacktestInputError(f"{option} {text!r} is not a finite number")
    return value


def risk_limits(
    settings: Settings,
    no_risk: bool,
    max_position_size: str | None,
    stop_loss_pct: str | None,
    daily_loss_limit_pct: str | None,
) -> RiskLimits:
    """The RISK_* settings with the command line's overrides, or every rule off."""
    from order_executor.risk import RiskLimits

    if no_risk:
        return RiskLimits.disabled()
    base = RiskLimits.from_settings(settings)
    overrides = {
        "max_position_size": parse_decimal(max_position_size, "--max-position-size"),
        "stop_loss_pct": parse_decimal(stop_loss_pct, "--stop-loss-pct"),
        "daily_loss_limit_pct": parse_decimal(daily_loss_limit_pct, "--daily-loss-limit-pct"),
    }
    try:
        return RiskLimits(
            **{
                name: getattr(base, name) if value is None else value
                for name, value in overrides.items()
            }
        )
    except ValueError as exc:
        raise BacktestInputError(str(exc)) from None


def resolve_series(data: Path | None, symbol: str | None, interval: str | None) -> tuple[str, str]:
    """Options first, then the file's name (BTCUSDT-1h.csv.gz), then BTCUSDT 1h."""
    from shared.models import INTERVALS

    if data is not None:
        from shared.candle_io.importer import infer_series

        file_symbol, file_interval = infer_series(data)
        symbol = symbol or file_symbol
        interval = interval or file_interval
    symbol = (symbol or "BTCUSDT").upper()
    interval = interval or "1h"
    if interval not in INTERVALS:
        raise BacktestInputError(
            f"--interval {interval!r} is not a Binance interval: use one of {', '.join(INTERVALS)}"
        )
    return symbol, interval


def load_candles(
    settings: Settings,
    data: Path | None,
    symbol: str,
    interval: str,
    start: datetime | None,
    end: datetime | None,
    warmup: int,
) -> CandleData:
    """The candles from `--data` or from the database."""
    from backtester.data import load_db_candles, load_file_candles

    if data is not None:
        if not data.is_file():
            raise BacktestInputError(f"--data {data}: file not found")
        return load_file_candles(data, symbol, interval, start, end, warmup)

    from shared.db import open_database

    async def from_database() -> CandleData:
        database = await open_database(settings)
        try:
            async with database.sessions() as session:
                return await load_db_candles(session, symbol, interval, start, end, warmup)
        finally:
            await database.close()

    return asyncio.run(from_database())


@app.command("run")
def run(
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="Strategy name.")],
    symbol: Annotated[
        str | None, typer.Option(help="Symbol (default: from --data's name, else BTCUSDT).")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Interval (default: from --data's name, else 1h).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Candle file (CSV, .gz, .zip, Parquet); else the DB.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First candle time (UTC), YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Candles opened before this time.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Strategy parameter key=value.")
    ] = None,
    initial_balance: Annotated[str, typer.Option(help="Starting USDT.")] = "10000",
    fee: Annotated[str, typer.Option(help="Fee per side, fraction of notional.")] = "0.001",
    slippage: Annotated[str, typer.Option(help="Slippage, fraction against you.")] = "0",
    no_risk: Annotated[bool, typer.Option("--no-risk", help="Disable all risk rules.")] = False,
    max_position_size: Annotated[
        str | None, typer.Option(help="Override RISK_MAX_POSITION_SIZE (0 disables).")
    ] = None,
    stop_loss_pct: Annotated[
        str | None, typer.Option(help="Override RISK_STOP_LOSS_PCT (0 disables).")
    ] = None,
    daily_loss_limit_pct: Annotated[
        str | None, typer.Option(help="Override RISK_DAILY_LOSS_LIMIT_PCT (0 disables).")
    ] = None,
    output: Annotated[OutputFormat, typer.Option(help="table, csv (trades) or json.")] = (
        OutputFormat.table
    ),
    file: Annotated[Path | None, typer.Option(help="Write csv/json here, not stdout.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the chart to a .html or .png.")] = None,
) -> None:
    """Backtest a strategy on candles from a file or the database."""
    from backtester.data import NoCandlesError
    from backtester.engine import BacktestConfig, BacktestEngine
    from backtester.export import build_manifest, to_json, trades_to_csv
    from backtester.plot import PlotError, write_plot
    from backtester.reporter import print_report
    from shared.candle_io import CandleFileError
    from shared.config import SettingsError, load_settings
    from strategy_engine.plugin_loader import StrategyConfigError, load_strategy

    try:
        settings = load_settings()
        start_time = parse_time(start, "--start")
        end_time = parse_time(end, "--end")
        if start_time and end_time and start_time >= end_time:
            raise BacktestInputError(f"--start {start} must be before --end {end}")
        if plot is not None and plot.suffix.lower() not in (".html", ".png"):
            raise BacktestInputError(f"--plot {plot}: the file must end in .html or .png")
        the_symbol, the_interval = resolve_series(data, symbol, interval)
        instance = load_strategy(strategy, param or [], settings.strategies_extra_dir)
        config = BacktestConfig(
            symbol=the_symbol,
            interval=the_interval,
            initial_balance=_positive(initial_balance, "--initial-balance"),
            fee=parse_decimal(fee, "--fee") or Decimal(0),
            slippage=parse_decimal(slippage, "--slippage") or Decimal(0),
            risk=risk_limits(
                settings, no_risk, max_position_size, stop_loss_pct, daily_loss_limit_pct
            ),
        )
        engine = BacktestEngine(instance, config)
        with errors.status("Loading candles…"):
            candles = load_candles(
                settings,
                data,
                the_symbol,
                the_interval,
                start_time,
                end_time,
                instance.warmup_period,
            )
        result = _run_with_progress(engine, candles)
        manifest = build_manifest(result, candles.source, datetime.now(UTC))
        if plot is not None:
            write_plot(result, plot)
    except (
        BacktestInputError,
        StrategyConfigError,
        SettingsError,
        NoCandlesError,
        CandleFileError,
        PlotError,
        FileNotFoundError,
    ) as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:  # FillModel / BacktestConfig terms (--fee, --slippage)
        raise fail(str(exc)) from None

    if output is OutputFormat.table:
        print_report(result, console)
        return
    text = (
        to_json(result, manifest) if output is OutputFormat.json else trades_to_csv(result.trades)
    )
    if file is None:
        typer.echo(text, nl=False)
    else:
        file.write_text(text, encoding="utf-8")
        errors.print(f"Wrote {output.value} to {file}")


def _positive(text: str, option: str) -> Decimal:
    value = parse_decimal(text, option)
    if value is None or value <= 0:
        raise BacktestInputError(f"{option} {text!r} must be a positive number of USDT")
    return value


def _run_with_progress(engine: BacktestEngine, candles: CandleData) -> BacktestResult:
    """Run the engine; long runs show a progress bar on stderr."""
    total = len(candles.candles)
    if total < PROGRESS_FROM_CANDLES:
        return engine.run(candles.candles, candles.warmup)
    with Progress(
        TextColumn("Backtesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
    ) as progress:
        task = progress.add_task("backtest", total=total)
        return engine.run(
            candles.candles,
            candles.warmup,
            progress=lambda done: progress.update(task, completed=done),
        )
