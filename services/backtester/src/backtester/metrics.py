"""`DetailedMetrics` of a backtest and the definitions behind every number.

Definitions (also printed under the report, see `DEFINITIONS`):
- equity = cash + position × close after every candle; the curve is stamped with each candle's
  open time. Daily returns come from the equity after each UTC day's last candle, the first
  day against the initial balance.
- sharpe_ratio = mean(daily) / std(daily, ddof=1) × √365.
- sortino_ratio = mean(daily) / √(mean(min(r, 0)²)) × √365.
- annualized_return = (final / initial)^(365 / days) − 1, days = the backtest's span in days
  (first candle's open to last candle's close); calmar_ratio = annualized_return / max_drawdown.
- max_drawdown = the largest (peak − equity) / peak over the per-candle equity, the initial
  balance being the first peak; max_drawdown_duration = the longest time from a peak until
  equity first regains it (or until the last candle, if it never does).
- monthly_returns: "YYYY-MM" → month-end equity over the previous month-end (the first month
  against the initial balance).
- Over closed trades: win_rate = winners / trades (a winner has pnl > 0, a loser pnl < 0);
  profit_factor = gross profit / gross loss; avg/largest win and loss are in USDT (losses
  negative); expectancy = mean pnl per trade (USDT); sqn = √n × mean(pnl) / std(pnl, ddof=1).

Degenerate cases: a ratio whose denominator is zero is +∞ when its numerator is positive,
−∞ when negative and 0 when zero (so no losing trade with some profit gives profit_factor ∞,
no trades gives 0); Sharpe and Sortino need two daily returns and are 0 otherwise; a span
under one day is not annualised: annualized_return and calmar_ratio are 0; sqn needs two
trades; averages over no trades are 0.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from backtester.equity import EquityPoint, equity_values, point_time, searchable_times
from backtester.simulator import TradeRecord

DAYS_PER_YEAR = 365
ONE_DAY = timedelta(days=1)
ZERO = Decimal(0)


DEFINITIONS = (
    "equity = cash + position × close after each candle; daily returns from each UTC day's "
    "last equity (first day vs initial balance)",
    "Sharpe = mean(daily) / std(daily, ddof=1) × √365; "
    "Sortino = mean(daily) / √(mean(min(r,0)²)) × √365",
    "annualized = (final/initial)^(365/days) − 1 (0 under one day); "
    "Calmar = annualized / max drawdown",
    "max drawdown = max (peak − equity)/peak per candle; duration = peak until regained (or end)",
    "win rate, profit factor (gross profit / gross loss), averages, expectancy (mean pnl) and "
    "SQN (√n·mean/std of pnl) over closed trades; x/0 = ∞ if x > 0",
)


@dataclass(frozen=True, slots=True)
class DetailedMetrics:
    """The spec's metrics plus `annualized_return`, `expectancy` and `sqn`.

    Ratios are floats (possibly ±inf, see the module docstring); money is Decimal USDT.
    """

    # basics
    total_return: float
    total_trades: int
    winning_trades: int
    losing_trades: int
    win_rate: float
    profit_factor: float
    # risk
    sharpe_ratio: float
    sortino_ratio: float
    calmar_ratio: float
    max_drawdown: float
    max_drawdown_duration: timedelta
    # returns
    monthly_returns: dict[str, float]
    avg_win: Decimal
    avg_loss: Decimal
    largest_win: Decimal
    largest_loss: Decimal
    avg_holding_period: timedelta
    # additions of issue 5
    annualized_return: float
    expectancy: Decimal
    sqn: float
    # individual trades
    trades: list[TradeRecord] = field(default_factory=list)


def safe_ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with x/0 = +∞, −∞ or 0 by the sign of x."""
    if denominator == 0:
        if numerator == 0:
            return 0.0
        return math.inf if numerator > 0 else -math.inf
    return numerator / denominator


