"""`--plot FILE`: the equity and drawdown chart as a self-contained .html (inline SVG) or .png."""

from __future__ import annotations

import html
from pathlib import Path

from backtester.chart import downsample, drawdown_series
from backtester.engine import BacktestResult

SVG_WIDTH = 1000
EQUITY_HEIGHT = 320
DRAWDOWN_HEIGHT = 140
MARGIN = 50
MAX_POINTS = 2000
PLOT_SUFFIXES = (".html", ".png")


class PlotError(ValueError):
    """The plot file cannot be written as asked."""


def _polyline(values: list[float], top: float, height: float, low: float, high: float) -> str:
    span = (high - low) or 1.0
    step = (SVG_WIDTH - 2 * MARGIN) / max(len(values) - 1, 1)
    return " ".join(
        f"{MARGIN + i * step:.1f},{top + (high - v) / span * height:.1f}"
        for i, v in enumerate(values)
    )


def svg_chart(result: BacktestResult) -> str:
    """An SVG with the equity curve above and the drawdown below."""
    equity = downsample([float(e) for _, e in result.equity_curve], MAX_POINTS)
    drawdown = downsample(
        drawdown_series(result.config.initial_balance, result.equity_curve),
        MAX_POINTS,
        worst=True,
    )
    low, high = min(equity), max(equity)
    worst = max(drawdown) or 1.0
    dd_top = MARGIN + EQUITY_HEIGHT + MARGIN
    total_height = dd_top + DRAWDOWN_HEIGHT + MARGIN
    first, last = result.equity_curve[0][0], result.equity_curve[-1][0]
    dd_points = _polyline([-d for d in drawdown], dd_top, DRAWDOWN_HEIGHT, -worst, 0.0)
    right = SVG_WIDTH - MARGIN
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" \
height="{total_height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{MARGIN}" y="{MARGIN - 20}">Equity (USDT): {low:,.2f} … {high:,.2f}</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" points="{
        _polyline(equity, MARGIN, EQUITY_HEIGHT, low, high)
    }"/>
<text x="{MARGIN}" y="{dd_top - 20}">Drawdown: 0 … {worst * 100:.2f}%</text>
<polygon fill="#d62728" fill-opacity="0.4" stroke="#d62728" points="{MARGIN},{dd_top} {dd_points} {
        right
    },{dd_top}"/>
<text x="{MARGIN}" y="{total_height - 15}">{first:%Y-%m-%d %H:%M} UTC</text>
<text x="{right}" y="{total_height - 15}" text-anchor="end">{last:%Y-%m-%d %H:%M} UTC</text>
</svg>"""


def write_html(result: BacktestResult, path: Path) -> None:
    title = html.escape(f"{result.strategy} {result.config.symbol} {result.config.interval}")
    path.write_text(
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head>\n"
        f"<body><h2>{title}</h2>\n{svg_chart(result)}\n</body></html>\n",
        encoding="utf-8",
    )


def write_png(result: BacktestResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file only
    import matplotlib.pyplot as plt

    times = [t for t, _ in result.equity_curve]
    equity = [float(e) for _, e in result.equity_curve]
    drawdown = [
        -d * 100 for d in drawdown_series(result.config.initial_balance, result.equity_curve)
    ]
    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 6), gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(times, equity, color="#1f77b4", linewidth=1)
    top.set_ylabel("Equity (USDT)")
    top.set_title(f"{result.strategy} {result.config.symbol} {result.config.interval}")
    bottom.fill_between(times, drawdown, 0, color="#d62728", alpha=0.4)
    bottom.set_ylabel("Drawdown (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_plot(result: BacktestResult, path: Path) -> None:
    """Write the chart to `path`, .html or .png by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise PlotError(f"--plot {path}: the file must end in .html or .png")
    if not path.parent.is_dir():
        raise PlotError(f"--plot {path}: folder {path.parent} does not exist")
    if suffix == ".html":
        write_html(result, path)
    else:
        write_png(result, path)
