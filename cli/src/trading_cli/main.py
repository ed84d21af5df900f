"""Entry point of the `trading` command: one typer app with a sub-app per area.

Each area lives in its own `<area>_commands.py`, so the modules stay small and separate.
"""

from __future__ import annotations

import typer

from trading_cli import (
    backtest_commands,
    data_commands,
    db_commands,
    demo,
    portfolio_commands,
    run_commands,
    simulator_commands,
    status_commands,
    strategies_commands,
)

app = typer.Typer(
    name="trading",
    help="Self-hosted auto-trading platform for Binance spot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_commands.app, name="data")
app.add_typer(strategies_commands.app, name="strategies")
app.add_typer(backtest_commands.app, name="backtest")
app.add_typer(db_commands.app, name="db")
app.command("demo")(demo.demo)
app.command("portfolio")(portfolio_commands.portfolio)
app.command("simulator")(simulator_commands.simulator)
app.command("run")(run_commands.run)
app.command("status")(status_commands.status)


@app.callback()
def main() -> None:
    """Self-hosted auto-trading platform for Binance spot."""
