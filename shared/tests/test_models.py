"""Domain models: Decimal money, UTC-aware times, strict symbols and intervals, frozen values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from shared.models import (
    INTERVALS,
    Candle,
    CandleGap,
    Order,
    OrderStatus,
    PortfolioSnapshot,
    Position,
    Side,
    Signal,
    Trade,
    interval_delta,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candle(**changes: object) -> Candle:
    values: dict[str, object] = {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open_time": T0,
        "open": "42000.01",
        "high": "42010",
        "low": "41990.5",
        "close": "42005",
        "volume": "1.25",
    }
    values.update(changes)
    return Candle.model_validate(values)


def test_a_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        candle(open_time=datetime(2024, 1, 1))


def test_an_aware_datetime_is_normalised_to_utc() -> None:
    seoul = timezone(timedelta(hours=9))

    value = candle(open_time=datetime(2024, 1, 1, 9, 0, tzinfo=seoul))

    assert value.open_time == T0
    assert value.open_time.tzinfo == UTC


def test_money_is_decimal_and_exact() -> None:
    value = candle(open="0.00000001", high="123456789012345678901234567890.5")

    assert value.open == Decimal("0.00000001")
    assert isinstance(value.high, Decimal)
    assert str(value.high) == "123456789012345678901234567890.5"


def test_symbol_and_interval_are_checked() -> None:
    with pytest.raises(ValidationError, match="upper-case letters and digits"):
        candle(symbol="btc/usdt")
    with pytest.raises(ValidationError, match="unknown interval '7m'"):
        candle(interval="7m")


def test_negative_volume_and_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        candle(volume="-1")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        candle(colour="green")


def test_models_are_frozen() -> None:
    value = candle()

    with pytest.raises(ValidationError, match="frozen"):
        value.close = Decimal(1)  # type: ignore[misc]
    assert value.model_copy(update={"close": Decimal(1)}).close == Decimal(1)


def test_close_time_is_the_last_millisecond_of_the_interval() -> None:
    assert candle().close_time == T0 + timedelta(minutes=1) - timedelta(milliseconds=1)
    assert candle(interval="4h").close_time == datetime(2024, 1, 1, 3, 59, 59, 999000, tzinfo=UTC)


def test_interval_delta_knows_binance_fixed_intervals_only() -> None:
    assert interval_delta("15m") == timedelta(minutes=15)
    assert interval_delta("1w") == timedelta(weeks=1)
    assert "1M" not in INTERVALS
    with pytest.raises(ValueError, match="unknown interval '1M': expected one of 1s, 1m"):
        interval_delta("1M")


def test_final_statuses() -> None:
    final = {status for status in OrderStatus if status.is_final}

    assert final == {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
    }


def test_order_quantity_must_be_positive_and_client_id_fit_binance() -> None:
    base = {
        "client_order_id": "x",
        "symbol": "BTCUSDT",
        "side": "BUY",
        "quantity": "1",
        "created_at": T0,
        "updated_at": T0,
    }
    assert Order.model_validate(base).status is OrderStatus.PENDING
    with pytest.raises(ValidationError, match="greater than 0"):
        Order.model_validate({**base, "quantity": "0"})
    with pytest.raises(ValidationError, match="at most 36 characters"):
        Order.model_validate({**base, "client_order_id": "x" * 37})


def test_a_gap_has_at_least_one_missing_candle() -> None:
    with pytest.raises(ValidationError):
        CandleGap(start=T0, end=T0, missing_candles=0)


decimals = st.decimals(allow_nan=False, allow_infinity=False, places=18).filter(
    lambda value: abs(value) < Decimal("1e30")
)
positive = decimals.filter(lambda value: value > 0)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(price=decimals, quantity=positive, moment=moments)
def test_every_model_survives_a_json_round_trip_exactly(
    price: Decimal, quantity: Decimal, moment: datetime
) -> None:
    # The models travel over the bus as JSON: nothing may be rounded on the way.
    values = [
        Signal(
            id="s",
            strategy="rsi",
            symbol="BTCUSDT",
            interval="1m",
            side=Side.SELL,
            quantity=quantity,
            price=price,
            candle_time=moment,
        ),
        Order(
            client_order_id="c",
            symbol="BTCUSDT",
            side=Side.BUY,
            quantity=quantity,
            price=price,
            created_at=moment,
            updated_at=moment,
        ),
        Trade(
            trade_id="t",
            client_order_id="c",
            symbol="BTCUSDT",
            side=Side.BUY,
            quantity=quantity,
            price=price,
            time=moment,
        ),
        Position(symbol="BTCUSDT", quantity=quantity, realized_pnl=price, updated_at=moment),
        PortfolioSnapshot(time=moment, cash=price, positions_value=price, total_value=price),
    ]
    for value in values:
        assert type(value).model_validate_json(value.model_dump_json()) == value
