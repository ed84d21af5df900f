"""`trading data`: Import and inspect candles."""

from __future__ import annotations

import typer

app = typer.Typer(help="Import and inspect candles.", no_args_is_help=True)
