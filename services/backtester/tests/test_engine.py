"""The engine loop on hand-computed cases: next-open fills, warm-up, risk rules, reset."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from backtester.engine import BacktestConfig, BacktestEngine
from order_executor.risk import RiskLimits
from shared.models import Candle

D = Decimal
Candles = Callable[..., list[Candle]]
FILLER = ("100", "100")  # a strategy never signals on its first candle: this one only leads in


def engine(
    strategy: Any, balance: str = "10000", fee: str = "0.001", **risk: str
) -> BacktestEngine:
    limits = RiskLimits(**{k: D(v) for k, v in risk.items()})
    config = BacktestConfig("BTCUSDT", "1h", initial_balance=D(balance), fee=D(fee), risk=limits)
    return BacktestEngine(strategy, config)


def test_signals_fill_at_the_next_open_and_an_open_position_is_marked(
    scripted: Any, make_candles: Candles
) -> None:
    bars = make_candles(
        [FILLER, ("100", "100"), ("101", "102"), ("103", "104"), ("105", "106"), ("107", "108")]
    )
    strategy = scripted({"quantity": "1", "buys": (2, 5), "sells": (4, 6)})
    result = engine(strategy).run(bars)
    [trade] = result.trades
    assert (trade.entry_time, trade.entry_price) == (bars[2].open_time, D(101))
    assert (trade.exit_time, trade.exit_price) == (bars[4].open_time, D(105))
    assert trade.pnl == D(4) - D("0.101") - D("0.105")
    # equity after each close: flat, long 1 from 101, long, flat after 105, long 1 from 107
    assert [e for _, e in result.equity_curve] == [
        D(10000),
        D(10000),
        D("9898.899") + 102,
        D("9898.899") + 104,
        D("10003.794"),
        D("10003.794") - D("107.107") + 108,
    ]
    position = result.open_position
    assert position is not None and position.quantity == 1 and position.avg_entry_price == 107
    assert position.mark_price == 108 and position.unrealized_pnl == D(1) - D("0.107")
    assert result.final_equity == D("10004.687")
    assert result.counts.unfilled_at_end == 1  # the SELL of the last candle has no next open
    assert result.metrics.total_trades == 1
    assert result.fees_paid == D("0.101") + D("0.105") + D("0.107")


def test_warmup_candles_are_fed_without_trading(scripted: Any, make_candles: Candles) -> None:
    bars = make_candles([("100", "100")] * 6)
    strategy = scripted({"quantity": "1", "buys": (2, 3, 4)})
    result = engine(strategy).run(bars[3:], warmup=bars[:3])
    assert strategy.seen_closes == [D(100)] * 6  # the strategy saw the warm-up candles
    assert result.counts.signals == 1  # only the 4th candle seen, the first traded, signals
    assert result.open_position is not None and result.open_position.entry_time == bars[4].open_time
    assert result.warmup_candles == 3 and result.candles == 3
    assert result.start == bars[3].open_time


def test_a_sell_signal_with_nothing_held_does_nothing(scripted: Any, make_candles: Candles) -> None:
    bars = make_candles([("100", "100")] * 3)
    result = engine(scripted({"quantity": "1", "sells": (2,)})).run(bars)
    assert result.trades == [] and result.final_equity == D(10000)
    assert result.counts.sells_with_nothing_held == 1


def test_max_position_size_reduces_the_buy(scripted: Any, make_candles: Candles) -> None:
    bars = make_candles([("100", "100")] * 3)
    strategy = scripted({"quantity": "50", "buys": (2,)})
    result = engine(strategy, fee="0", max_position_size="0.1").run(bars)
    assert result.open_position is not None
    assert result.open_position.quantity == D(10)  # 10 % of 10000 at 100
    assert result.counts.risk_rejections == {"max_position_size": 1}


def test_stop_loss_sells_at_the_next_open(scripted: Any, make_candles: Candles) -> None:
    bars = make_candles(
        [FILLER, ("100", "100"), ("100", "97"), ("96", "94"), ("93", "95"), ("95", "95")]
    )
    strategy = scripted({"quantity": "1", "buys": (2,)})
    result = engine(strategy, fee="0", stop_loss_pct="5").run(bars)
    [trade] = result.trades
    assert trade.exit_time == bars[4].open_time and trade.exit_price == D(93)
    assert result.counts.stop_losses == 1 and result.open_position is None


def test_daily_loss_limit_halts_buys_until_the_next_utc_day(
    scripted: Any, make_candles: Candles
) -> None:
    bars = make_candles(
        [("100", "100"), ("100", "100"), ("100", "80")] + [("80", "80")] * 4,
        step=timedelta(hours=6),
        interval="6h",
    )
    strategy = scripted({"quantity": "9", "buys": (2, 4, 6)})
    result = engine(strategy, balance="1000", fee="0", daily_loss_limit_pct="10").run(bars)
    # day 1 (00:00-18:00): the BUY of 06:00 fills 9 at 100 at 12:00, when the account falls
    # to 820 (−18 %): the BUY of 18:00 is rejected; day 2: the BUY of 06:00 passes and, at the
    # next open, is reduced to the 100 USDT of cash left.
    assert result.counts.risk_rejections == {"daily_loss_limit": 1}
    assert result.counts.buys_reduced_by_cash == 1
    assert result.open_position is not None
    assert result.open_position.quantity == D(9) + D(100) / D(80)


def test_no_risk_lets_everything_through(scripted: Any, make_candles: Candles) -> None:
    bars = make_candles([("100", "100"), ("100", "50"), ("50", "50"), ("50", "50")])
    strategy = scripted({"quantity": "50", "buys": (2, 3)})
    result = engine(strategy, fee="0").run(bars)
    assert result.counts.risk_rejections == {} and result.counts.stop_losses == 0
    assert result.open_position is not None and result.open_position.quantity == D(100)


def test_running_twice_gives_the_same_result(scripted: Any, make_candles: Candles) -> None:
    bars = make_candles([("100", "101"), ("102", "99"), ("98", "103"), ("104", "100")])
    runner = engine(scripted({"quantity": "1", "buys": (2,), "sells": (3,)}))
    first, second = runner.run(bars), runner.run(bars)
    assert first == second


def test_a_strategy_sell_beside_a_stop_loss_is_not_a_second_order(
    scripted: Any, make_candles: Candles
) -> None:
    bars = make_candles([FILLER, ("100", "100"), ("100", "90"), ("91", "92"), ("92", "92")])
    strategy = scripted({"quantity": "1", "buys": (2,), "sells": (3,)})
    result = engine(strategy, fee="0", stop_loss_pct="5").run(bars)
    [trade] = result.trades
    assert trade.exit_price == D(91) and result.counts.stop_losses == 1
    assert result.counts.sells_with_nothing_held == 0
