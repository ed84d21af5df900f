"""`--plot FILE`: the equity and drawdown chart as a self-contained .html (inline SVG) or .png."""

from __future__ import annotations

import html
import struct
import zlib
from pathlib import Path

import numpy as np

from backtester.chart import downsample, drawdown_series
from backtester.engine import BacktestResult

SVG_WIDTH = 1000
EQUITY_HEIGHT = 320
DRAWDOWN_HEIGHT = 140
MARGIN = 50
MAX_POINTS = 2000
PLOT_SUFFIXES = (".html", ".png")
BLUE = (31, 119, 180)
RED = (214, 39, 40)
GREY = (160, 160, 160)


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
    equity = downsample([float(e) for e in result.equity_curve.equities], MAX_POINTS)
    drawdown = downsample(
        drawdown_series(result.config.initial_balance, result.equity_curve),
        MAX_POINTS,
        worst=True,
    )
    low, high = min(equity), max(equity)
    worst = max(drawdown) or 1.0
    dd_top = MARGIN + EQUITY_HEIGHT + MARGIN
    total_height = dd_top + DRAWDOWN_HEIGHT + MARGIN
    first, last = result.equity_curve.time(0), result.equity_curve.time(-1)
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
    """The same chart as a PNG, drawn with numpy and encoded with zlib (no plotting library).

    It carries no text (there is no font renderer here): the HTML form has the labels.
    """
    path.write_bytes(encode_png(render_pixels(result)))


def render_pixels(result: BacktestResult) -> np.ndarray:
    """An RGB image: the equity line above, the drawdown area hanging below."""
    width, height = SVG_WIDTH, MARGIN + EQUITY_HEIGHT + MARGIN + DRAWDOWN_HEIGHT + MARGIN
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    plot_width = width - 2 * MARGIN
    equity = downsample([float(e) for e in result.equity_curve.equities], plot_width)
    drawdown = downsample(
        drawdown_series(result.config.initial_balance, result.equity_curve),
        plot_width,
        worst=True,
    )
    low, high = min(equity), max(equity)
    span = (high - low) or 1.0
    step = plot_width / max(len(equity) - 1, 1)
    rows = [MARGIN + round((high - v) / span * EQUITY_HEIGHT) for v in equity]
    image[MARGIN + EQUITY_HEIGHT, MARGIN : width - MARGIN] = GREY
    for i in range(1, len(rows)):
        x0, x1 = MARGIN + round((i - 1) * step), MARGIN + round(i * step)
        top, bottom = sorted((rows[i - 1], rows[i]))
        image[top : bottom + 2, x0 : max(x1, x0 + 1) + 1] = BLUE
    dd_top = MARGIN + EQUITY_HEIGHT + MARGIN
    worst = max(drawdown) or 1.0
    image[dd_top, MARGIN : width - MARGIN] = GREY
    for i, value in enumerate(drawdown):
        x0, x1 = MARGIN + round(i * step), MARGIN + round((i + 1) * step)
        depth = round(value / worst * DRAWDOWN_HEIGHT)
        image[dd_top : dd_top + depth + 1, x0 : max(x1, x0 + 1)] = RED
    return image


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of `image` (height × width × 3, uint8)."""
    height, width, _ = image.shape
    raw = np.zeros((height, width * 3 + 1), dtype=np.uint8)  # filter byte 0 on every row
    raw[:, 1:] = image.reshape(height, width * 3)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


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
