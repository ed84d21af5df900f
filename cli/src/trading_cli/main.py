"""Entry point of the `trading` command: one typer app with a sub-app per area."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="trading",
    help="Self-hosted auto-trading platform for Binance spot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Self-hosted auto-trading platform for Binance spot."""
