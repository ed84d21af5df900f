"""`trading strategies`: List strategies and their parameters."""

from __future__ import annotations

import typer

app = typer.Typer(help="List strategies and their parameters.", no_args_is_help=True)
