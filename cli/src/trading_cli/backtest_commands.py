"""`trading backtest`: Run strategies on history."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run strategies on history.", no_args_is_help=True)
