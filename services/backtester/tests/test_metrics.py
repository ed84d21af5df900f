"""DetailedMetrics: hand-computed cases, every degenerate case, and parity with empyrical."""

from __future__ import annotations

import csv
import gzip
import math
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import empyrical
import numpy as np
import pytest
from backtester.metrics import (
    compute_metrics,
    daily_returns,
    day_end_equity,
    max_drawdown,
    max_drawdown_duration,
    sharpe_ratio,
    sortino_ratio,
    trade_statistics,
)
from backtester.simulator import TradeRecord
from hypothesis import given, settings
from hypothesis import strategies as st

D = Decimal
T0 = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def curve_of(values: list[str], step: timedelta = DAY) -> list[tuple[datetime, Decimal]]:
    return [(T0 + i * step, D(v)) for i, v in enumerate(values)]


def trade(pnl: str, hours: int = 1) -> TradeRecord:
    return TradeRecord(
        entry_time=T0,
        exit_time=T0 + timedelta(hours=hours),
        symbol="BTCUSDT",
        side="LONG",
        entry_price=D(100),
        exit_price=D(100) + D(pnl),
        quantity=D(1),
        pnl=D(pnl),
        pnl_pct=float(D(pnl) / 100),
        holding_period=timedelta(hours=hours),
    )


def test_equity_metrics_on_a_hand_computed_three_day_curve() -> None:
    curve = curve_of(["110", "99", "121"])
    metrics = compute_metrics([], curve, D(100), 3 * DAY)
    daily = [0.1, -0.1, 121 / 99 - 1]
    assert daily_returns(curve, D(100)) == pytest.approx(daily, abs=1e-15)
    mean = sum(daily) / 3
    assert metrics.sharpe_ratio == pytest.approx(mean / statistics.stdev(daily) * math.sqrt(365))
    assert metrics.sortino_ratio == pytest.approx(mean / math.sqrt(0.01 / 3) * math.sqrt(365))
    assert metrics.total_return == pytest.approx(0.21)
    assert metrics.max_drawdown == pytest.approx(0.1)  # 110 → 99
    assert metrics.max_drawdown_duration == 2 * DAY  # peak on day 1, regained on day 3
    assert metrics.annualized_return == pytest.approx(1.21 ** (365 / 3) - 1)
    assert metrics.calmar_ratio == pytest.approx((1.21 ** (365 / 3) - 1) / 0.1)
    assert metrics.monthly_returns == {"2024-01": pytest.approx(0.21)}


def test_monthly_returns_chain_month_end_equity() -> None:
    curve = [
        (datetime(2024, 1, 31, 23, tzinfo=UTC), D("110")),
        (datetime(2024, 2, 1, 0, tzinfo=UTC), D("50")),
        (datetime(2024, 2, 29, 23, tzinfo=UTC), D("99")),
        (datetime(2024, 3, 1, 0, tzinfo=UTC), D("99")),
    ]
    metrics = compute_metrics([], curve, D(100), timedelta(days=30))
    assert metrics.monthly_returns == {
        "2024-01": pytest.approx(0.1),
        "2024-02": pytest.approx(-0.1),
        "2024-03": 0.0,
    }


def test_drawdown_from_the_initial_balance_that_is_never_regained() -> None:
    curve = curve_of(["90", "95", "80", "85"])
    assert max_drawdown(D(100), curve) == pytest.approx(0.2)
    metrics = compute_metrics([], curve, D(100), 4 * DAY)
    assert metrics.max_drawdown_duration == 3 * DAY  # from the start until the last candle


def test_trade_statistics_hand_computed() -> None:
    trades = [trade("30", 2), trade("-10", 4), trade("20", 6), trade("-20", 8)]
    stats = trade_statistics(trades)
    assert stats["total_trades"] == 4
    assert (stats["winning_trades"], stats["losing_trades"]) == (2, 2)
    assert stats["win_rate"] == 0.5
    assert stats["profit_factor"] == pytest.approx(50 / 30)
    assert (stats["avg_win"], stats["avg_loss"]) == (D(25), D(-15))
    assert (stats["largest_win"], stats["largest_loss"]) == (D(30), D(-20))
    assert stats["avg_holding_period"] == timedelta(hours=5)
    assert stats["expectancy"] == D(5)
    assert stats["sqn"] == pytest.approx(2 * 5 / statistics.stdev([30, -10, 20, -20]))


