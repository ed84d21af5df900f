"""`trading demo`: the bundled sample candles (data/sample), two ways.

- ``trading demo --live`` (what `make run` calls): the whole platform on the sample — the
  exchange simulator replays the candles and the four services trade them in dry run, each its
  own process, with the live status view: candles, then signals, orders and the portfolio
  value within a minute. It runs on a fresh database of its own (``trading_demo`` on the
  configured or embedded PostgreSQL, recreated every run) and its own bus namespace, so it
  never mixes with, or changes, the platform's real data. Ctrl-C stops it.
- ``trading demo``: import the sample into the platform's database and list what is stored.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from trading_cli.data_commands import (
    console,
    fail,
    import_file,
    print_report,
    print_summaries,
    resolve_series,
    settings_or_exit,
    summaries,
)

DEMO_DATABASE = "trading_demo"
"""The live demo's own database, dropped and created again at every start."""

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "data" / "sample"
"""data/sample in the project: real Binance candles shipped for the demo."""


def demo(
    sample_dir: Annotated[
        Path, typer.Option(help="Folder of candle files named like BTCUSDT-1m.csv.gz.")
    ] = SAMPLE_DIR,
    live: Annotated[
        bool,
        typer.Option(
            "--live/--import-only",
            help="Trade the sample live (simulator + the four services) or only import it.",
        ),
    ] = False,
    speed: Annotated[str, typer.Option(help="With --live: replay speed, times real time.")] = "600",
    duration: Annotated[
        float | None, typer.Option(help="With --live: stop after this many seconds.")
    ] = None,
    port_base: Annotated[
        int | None, typer.Option(help="With --live: health ports BASE+1.. (default 8081..).")
    ] = None,
    sim_port: Annotated[int, typer.Option(help="With --live: the simulator's port.")] = 8900,
) -> None:
    """The bundled sample candles (real Binance data): import them, or --live trade them."""
    files = sorted(path for path in sample_dir.glob("*-*.*") if path.name != "README.md")
    if not files:
        raise fail(f"no sample candle files in {sample_dir}: run from a checkout of the project")
    settings = settings_or_exit()
    if live:
        from trading_cli.run_commands import require_simulator_speed

        require_simulator_speed(speed)  # before the demo database is made afresh
        _live_demo(files, speed=speed, duration=duration, port_base=port_base, sim_port=sim_port)
        return
    console.print(f"Importing {len(files)} sample files from {sample_dir}", highlight=False)
    for file in files:
        symbol, interval = resolve_series(file, None, None)
        print_report(import_file(settings, file, symbol, interval))
    print_summaries(summaries(settings))


def _live_demo(
    files: list[Path], *, speed: str, duration: float | None, port_base: int | None, sim_port: int
) -> None:
    from shared.embedded import EmbeddedServerError, resolve_database_url

    from trading_cli.run_commands import RunOptions, run_platform
    from trading_cli.service_catalog import service_specs

    settings = settings_or_exit()
    try:
        server_url = resolve_database_url(settings)
        database_url = asyncio.run(recreate_database(server_url, DEMO_DATABASE))
    except EmbeddedServerError as exc:
        raise fail(str(exc), 1) from None
    except Exception as exc:
        raise fail(f"cannot create the demo database: {type(exc).__name__}: {exc}", 1) from None
    console.print(
        f"Demo: replaying {', '.join(f.name for f in files)} at {speed}x through the four "
        f"services in dry run, on the fresh database {DEMO_DATABASE}. Ctrl-C stops it.",
        highlight=False,
    )
    options = RunOptions(
        services=service_specs(None, port_base),
        data=files,
        speed=speed,
        history=300,
        sim_port=sim_port,
        env={
            # Readable warnings only (the table shows the flow), unless the user asks for more.
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            "DATABASE_URL": database_url,
            "BUS_NAMESPACE": f"demo-{int(time.time())}",
            "DRY_RUN": "true",
        },
        live_view=console.is_terminal,
        duration=duration,
    )
    status = asyncio.run(run_platform(options))
    if status:
        raise typer.Exit(status)


async def recreate_database(server_url: str, name: str) -> str:
    """Drop (when present) and create database ``name`` on ``server_url``'s server; its URL."""
    from shared.db import create_engine
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    engine = create_engine(server_url)
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)
