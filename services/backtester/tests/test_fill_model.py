"""The shared fill model: slippage against the trader, fee on notional, affordable quantity."""

from __future__ import annotations

from decimal import Decimal

import pytest
from shared.fill_model import QUANTITY_STEP, FillModel
from shared.models import Side

D = Decimal


def test_slippage_moves_the_price_against_the_trader() -> None:
    model = FillModel(fee_rate=D("0.001"), slippage=D("0.01"))
    buy = model.fill(Side.BUY, D("2"), D("100"))
    sell = model.fill(Side.SELL, D("2"), D("100"))
    assert (buy.price, buy.notional, buy.fee, buy.cash_delta) == (
        D("101"),
        D("202"),
        D("0.202"),
        D("-202.202"),
    )
    assert (sell.price, sell.notional, sell.fee, sell.cash_delta) == (
        D("99"),
        D("198"),
        D("0.198"),
        D("197.802"),
    )


def test_affordable_quantity_never_costs_more_than_the_cash() -> None:
    model = FillModel(fee_rate=D("0.001"), slippage=D("0.0005"))
    for cash, price in [(D("1000"), D("27123.45")), (D("10"), D("3")), (D("0.5"), D("1e9"))]:
        quantity = model.affordable_buy_quantity(cash, price)
        if quantity > 0:
            fill = model.fill(Side.BUY, quantity, price)
            assert fill.notional + fill.fee <= cash
            bigger = model.fill(Side.BUY, quantity + QUANTITY_STEP, price)
            assert bigger.notional + bigger.fee > cash
    assert model.affordable_buy_quantity(D("0.5"), D("1e9")) == 0


def test_bad_terms_are_rejected_with_a_message() -> None:
    with pytest.raises(ValueError, match="fee rate"):
        FillModel(fee_rate=D("1.5"))
    with pytest.raises(ValueError, match="slippage"):
        FillModel(slippage=D("-0.1"))
