"""Domain models: the events on the bus and what the repositories return.

Money and quantities are `Decimal`, times are UTC-aware. The models are frozen: an event
is a fact, and a changed order is a new `Order` value (`order.model_copy(update=...)`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalised to UTC; a naive datetime is rejected."""

# Binance's fixed-length kline intervals. "1M" (a calendar month) is left out: it has no
# fixed length, so gap detection and grid checks cannot be defined on it.
INTERVALS: dict[str, timedelta] = {
    "1s": timedelta(seconds=1),
    "1m": timedelta(minutes=1),
    "3m": timedelta(minutes=3),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "2h": timedelta(hours=2),
    "4h": timedelta(hours=4),
    "6h": timedelta(hours=6),
    "8h": timedelta(hours=8),
    "12h": timedelta(hours=12),
    "1d": timedelta(days=1),
    "3d": timedelta(days=3),
    "1w": timedelta(weeks=1),
}


def interval_delta(interval: str) -> timedelta:
    """The length of a kline interval such as "1m" or "4h"."""
    try:
        return INTERVALS[interval]
    except KeyError:
        raise ValueError(
            f"unknown interval {interval!r}: expected one of {', '.join(INTERVALS)}"
        ) from None


def _check_interval(value: str) -> str:
    interval_delta(value)
    return value


def _check_symbol(value: str) -> str:
    if not value.isalnum() or not value.isupper():
        raise ValueError(f"symbol {value!r} must be upper-case letters and digits, e.g. BTCUSDT")
    return value


Interval = Annotated[str, AfterValidator(_check_interval)]
Symbol = Annotated[str, AfterValidator(_check_symbol)]
NonNegative = Annotated[Decimal, Field(ge=0)]


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class OrderStatus(StrEnum):
    """An order's life: recorded as PENDING before it is sent, SENT once the exchange has it."""

    PENDING = "PENDING"
    SENT = "SENT"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATUSES


_FINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Candle(_Model):
    """One kline. `open_time` is the exchange's open time; `closed` is Binance's `x` flag."""

    symbol: Symbol
    interval: Interval
    open_time: UtcDatetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: NonNegative
    quote_volume: Decimal | None = None
    trades: int | None = None
    closed: bool = True

    @property
    def close_time(self) -> datetime:
        """Binance's close time: the last millisecond of the interval."""
        return self.open_time + interval_delta(self.interval) - timedelta(milliseconds=1)


class Signal(_Model):
    """A strategy's decision on one candle. `id` is deterministic (see `shared.strategy`)."""

    id: str = Field(min_length=1, max_length=64)
    strategy: str
    symbol: Symbol
    interval: Interval
    side: Side
    quantity: Annotated[Decimal, Field(gt=0)]
    price: Decimal
    candle_time: UtcDatetime
    reason: str = ""


class Order(_Model):
    """An order as the platform knows it, keyed by its client order id."""

    client_order_id: str = Field(min_length=1, max_length=36)
    signal_id: str | None = None
    strategy: str | None = None
    symbol: Symbol
    side: Side
    type: OrderType = OrderType.MARKET
    quantity: Annotated[Decimal, Field(gt=0)]
    price: Decimal | None = None
    status: OrderStatus = OrderStatus.PENDING
    filled_quantity: NonNegative = Decimal(0)
    avg_fill_price: Decimal | None = None
    fee: NonNegative = Decimal(0)
    fee_asset: str | None = None
    exchange_order_id: str | None = None
    reason: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class Trade(_Model):
    """One fill of an order."""

    trade_id: str
    client_order_id: str
    symbol: Symbol
    side: Side
    quantity: Annotated[Decimal, Field(gt=0)]
    price: Decimal
    fee: NonNegative = Decimal(0)
    fee_asset: str | None = None
    time: UtcDatetime


class Position(_Model):
    """A spot holding of one symbol, with its average entry price and PnL."""

    symbol: Symbol
    quantity: NonNegative
    avg_entry_price: NonNegative = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    unrealized_pnl: Decimal = Decimal(0)
    fees_paid: NonNegative = Decimal(0)
    last_price: Decimal | None = None
    updated_at: UtcDatetime


class PortfolioSnapshot(_Model):
    """The whole portfolio's value at one moment."""

    time: UtcDatetime
    cash: Decimal
    positions_value: Decimal
    total_value: Decimal
    realized_pnl: Decimal = Decimal(0)
    unrealized_pnl: Decimal = Decimal(0)
    fees_paid: NonNegative = Decimal(0)


class CandleGap(_Model):
    """A run of missing candles in a series: open times `start`..`end`, both inclusive."""

    start: UtcDatetime
    end: UtcDatetime
    missing_candles: Annotated[int, Field(ge=1)]


class CandleSeriesSummary(_Model):
    """What the database holds for one symbol and interval."""

    symbol: Symbol
    interval: Interval
    first: UtcDatetime
    last: UtcDatetime
    rows: Annotated[int, Field(ge=1)]
    gaps: Annotated[int, Field(ge=0)]
    missing_candles: Annotated[int, Field(ge=0)]