def day_end_equity(curve: Sequence[EquityPoint]) -> list[tuple[date, Decimal]]:
    """The equity after the last candle of each UTC day, in order.

    The curve is in time order, so each day's last point is found by searching for the next
    midnight: a few time comparisons a day instead of one a candle (a per-candle pass cost
    about a twentieth of a whole backtest of 1m candles).
    """
    ends: list[tuple[date, Decimal]] = []
    times, time_of = searchable_times(curve)
    count = len(curve)
    if not count:
        return ends
    # Each probe of a point reads a candle that is cold in memory by now (~1 µs), so the
    # next midnight's index is first guessed from the spacing of the first two points (exact
    # for a run without gaps: two probes a day), else galloped to and bisected.
    step = time_of(times[1]) - time_of(times[0]) if count > 1 else None
    start, start_time = 0, time_of(times[0])
    while start < count:
        day = start_time.date()
        next_midnight = datetime.combine(day + ONE_DAY, time.min, tzinfo=UTC)
        end = _next_at_or_after(times, time_of, next_midnight, start, start_time, step)
        ends.append((day, curve[end - 1][1]))
        start = end
        if start < count:
            start_time = time_of(times[start])
    return ends


def _next_at_or_after(
    times: Sequence[Any],
    time_of: Callable[[Any], datetime],
    moment: datetime,
    start: int,
    start_time: datetime,
    step: timedelta | None,
) -> int:
    """The index of the first item at or after `moment`, the items from `start` on sorted."""
    count = len(times)
    if step:
        guess = start + -((start_time - moment) // step)  # ceil((moment − start) / step)
        if (
            start < guess <= count
            and time_of(times[guess - 1]) < moment
            and (guess == count or time_of(times[guess]) >= moment)
        ):
            return guess
    low, stride = start, 1
    high = start + stride
    while high < count and time_of(times[high]) < moment:
        low, stride = high, stride * 2
        high = start + stride
    return bisect_left(times, moment, low, min(high, count), key=time_of)


def chained_returns(
    ends: Sequence[tuple[str, Decimal]], initial_balance: Decimal
) -> list[tuple[str, float]]:
    """Each period's return from its end equity over the previous one (the first over initial)."""
    returns = []
    previous = initial_balance
    for key, equity in ends:
        returns.append((key, float(equity / previous - 1)))
        previous = equity
    return returns


def daily_returns(
    curve: Sequence[EquityPoint],
    initial_balance: Decimal,
    day_ends: Sequence[tuple[date, Decimal]] | None = None,
) -> list[float]:
    """Returns of each UTC day present in the curve (pass `day_ends` if already computed)."""
    ends = day_end_equity(curve) if day_ends is None else day_ends
    keyed = [(day.isoformat(), equity) for day, equity in ends]
    return [r for _, r in chained_returns(keyed, initial_balance)]


def monthly_returns(
    curve: Sequence[EquityPoint],
    initial_balance: Decimal,
    day_ends: Sequence[tuple[date, Decimal]] | None = None,
) -> dict[str, float]:
    """ "YYYY-MM" → the month's return from month-end equity."""
    month_ends: dict[str, Decimal] = {}
    for day, equity in day_end_equity(curve) if day_ends is None else day_ends:
        month_ends[f"{day.year:04d}-{day.month:02d}"] = equity
    return dict(chained_returns(list(month_ends.items()), initial_balance))


def sharpe_ratio(returns: Sequence[float]) -> float:
    """mean / std(ddof=1) × √365; 0 with fewer than two returns."""
    if len(returns) < 2:
        return 0.0
    mean = math.fsum(returns) / len(returns)
    if max(returns) == min(returns):
        # Identical returns have zero deviation; the float mean may sit a bit off them and
        # leave a 1e-18 residue that would turn ±∞ into an arbitrary huge number.
        return safe_ratio(mean, 0.0)
    variance = math.fsum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    return safe_ratio(mean, math.sqrt(variance)) * math.sqrt(DAYS_PER_YEAR)


def sortino_ratio(returns: Sequence[float]) -> float:
    """mean / √(mean(min(r, 0)²)) × √365; 0 with fewer than two returns."""
    if len(returns) < 2:
        return 0.0
    mean = math.fsum(returns) / len(returns)
    downside = math.sqrt(math.fsum(min(r, 0.0) ** 2 for r in returns) / len(returns))
    return safe_ratio(mean, downside) * math.sqrt(DAYS_PER_YEAR)


def annualized_return(final: Decimal, initial: Decimal, days: float) -> float:
    """(final / initial)^(365 / days) − 1; 0 for a span under one day."""
    if days < 1:
        return 0.0
    growth = float(final / initial)
    if growth <= 0:
        return -1.0
    return float(growth ** (DAYS_PER_YEAR / days) - 1)


def drawdowns(initial_balance: Decimal, curve: Sequence[EquityPoint]) -> tuple[float, timedelta]:
    """(max drawdown, max drawdown duration) in one pass, the initial balance the first peak.

    Drawdown = (peak − equity) / peak. Between a peak and the moment equity regains it the
    deepest point is the lowest equity, so one Decimal division per drawdown suffices
    (a division on every candle was the slowest part of the metrics). The duration runs from
    the peak until equity first regains it, or until the last candle.
    """
    if not curve:
        return 0.0, timedelta(0)
    peak = trough = initial_balance
    peak_index = 0
    worst = ZERO
    longest = timedelta(0)
    below = False
    # Over the equities alone: a time is looked up only where a drawdown ends.
    for index, equity in enumerate(equity_values(curve)):
        if equity >= peak:
            if below:
                worst = max(worst, (peak - trough) / peak)
                longest = max(longest, point_time(curve, index) - point_time(curve, peak_index))
                below = False
            peak = trough = equity
            peak_index = index
        else:
            below = True
            if equity < trough:
                trough = equity
    if below:
        worst = max(worst, (peak - trough) / peak)
        longest = max(longest, point_time(curve, len(curve) - 1) - point_time(curve, peak_index))
    return float(worst), longest


def max_drawdown(initial_balance: Decimal, curve: Sequence[EquityPoint]) -> float:
    """The largest (peak − equity) / peak over the curve (see `drawdowns`)."""
    return drawdowns(initial_balance, curve)[0]


def max_drawdown_duration(initial_balance: Decimal, curve: Sequence[EquityPoint]) -> timedelta:
    """The longest time from a peak until equity first regains it (see `drawdowns`)."""
    return drawdowns(initial_balance, curve)[1]


def trade_statistics(trades: Sequence[TradeRecord]) -> dict[str, object]:
    """The DetailedMetrics fields computed over closed trades."""
    pnls = [t.pnl for t in trades]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    n = len(pnls)
    gross_profit = sum(wins, ZERO)
    gross_loss = -sum(losses, ZERO)
    mean_pnl = sum(pnls, ZERO) / n if n else ZERO
    sqn = 0.0
    if n >= 2:
        floats = [float(p) for p in pnls]
        mean = math.fsum(floats) / n
        std = math.sqrt(math.fsum((p - mean) ** 2 for p in floats) / (n - 1))
        sqn = safe_ratio(math.sqrt(n) * mean, std)
    holding = sum((t.holding_period for t in trades), timedelta(0))
    return {
        "total_trades": n,
        "winning_trades": len(wins),
        "losing_trades": len(losses),
        "win_rate": len(wins) / n if n else 0.0,
        "profit_factor": safe_ratio(float(gross_profit), float(gross_loss)),
        "avg_win": gross_profit / len(wins) if wins else ZERO,
        "avg_loss": -gross_loss / len(losses) if losses else ZERO,
        "largest_win": max(wins) if wins else ZERO,
        "largest_loss": min(losses) if losses else ZERO,
        "avg_holding_period": holding / n if n else timedelta(0),
        "expectancy": mean_pnl,
        "sqn": sqn,
    }


def compute_metrics(
    trades: Sequence[TradeRecord],
    curve: Sequence[EquityPoint],
    initial_balance: Decimal,
    span: timedelta,
) -> DetailedMetrics:
    """Every metric of a run from its closed trades, per-candle equity and time span."""
    final = curve[-1][1] if curve else initial_balance
    days = span / timedelta(days=1)
    day_ends = day_end_equity(curve)
    daily = daily_returns(curve, initial_balance, day_ends)
    annualized = annualized_return(final, initial_balance, days)
    drawdown, drawdown_duration = drawdowns(initial_balance, curve)
    stats = trade_statistics(trades)
    return DetailedMetrics(
        total_return=float(final / initial_balance - 1),
        sharpe_ratio=sharpe_ratio(daily),
        sortino_ratio=sortino_ratio(daily),
        calmar_ratio=safe_ratio(annualized, drawdown) if days >= 1 else 0.0,
        max_drawdown=drawdown,
        max_drawdown_duration=drawdown_duration,
        monthly_returns=monthly_returns(curve, initial_balance, day_ends),
        annualized_return=annualized,
        trades=list(trades),
        **stats,  # type: ignore[arg-type]
    )