def test_no_trades_gives_zero_trade_statistics() -> None:
    stats = trade_statistics([])
    assert stats["total_trades"] == 0
    assert stats["win_rate"] == 0.0 and stats["profit_factor"] == 0.0 and stats["sqn"] == 0.0
    assert stats["avg_win"] == stats["avg_loss"] == stats["expectancy"] == D(0)
    assert stats["avg_holding_period"] == timedelta(0)


def test_no_losing_trade_gives_infinite_profit_factor() -> None:
    stats = trade_statistics([trade("10"), trade("5"), trade("0")])
    assert stats["profit_factor"] == math.inf
    assert (stats["winning_trades"], stats["losing_trades"]) == (2, 0)
    assert stats["win_rate"] == pytest.approx(2 / 3)
    assert stats["avg_loss"] == stats["largest_loss"] == D(0)


def test_only_losing_trades() -> None:
    stats = trade_statistics([trade("-10"), trade("-30")])
    assert stats["profit_factor"] == 0.0 and stats["win_rate"] == 0.0
    assert stats["avg_win"] == stats["largest_win"] == D(0)
    assert (stats["avg_loss"], stats["largest_loss"]) == (D(-20), D(-30))
    assert stats["sqn"] == pytest.approx(math.sqrt(2) * -20 / statistics.stdev([-10, -30]))


def test_a_single_trade_has_no_sqn() -> None:
    assert trade_statistics([trade("10")])["sqn"] == 0.0


def test_under_one_day_is_not_annualised() -> None:
    curve = curve_of(["101", "102", "103"], step=timedelta(hours=1))
    metrics = compute_metrics([], curve, D(100), timedelta(hours=3))
    assert metrics.total_return == pytest.approx(0.03)
    assert metrics.annualized_return == 0.0 and metrics.calmar_ratio == 0.0
    assert metrics.sharpe_ratio == 0.0 and metrics.sortino_ratio == 0.0  # one daily return


def test_zero_variance_flat_equity() -> None:
    curve = curve_of(["100"] * 5)
    metrics = compute_metrics([], curve, D(100), 5 * DAY)
    assert metrics.sharpe_ratio == metrics.sortino_ratio == 0.0
    assert metrics.max_drawdown == 0.0 and metrics.max_drawdown_duration == timedelta(0)
    assert metrics.calmar_ratio == 0.0 and metrics.annualized_return == 0.0


def test_zero_variance_constant_growth_is_infinite_like_empyrical() -> None:
    returns = [0.01] * 5
    assert sharpe_ratio(returns) == math.inf
    assert sortino_ratio(returns) == math.inf  # no downside at all
    assert empyrical.sharpe_ratio(np.array(returns), annualization=365) == math.inf
    assert empyrical.sortino_ratio(np.array(returns), annualization=365) == math.inf


def test_no_drawdown_gives_infinite_calmar() -> None:
    metrics = compute_metrics([], curve_of(["101", "102", "103"]), D(100), 3 * DAY)
    assert metrics.max_drawdown == 0.0 and metrics.calmar_ratio == math.inf


def _real_daily_curve(path: Path, days: int) -> list[tuple[datetime, Decimal]]:
    """Equity of 1 BTC bought with 10000 USDT, at each UTC day's last 1h close."""
    closes: dict[str, tuple[datetime, Decimal]] = {}
    with gzip.open(path, "rt") as handle:
        for row in csv.DictReader(handle):
            time = datetime.fromtimestamp(int(row["open_time"]) / 1000, UTC)
            closes[time.date().isoformat()] = (time, D(row["close"]))
            if len(closes) > days:
                break
    points = list(closes.values())[:days]
    first = points[0][1]
    return [(time, D(10000) * close / first) for time, close in points]


