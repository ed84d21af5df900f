"""`--plot`: the PNG decodes back to the drawn pixels; the HTML is self-contained SVG."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backtester.engine import BacktestConfig, BacktestEngine, BacktestResult
from backtester.plot import BLUE, RED, PlotError, render_pixels, write_plot
from shared.models import Candle


def decode_png(data: bytes) -> np.ndarray:
    """Read back an 8-bit RGB PNG with filter 0 rows (what `encode_png` writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, size = 8, b"", (0, 0)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height = size
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width * 3 + 1)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


@pytest.fixture
def result(scripted: Any, make_candles: Callable[..., list[Candle]]) -> BacktestResult:
    prices = [("100", "100"), ("100", "110"), ("110", "90"), ("90", "120"), ("120", "100")]
    strategy = scripted({"quantity": "10", "buys": (2,)})
    return BacktestEngine(strategy, BacktestConfig("BTCUSDT", "1h")).run(make_candles(prices))


def test_png_holds_the_equity_line_and_the_drawdown(result: BacktestResult, tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    write_plot(result, path)
    pixels = decode_png(path.read_bytes())
    assert (pixels == render_pixels(result)).all()
    flat = pixels.reshape(-1, 3)
    assert (flat == BLUE).all(axis=1).any() and (flat == RED).all(axis=1).any()


def test_html_is_a_self_contained_svg(result: BacktestResult, tmp_path: Path) -> None:
    path = tmp_path / "chart.html"
    write_plot(result, path)
    text = path.read_text()
    assert (
        "<svg" in text
        and "<polyline" in text
        and "<script" not in text
        and "http" not in (text.replace('xmlns="http://www.w3.org/2000/svg"', ""))
    )


def test_other_suffixes_are_refused(result: BacktestResult, tmp_path: Path) -> None:
    with pytest.raises(PlotError, match=r"\.html or \.png"):
        write_plot(result, tmp_path / "chart.pdf")
