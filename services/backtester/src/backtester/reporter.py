"""The terminal report of a backtest (rich): summary, monthly grid, best/worst trades, chart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from backtester.chart import block_chart, downsample, drawdown_series, time_axis
from backtester.engine import BacktestResult
from backtester.metrics import DEFINITIONS
from backtester.simulator import TradeRecord

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CENT = Decimal("0.01")
TOP_TRADES = 5
CHART_HEIGHT = 8


def money(value: Decimal) -> str:
    return f"{value.quantize(CENT, ROUND_HALF_EVEN):,}"


def ratio(value: float, digits: int = 2) -> str:
    """A ratio for a table: ∞ and −∞ spelled out."""
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def percent(value: float) -> str:
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value * 100:.2f}%"


def duration(value: timedelta) -> str:
    days, seconds = value.days, value.seconds
    hours, minutes = seconds // 3600, seconds % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m"


def signed_style(value: float | Decimal) -> str:
    return "green" if value > 0 else "red" if value < 0 else ""


def summary_table(result: BacktestResult) -> Table:
    m = result.metrics
    counts = result.counts
    table = Table(title=f"{result.strategy} on {result.config.symbol} {result.config.interval}")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    rows: list[tuple[str, str, str]] = [
        ("Period", f"{result.start:%Y-%m-%d %H:%M} → {result.end:%Y-%m-%d %H:%M} UTC", ""),
        ("Candles", f"{result.candles:,} (+{result.warmup_candles:,} warm-up)", ""),
        ("Initial balance", money(result.config.initial_balance), ""),
        ("Final equity", money(result.final_equity), signed_style(m.total_return)),
        ("Total return", percent(m.total_return), signed_style(m.total_return)),
        ("Annualized return", percent(m.annualized_return), signed_style(m.annualized_return)),
        ("Sharpe ratio", ratio(m.sharpe_ratio), ""),
        ("Sortino ratio", ratio(m.sortino_ratio), ""),
        ("Calmar ratio", ratio(m.calmar_ratio), ""),
        ("Max drawdown", percent(m.max_drawdown), "red" if m.max_drawdown else ""),
        ("Max drawdown duration", duration(m.max_drawdown_duration), ""),
        ("Closed trades", f"{m.total_trades} ({m.winning_trades} won, {m.losing_trades} lost)", ""),
        ("Win rate", percent(m.win_rate), ""),
        ("Profit factor", ratio(m.profit_factor), ""),
        ("Avg win / avg loss", f"{money(m.avg_win)} / {money(m.avg_loss)}", ""),
        ("Largest win / loss", f"{money(m.largest_win)} / {money(m.largest_loss)}", ""),
        ("Expectancy", money(m.expectancy), signed_style(m.expectancy)),
        ("SQN", ratio(m.sqn), ""),
        ("Avg holding period", duration(m.avg_holding_period), ""),
        ("Fees paid", money(result.fees_paid), ""),
    ]
    position = result.open_position
    if position is not None:
        rows.append(
            (
                "Open at the end",
                f"{position.quantity} @ {money(position.avg_entry_price)}, "
                f"unrealized {money(position.unrealized_pnl)}",
                signed_style(position.unrealized_pnl),
            )
        )
    notes = []
    if counts.buys_reduced_by_cash or counts.buys_skipped_no_cash:
        notes.append(
            f"{counts.buys_reduced_by_cash} BUY reduced / "
            f"{counts.buys_skipped_no_cash} skipped for cash"
        )
    if counts.risk_rejections:
        notes.append("risk: " + ", ".join(f"{k} {v}" for k, v in counts.risk_rejections.items()))
    if counts.stop_losses:
        notes.append(f"{counts.stop_losses} stop losses")
    if notes:
        rows.append(("Orders", "; ".join(notes), ""))
    for name, value, style in rows:
        table.add_row(name, Text(value, style=style))
    return table


def monthly_table(monthly: dict[str, float]) -> Table:
    """Years down, months across, each cell coloured by the sign of its return."""
    # Narrow on purpose: 12 months and a total must fit an 80-column terminal.
    table = Table(
        title="Monthly returns (%)",
        box=box.SIMPLE_HEAD,
        padding=(0, 0, 0, 1),
        pad_edge=False,
        show_edge=False,
    )
    table.add_column("Year", no_wrap=True)
    for name in (*MONTHS, "All"):
        table.add_column(name, justify="right", no_wrap=True)
    years: dict[int, dict[int, float]] = {}
    for key, value in monthly.items():
        year, month = int(key[:4]), int(key[5:7])
        years.setdefault(year, {})[month] = value
    for year, months in sorted(years.items()):
        cells: list[Text | str] = [str(year)]
        compound = 1.0
        for month in range(1, 13):
            if month in months:
                value = months[month]
                compound *= 1 + value
                cells.append(Text(f"{value * 100:.1f}", style=signed_style(value)))
            else:
                cells.append("")
        cells.append(Text(f"{(compound - 1) * 100:.1f}", style=signed_style(compound - 1)))
        table.add_row(*cells)
    return table


def trades_table(title: str, trades: Sequence[TradeRecord]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("Entry (UTC)", "Exit (UTC)", "Qty", "Entry", "Exit", "PnL", "PnL %"):
        table.add_column(column, justify="right", no_wrap=True)
    for t in trades:
        style = signed_style(t.pnl)
        table.add_row(
            f"{t.entry_time:%y-%m-%d %H:%M}",
            f"{t.exit_time:%y-%m-%d %H:%M}",
            str(t.quantity.normalize()),
            f"{t.entry_price:.2f}",
            f"{t.exit_price:.2f}",
            Text(money(t.pnl), style=style),
            Text(f"{t.pnl_pct * 100:.2f}%", style=style),
        )
    return table


def best_and_worst(trades: Sequence[TradeRecord]) -> tuple[list[TradeRecord], list[TradeRecord]]:
    """The top 5 by pnl, and the bottom 5 (worst first); ties keep time order."""
    ranked = sorted(trades, key=lambda t: t.pnl, reverse=True)
    worst = sorted(trades, key=lambda t: t.pnl)
    return ranked[:TOP_TRADES], worst[:TOP_TRADES]


def chart_panel(result: BacktestResult, width: int) -> Panel:
    """Equity (top) and drawdown (below, hanging down) as block charts."""
    width = max(width - 4, 10)
    equity = [float(e) for e in result.equity_curve.equities]
    drawdown = drawdown_series(result.config.initial_balance, result.equity_curve)
    eq_rows = block_chart(downsample(equity, width), CHART_HEIGHT)
    dd_rows = block_chart(downsample(drawdown, width, worst=True), CHART_HEIGHT // 2, invert=True)
    curve = result.equity_curve
    times = [curve.time(0), curve.time(-1)] if len(curve) else []
    lines: list[RenderableType] = [
        Text(f"equity {min(equity):,.2f} … {max(equity):,.2f} USDT", style="bold"),
        *(Text(row, style="cyan") for row in eq_rows),
        Text(f"drawdown 0 … {max(drawdown) * 100:.2f}%", style="bold"),
        *(Text(row, style="red") for row in dd_rows),
        Text(time_axis(times, min(width, len(eq_rows[0]) if eq_rows else width))),
    ]
    return Panel(Group(*lines), title="Equity and drawdown")


def print_report(result: BacktestResult, console: Console) -> None:
    """The whole report: summary, monthly grid, best and worst trades, chart, definitions."""
    console.print(summary_table(result))
    if result.metrics.monthly_returns:
        console.print(monthly_table(result.metrics.monthly_returns))
    best, worst = best_and_worst(result.trades)
    if best:
        console.print(trades_table(f"Top {len(best)} trades", best))
        console.print(trades_table(f"Worst {len(worst)} trades", worst))
    else:
        console.print("No closed trades.")
    console.print(chart_panel(result, console.width))
    console.print(Text("Definitions: " + " · ".join(DEFINITIONS), style="dim"))
