"""`trading demo` (what `make run` calls): import the bundled sample candles and list them."""

from __future__ import annotations

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

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "data" / "sample"
"""data/sample in the project: real Binance candles shipped for the demo."""


def demo(
    sample_dir: Annotated[
        Path, typer.Option(help="Folder of candle files named like BTCUSDT-1m.csv.gz.")
    ] = SAMPLE_DIR,
) -> None:
    """Import the bundled sample candles (real Binance data) and show what is stored."""
    files = sorted(path for path in sample_dir.glob("*-*.*") if path.name != "README.md")
    if not files:
        raise fail(f"no sample candle files in {sample_dir}: run from a checkout of the project")
    settings = settings_or_exit()
    console.print(f"Importing {len(files)} sample files from {sample_dir}", highlight=False)
    for file in files:
        symbol, interval = resolve_series(file, None, None)
        print_report(import_file(settings, file, symbol, interval))
    print_summaries(summaries(settings))
