"""EquityCurve: the same points, and metrics, as the list of (time, equity) it stands for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from backtester.equity import EquityCurve
from backtester.metrics import compute_metrics
from shared.models import Candle

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candles(count: int) -> list[Candle]:
    return [
        Candle(
            symbol="BTCUSDT",
            interval="6h",
            open_time=T0 + i * timedelta(hours=6),
            open=Decimal(100),
            high=Decimal(100),
            low=Decimal(100),
            close=Decimal(100),
            volume=Decimal(1),
        )
        for i in range(count)
    ]


def test_an_equity_curve_reads_as_its_points() -> None:
    bars = candles(9)
    equities = [Decimal(v) for v in ("100", "104", "97", "99", "105", "101", "90", "95", "96")]
    points = [(bar.open_time, equity) for bar, equity in zip(bars, equities, strict=True)]
    curve = EquityCurve(bars, equities)
    assert list(curve) == points
    assert len(curve) == 9
    assert curve[0] == points[0] and curve[-1] == points[-1]
    assert curve[2:5] == points[2:5]
    assert curve.time(-1) == bars[-1].open_time
    assert curve == points and curve == EquityCurve(bars, list(equities))
    assert curve != EquityCurve(bars, [*equities[:-1], Decimal(1)])
    # the metrics look up times where drawdowns end and days end: the same numbers
    span = 9 * timedelta(hours=6)
    assert compute_metrics([], curve, Decimal(100), span) == compute_metrics(
        [], points, Decimal(100), span
    )


def test_an_equity_curve_needs_one_value_a_candle() -> None:
    with pytest.raises(ValueError, match="3 candles but 2 equity values"):
        EquityCurve(candles(3), [Decimal(1), Decimal(2)])
