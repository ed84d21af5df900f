"""`trading simulator`: run the Binance-protocol exchange simulator on a candle file.

    trading simulator --data BTCUSDT-1m.csv.gz --speed 60 --port 8900 --api-key KEY:SECRET

Point the platform at it with BINANCE_BASE_URL=http://127.0.0.1:8900 and
BINANCE_WS_URL=ws://127.0.0.1:8900. The control API is under /_sim/ (see
`exchange_simulator.control`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared import event_loop
from trading_cli.data_commands import fail, resolve_series, settings_or_exit, with_database

if TYPE_CHECKING:
    from exchange_simulator.app import Simulator
    from shared.models import Candle

console = Console()


def parse_api_keys(values: list[str]) -> dict[str, str]:
    """KEY:SECRET pairs, or exit naming the malformed one (without echoing the secret)."""
    pairs: dict[str, str] = {}
    for index, value in enumerate(values, start=1):
        key, sep, secret = value.partition(":")
        if not sep or not key or not secret:
            raise fail(f"--api-key number {index} must look like KEY:SECRET (both non-empty)")
        pairs[key] = secret
    return pairs


def parse_balances(values: list[str]) -> dict[str, Decimal]:
    balances: dict[str, Decimal] = {}
    for value in values:
        asset, sep, amount = value.partition("=")
        try:
            parsed = Decimal(amount)
        except InvalidOperation:
            parsed = Decimal(-1)
        if not sep or not asset.isalnum() or not parsed.is_finite() or parsed < 0:
            raise fail(f"--balance {value!r} must look like ASSET=AMOUNT, e.g. USDT=10000")
        balances[asset.upper()] = parsed
    return balances


def load_series(
    files: list[Path], symbols: list[str], interval: str | None
) -> dict[str, list[Candle]]:
    """Every file's candles, with a progress bar; symbols pair with files in order."""
    from exchange_simulator.replay import load_candles
    from shared.candle_io import CandleFileError

    if symbols and len(symbols) != len(files):
        raise fail(
            f"{len(symbols)} --symbol for {len(files)} --data: give one --symbol per file "
            "(in the same order) or none to take them from the file names"
        )
    series: dict[str, list[Candle]] = {}
    intervals = set()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("Loading candles", total=len(files))
        for index, file in enumerate(files):
            if not file.is_file():
                raise fail(f"no candle file at {file}: pass an existing file with --data")
            symbol, file_interval = resolve_series(
                file, symbols[index] if symbols else None, interval
            )
            intervals.add(file_interval)
            progress.update(task, description=f"Loading {file.name}")
            try:
                series[symbol] = load_candles(file, symbol, file_interval)
            except CandleFileError as exc:
                raise fail(str(exc)) from None
            if not series[symbol]:
                raise fail(f"{file} holds no candles")
            progress.advance(task)
    if len(intervals) > 1:
        raise fail(
            f"the files have different intervals ({', '.join(sorted(intervals))}): "
            "the simulator replays one interval; pass files of one interval"
        )
    return series


def load_from_database(
    symbols: list[str], interval: str | None, start: datetime | None, end: datetime | None
) -> dict[str, list[Candle]]:
    """The stored candles of each symbol in [start, end) (naive times are UTC)."""
    from shared.db import Database, candles_between

    if not symbols or interval is None:
        raise fail(
            "--from-db needs --symbol (one or more) and --interval, "
            "e.g. --symbol BTCUSDT --interval 1m"
        )
    start = start.replace(tzinfo=UTC) if start and start.tzinfo is None else start
    end = end.replace(tzinfo=UTC) if end and end.tzinfo is None else end

    async def read(database: Database) -> dict[str, list[Candle]]:
        async with database.sessions() as session:
            return {
                s.upper(): await candles_between(session, s.upper(), interval, start, end)
                for s in symbols
            }

    series = with_database(settings_or_exit(), read)
    empty = [s for s, candles in series.items() if not candles]
    if empty:
        raise fail(
            f"the database holds no {interval} candles of {', '.join(empty)} in that range: "
            "import some with `trading data import`"
        )
    return series


def simulator(
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Candle file (CSV, gzip, zip, Parquet); repeatable."),
    ] = None,
    from_db: Annotated[
        bool, typer.Option("--from-db", help="Replay the database's candles instead of files.")
    ] = False,
    start: Annotated[
        datetime | None, typer.Option(help="With --from-db: first open time (UTC).")
    ] = None,
    end: Annotated[
        datetime | None, typer.Option(help="With --from-db: open times before this (UTC).")
    ] = None,
    symbol: Annotated[
        list[str] | None,
        typer.Option(help="Symbol of each --data file, in order (default: from the file name)."),
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Kline interval (default: from the file name).")
    ] = None,
    speed: Annotated[
        str,
        typer.Option(
            help="Times real time (60: a 1m candle a second), 'max' (as fast as the "
            "WebSocket clients keep up) or 'manual' (only POST /_sim/advance)."
        ),
    ] = "60",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8900,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="KEY:SECRET accepted by the simulator; repeatable "
            "(default: BINANCE_API_KEY/BINANCE_API_SECRET, which keep the pair out of "
            "the command line that every local user can read).",
        ),
    ] = None,
    balance: Annotated[
        list[str] | None,
        typer.Option(help="Starting balance of every account, ASSET=AMOUNT; repeatable."),
    ] = None,
    history: Annotated[
        int, typer.Option(min=0, help="Candles already closed at start (served by REST).")
    ] = 1000,
) -> None:
    """Run a local exchange speaking Binance's spot REST and kline WebSocket protocol."""
    from exchange_simulator.accounts import DEFAULT_BALANCES
    from exchange_simulator.app import Simulator, parse_speed, serve_until_stopped
    from exchange_simulator.core import SimulatorSetup

    try:
        pace = parse_speed(speed)
    except ValueError as exc:
        raise fail(str(exc)) from None
    keys = parse_api_keys(api_key or [])
    if not keys:
        settings = settings_or_exit()
        key = settings.binance_api_key.get_secret_value()
        secret = settings.binance_api_secret.get_secret_value()
        if not key or not secret:
            raise fail(
                "no API key to accept: pass --api-key KEY:SECRET or set "
                "BINANCE_API_KEY and BINANCE_API_SECRET"
            )
        keys = {key: secret}
    balances = parse_balances(balance or []) or dict(DEFAULT_BALANCES)
    if from_db:
        series = load_from_database(symbol or [], interval, start, end)
    elif data:
        series = load_series(data, symbol or [], interval)
    else:
        raise fail("nothing to replay: pass --data FILE (repeatable) or --from-db")
    first = next(iter(series.values()))[0]
    setup = SimulatorSetup(
        candles=series,
        interval=first.interval,
        api_keys=keys,
        history=history,
        balances=balances,
    )
    try:
        sim = Simulator(setup, pace)
    except ValueError as exc:
        raise fail(str(exc)) from None

    def announce(running: Simulator) -> None:
        replay = running.core.replay
        console.print(
            f"Exchange simulator on {running.base_url} (WebSocket {running.ws_url}): "
            f"{', '.join(replay.symbols)} {replay.interval}, {len(replay.timeline)} candles, "
            f"{replay.position} already closed, speed {pace}, {len(keys)} API key(s). "
            "Ctrl-C stops it.",
            markup=False,
            highlight=False,
        )

    try:
        event_loop.run(serve_until_stopped(sim, host, port, announce))
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
