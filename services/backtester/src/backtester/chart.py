"""Equity and drawdown series for charts, and a small block-character chart for terminals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from backtester.equity import EquityPoint, equity_values

BLOCKS = " ▁▂▃▄▅▆▇█"


def drawdown_series(initial_balance: Decimal, curve: Sequence[EquityPoint]) -> list[float]:
    """(peak − equity) / peak after each candle, as in `metrics.max_drawdown`."""
    peak = initial_balance
    out = []
    for equity in equity_values(curve):
        peak = max(peak, equity)
        out.append(float((peak - equity) / peak) if peak > 0 else 0.0)
    return out


def downsample(values: Sequence[float], width: int, *, worst: bool = False) -> list[float]:
    """At most `width` values: each bucket's last value, or its largest with `worst`."""
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        bucket = values[i * len(values) // width : (i + 1) * len(values) // width]
        out.append(max(bucket) if worst else bucket[-1])
    return out


def block_chart(values: Sequence[float], height: int, *, invert: bool = False) -> list[str]:
    """Rows of a column chart (top row first) with eighth-block resolution.

    With `invert` the bars hang from the top (for drawdowns, which grow downwards).
    """
    if not values:
        return []
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    levels = [round((v - low) / span * height * 8) for v in values]
    if invert:
        levels = [round(v / (high or 1.0) * height * 8) for v in values]
    rows = []
    for row in range(height):
        floor = (height - 1 - row) * 8 if not invert else row * 8
        cells = []
        for level in levels:
            fill = min(max(level - floor, 0), 8)
            cells.append("█" if invert and fill else BLOCKS[fill])
        rows.append("".join(cells))
    return rows


def time_axis(times: Sequence[datetime], width: int) -> str:
    """The first and last dates under a chart of `width` columns."""
    if not times:
        return ""
    first, last = times[0].strftime("%Y-%m-%d"), times[-1].strftime("%Y-%m-%d")
    gap = max(width - len(first) - len(last), 1)
    return first + " " * gap + last
