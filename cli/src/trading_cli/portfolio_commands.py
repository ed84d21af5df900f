"""`trading portfolio`: the positions and PnL the portfolio manager keeps, from the database."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from shared.models import PortfolioSnapshot, Position

from trading_cli.data_commands import settings_or_exit, with_database

if TYPE_CHECKING:
    from shared.db import Database

console = Console()


@dataclass(frozen=True)
class PortfolioView:
    """What the command shows: every position and the latest snapshot (None before one)."""

    positions: list[Position]
    snapshot: PortfolioSnapshot | None

    def as_json(self) -> dict[str, object]:
        return {
            "positions": [p.model_dump(mode="json") for p in self.positions],
            "snapshot": None if self.snapshot is None else self.snapshot.model_dump(mode="json"),
        }


async def load_view(database: Database) -> PortfolioView:
    """Read the positions and the latest snapshot."""
    from shared.db import latest_snapshot, list_positions

    async with database.sessions() as session:
        return PortfolioView(await list_positions(session), await latest_snapshot(session))


def _money(value: Decimal | None, places: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{places}f}"


def _pnl(value: Decimal) -> str:
    colour = "green" if value > 0 else "red" if value < 0 else "white"
    return f"[{colour}]{value:+,.2f}[/]"


def print_view(view: PortfolioView) -> None:
    """The positions as a table, then the portfolio totals."""
    if not view.positions:
        console.print("No positions yet: the portfolio manager has booked no fills.")
    else:
        table = Table(title="Positions")
        for column in ("Symbol", "Quantity", "Avg entry", "Last price"):
            table.add_column(column, justify="right" if column != "Symbol" else "left")
        for column in ("Unrealized PnL", "Realized PnL", "Fees (USDT)", "Updated (UTC)"):
            table.add_column(column, justify="right")
        for p in view.positions:
            table.add_row(
                p.symbol,
                f"{p.quantity.normalize():f}",
                _money(p.avg_entry_price),
                _money(p.last_price),
                _pnl(p.unrealized_pnl),
                _pnl(p.realized_pnl),
                _money(p.fees_paid, 4),
                p.updated_at.strftime("%Y-%m-%d %H:%M"),
            )
        console.print(table)
    snapshot = view.snapshot
    if snapshot is None:
        console.print("No portfolio snapshot yet.")
        return
    console.print(
        f"Snapshot {snapshot.time:%Y-%m-%d %H:%M} UTC: total {_money(snapshot.total_value)} USDT"
        f" = cash {_money(snapshot.cash)} + positions {_money(snapshot.positions_value)};"
        f" realized {_pnl(snapshot.realized_pnl)}, unrealized {_pnl(snapshot.unrealized_pnl)},"
        f" fees {_money(snapshot.fees_paid, 4)}"
    )


def portfolio(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the positions with their average entry, PnL and fees, and the latest snapshot."""
    view = with_database(settings_or_exit(), load_view)
    if as_json:
        typer.echo(json.dumps(view.as_json(), indent=2))
    else:
        print_view(view)
