"""The risk rules on constructed cases: each rule triggers, reduces or rejects, and is counted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from order_executor.risk import RiskDecision, RiskLimits, RiskManager, RiskReason, RiskState
from shared.config import load_settings
from shared.models import Side

D = Decimal


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


def test_buy_within_max_position_size_passes_untouched() -> None:
    risk = RiskManager(RiskLimits(max_position_size=D("0.1")))
    decision = risk.check_order(
        Side.BUY, D("0.01"), D("50000"), position_quantity=D(0), portfolio_value=D("10000")
    )
    assert decision == RiskDecision(D("0.01"))
    assert risk.state.rejections == {}


def test_buy_beyond_max_position_size_is_reduced_to_fit() -> None:
    # 10 % of 10000 = 1000 USDT; 0.01 held at 50000 = 500 already, so 500 / 50000 = 0.01 fits.
    risk = RiskManager(RiskLimits(max_position_size=D("0.1")))
    decision = risk.check_order(
        Side.BUY, D("0.05"), D("50000"), position_quantity=D("0.01"), portfolio_value=D("10000")
    )
    assert decision.quantity == D("0.01")
    assert decision.reduced and decision.reason is RiskReason.MAX_POSITION_SIZE
    assert risk.state.rejections == {"max_position_size": 1}


def test_buy_with_position_already_at_max_size_is_rejected() -> None:
    risk = RiskManager(RiskLimits(max_position_size=D("0.1")))
    decision = risk.check_order(
        Side.BUY, D("0.01"), D("50000"), position_quantity=D("0.02"), portfolio_value=D("10000")
    )
    assert not decision.approved and decision.reason is RiskReason.MAX_POSITION_SIZE
    assert risk.state.rejections == {"max_position_size": 1}


def test_sell_always_passes() -> None:
    risk = RiskManager(RiskLimits(D("0.1"), D("5"), D("10")))
    risk.observe_portfolio_value(at(1, 0), D("10000"))
    risk.observe_portfolio_value(at(1, 1), D("8000"))
    decision = risk.check_order(
        Side.SELL, D("5"), D("50000"), position_quantity=D("5"), portfolio_value=D("8000")
    )
    assert decision == RiskDecision(D("5"))


def test_stop_loss_triggers_at_the_threshold_only() -> None:
    risk = RiskManager(RiskLimits(stop_loss_pct=D("5")))
    kwargs = {"position_quantity": D("1"), "avg_entry_price": D("100")}
    assert not risk.stop_loss_triggered(price=D("95.01"), **kwargs)
    assert risk.stop_loss_triggered(price=D("95"), **kwargs)
    assert not risk.stop_loss_triggered(
        price=D("90"), position_quantity=D(0), avg_entry_price=D(100)
    )


def test_daily_loss_limit_halts_buys_for_the_rest_of_the_utc_day() -> None:
    risk = RiskManager(RiskLimits(daily_loss_limit_pct=D("10")))
    risk.observe_portfolio_value(at(1, 0), D("10000"))
    risk.observe_portfolio_value(at(1, 5), D("9001"))  # -9.99 %: still trading
    assert risk.check_order(
        Side.BUY, D(1), D(10), position_quantity=D(0), portfolio_value=D("9001")
    ).approved
    risk.observe_portfolio_value(at(1, 6), D("9000"))  # -10 %: halted
    risk.observe_portfolio_value(at(1, 7), D("9900"))  # recovering does not lift it that day
    halted = risk.check_order(
        Side.BUY, D(1), D(10), position_quantity=D(0), portfolio_value=D("9900")
    )
    assert not halted.approved and halted.reason is RiskReason.DAILY_LOSS_LIMIT
    risk.observe_portfolio_value(at(2, 0), D("9900"))  # next UTC day: buys allowed again
    assert risk.check_order(
        Side.BUY, D(1), D(10), position_quantity=D(0), portfolio_value=D("9900")
    ).approved
    assert risk.state.rejections == {"daily_loss_limit": 1}


def test_daily_loss_counts_from_the_previous_days_last_value() -> None:
    risk = RiskManager(RiskLimits(daily_loss_limit_pct=D("10")))
    risk.observe_portfolio_value(at(1, 23), D("10000"))
    risk.observe_portfolio_value(at(2, 0), D("8900"))  # the first candle of day 2 lost 11 %
    assert risk.state.buys_halted


def test_zero_limits_disable_every_rule() -> None:
    risk = RiskManager(RiskLimits.disabled())
    risk.observe_portfolio_value(at(1, 0), D("10000"))
    risk.observe_portfolio_value(at(1, 1), D("1"))
    decision = risk.check_order(
        Side.BUY, D(100), D(10), position_quantity=D(1000), portfolio_value=D("1")
    )
    assert decision == RiskDecision(D(100))
    assert not risk.stop_loss_triggered(position_quantity=D(1), avg_entry_price=D(100), price=D(1))


def test_state_round_trips_through_json_and_keeps_the_halt() -> None:
    risk = RiskManager(RiskLimits(daily_loss_limit_pct=D("10")))
    risk.observe_portfolio_value(at(1, 0), D("10000"))
    risk.observe_portfolio_value(at(1, 1), D("8000"))
    risk.check_order(Side.BUY, D(1), D(10), position_quantity=D(0), portfolio_value=D("8000"))
    restored = RiskManager(
        risk.limits, RiskState.from_dict(json.loads(json.dumps(risk.state.to_dict())))
    )
    assert restored.state == risk.state
    assert not restored.check_order(
        Side.BUY, D(1), D(10), position_quantity=D(0), portfolio_value=D("8000")
    ).approved


def test_limits_come_from_settings_and_reject_out_of_range_values() -> None:
    settings = load_settings(
        risk_max_position_size="0.2", risk_stop_loss_pct="3", risk_daily_loss_limit_pct="0"
    )
    assert RiskLimits.from_settings(settings) == RiskLimits(D("0.2"), D("3"), D("0"))
    with pytest.raises(ValueError, match="max position size"):
        RiskLimits(max_position_size=D("1.5"))
