"""What the adapter is asked to place (`OrderRequest`) and what it answers (`OrderResult`),
and the fills of an order found by lookup (`GET /api/v3/myTrades` → `Trade`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.exchange.client_order_id import client_order_id_for_signal
from shared.models import Order, OrderType, Side, Signal, Trade

__all__ = ["OrderRequest", "OrderResult", "order_with_trades", "parse_my_trades"]


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What to place. ``reference_price`` judges a MARKET order's NOTIONAL before sending
    (the signal's price); without it the exchange's average price is fetched."""

    symbol: str
    side: Side
    quantity: Decimal
    client_order_id: str
    type: OrderType = OrderType.MARKET
    price: Decimal | None = None
    reference_price: Decimal | None = None
    signal_id: str | None = None
    strategy: str | None = None

    def __post_init__(self) -> None:
        if self.type is OrderType.LIMIT and self.price is None:
            raise ValueError(f"a LIMIT order needs a price ({self.client_order_id})")
        if self.type is OrderType.MARKET and self.price is not None:
            # ccxt turns a market buy with a price into a quote-amount order (pitfall 3).
            raise ValueError(
                f"a MARKET order takes no price ({self.client_order_id}); "
                "pass it as reference_price for the NOTIONAL check"
            )

    @classmethod
    def from_signal(
        cls,
        signal: Signal,
        *,
        quantity: Decimal | None = None,
        order_type: OrderType = OrderType.MARKET,
        price: Decimal | None = None,
    ) -> OrderRequest:
        """The order for ``signal``; its client order id is derived from the signal id."""
        return cls(
            symbol=signal.symbol,
            side=signal.side,
            quantity=quantity if quantity is not None else signal.quantity,
            client_order_id=client_order_id_for_signal(signal.id),
            type=order_type,
            price=price,
            reference_price=signal.price,
            signal_id=signal.id,
            strategy=signal.strategy,
        )


@dataclass(frozen=True, slots=True)
class OrderResult:
    """The exchange's view of the order. ``found_by_lookup`` is True when the order was
    found by its client order id (placed earlier, or its create answer was lost) rather than
    taken from this call's create answer; its fills then come from the account's trade list
    (``GET /api/v3/myTrades``), with Binance's exact prices and fees."""

    order: Order
    trades: tuple[Trade, ...]
    found_by_lookup: bool = False


def parse_my_trades(rows: Sequence[Mapping[str, Any]], order: Order) -> tuple[Trade, ...]:
    """The ``GET /api/v3/myTrades`` rows of ``order`` as `Trade`s, decimals kept exact.

    Rows of other orders are left out; a row without Binance's documented fields, or with a
    float where Binance sends a decimal string, raises ``ValueError`` naming the field.
    """
    trades = []
    for row in rows:
        if str(_get(row, "orderId")) != order.exchange_order_id:
            continue
        is_buyer = _get(row, "isBuyer")
        if not isinstance(is_buyer, bool):
            raise ValueError(f"myTrades row: 'isBuyer' must be true or false, got {is_buyer!r}")
        trades.append(
            Trade(
                trade_id=str(_get(row, "id")),
                client_order_id=order.client_order_id,
                symbol=str(_get(row, "symbol")),
                side=Side.BUY if is_buyer else Side.SELL,
                quantity=_exact(row, "qty"),
                price=_exact(row, "price"),
                fee=_exact(row, "commission"),
                fee_asset=str(_get(row, "commissionAsset")),
                time=datetime.fromtimestamp(int(_get(row, "time")) / 1000, tz=UTC),
            )
        )
    return tuple(trades)


def order_with_trades(order: Order, trades: Sequence[Trade]) -> Order:
    """``order`` (as a query answers it: no fills, no fee) completed from its trades: the fee
    (when all in one asset, as on a create answer), its asset and the average fill price."""
    if not trades:
        return order
    filled = sum((t.quantity for t in trades), Decimal(0))
    average = sum((t.quantity * t.price for t in trades), Decimal(0)) / filled
    assets = {t.fee_asset for t in trades}
    fee_asset = assets.pop() if len(assets) == 1 else None
    fee = sum((t.fee for t in trades), Decimal(0)) if fee_asset is not None else Decimal(0)
    return order.model_copy(update={"avg_fill_price": average, "fee": fee, "fee_asset": fee_asset})


def _get(row: Mapping[str, Any], key: str) -> Any:
    try:
        return row[key]
    except (KeyError, TypeError):
        raise ValueError(f"myTrades row: missing field {key!r}") from None


def _exact(row: Mapping[str, Any], key: str) -> Decimal:
    value = _get(row, key)
    if isinstance(value, float):
        raise ValueError(f"myTrades row: field {key!r} is a float ({value!r}); expected a string")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"myTrades row: field {key!r} is not a decimal: {value!r}") from None