def test_equity_metrics_equal_empyrical_on_real_daily_returns(shared_data: Path) -> None:
    # 2018-01-01 .. about 2019-05: a crash and a rally. One equity point per UTC day, so the
    # per-candle drawdown and the daily one are the same series. empyrical 0.7 anchors its
    # drawdown at the starting value, as we anchor the peak at the initial balance, and its
    # CAGR counts len(returns) days, which is our span when every day is present (it is here).
    curve = _real_daily_curve(shared_data / "BTCUSDT-1h.csv.gz", 500)
    days = len(curve)
    initial = curve[0][1] * D("0.99")  # the first day is a real return too
    metrics = compute_metrics([], curve, initial, days * DAY)
    returns = np.array(daily_returns(curve, initial))
    assert len(returns) == days
    expected = {
        "sharpe": empyrical.sharpe_ratio(returns, annualization=365),
        "sortino": empyrical.sortino_ratio(returns, annualization=365),
        "max_drawdown": -empyrical.max_drawdown(returns),
        "cagr": empyrical.cagr(returns, annualization=365),
    }
    got = {
        "sharpe": metrics.sharpe_ratio,
        "sortino": metrics.sortino_ratio,
        "max_drawdown": metrics.max_drawdown,
        "cagr": metrics.annualized_return,
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9, rel=0), name
    assert metrics.max_drawdown > 0.5  # the 2018 bear market: the comparison is not trivial


@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=60))
@settings(max_examples=150, deadline=None)
def test_one_pass_drawdowns_equal_the_naive_definition(values: list[int]) -> None:
    curve = [(T0 + i * timedelta(hours=1), D(v)) for i, v in enumerate(values)]
    initial = D(100)
    points = [(T0, initial), *curve]  # the initial balance is the first peak
    worst, longest = D(0), timedelta(0)
    for i, (_, equity) in enumerate(points):
        # the peak: the highest equity so far, at the last time it was reached
        peak_index = max(range(i + 1), key=lambda j: (points[j][1], j))
        peak_time, peak = points[peak_index]
        worst = max(worst, (peak - equity) / peak)
        if equity < peak:
            regained = next((t for t, e in points[i:] if e >= peak), curve[-1][0])
            longest = max(longest, regained - peak_time)
    assert max_drawdown(initial, curve) == float(worst)
    assert max_drawdown_duration(initial, curve) == longest


@given(
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=60 * 24 * 3), st.integers(1, 500)),
        min_size=1,
        max_size=80,
    )
)
@settings(max_examples=150, deadline=None)
def test_day_end_equity_is_each_utc_days_last_point(steps: list[tuple[int, int]]) -> None:
    # Points minutes to days apart (days without a candle included), each day's last one kept.
    curve = []
    moment = T0 - timedelta(minutes=1)
    for minutes, value in steps:
        moment += timedelta(minutes=minutes)
        curve.append((moment, D(value)))
    last_of_day: dict[object, Decimal] = {}
    for moment, equity in curve:
        last_of_day[moment.date()] = equity
    assert day_end_equity(curve) == list(last_of_day.items())


@given(
    st.sampled_from([1, 15, 60, 240, 24 * 60, 3 * 24 * 60]),
    st.integers(min_value=0, max_value=24 * 60 - 1),
    st.lists(st.booleans(), min_size=1, max_size=400),
)
@settings(max_examples=150, deadline=None)
def test_day_end_equity_on_regular_candles_with_gaps(
    minutes: int, offset: int, kept: list[bool]
) -> None:
    # Candles every `minutes` from a start within the day, some missing: the index of the
    # next midnight is guessed from the spacing and must still be exact across the gaps.
    start = T0 + timedelta(minutes=offset)
    curve = [
        (start + i * timedelta(minutes=minutes), D(i + 1)) for i, keep in enumerate(kept) if keep
    ] or [(start, D(1))]
    last_of_day: dict[object, Decimal] = {}
    for moment, equity in curve:
        last_of_day[moment.date()] = equity
    assert day_end_equity(curve) == list(last_of_day.items())
