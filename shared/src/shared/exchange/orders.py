"""What the adapter is asked to place (`OrderRequest`) and what it answers (`OrderResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from shared.exchange.client_order_id import client_order_id_for_signal
from shared.models import Order, OrderType, Side, Signal, Trade

__all__ = ["OrderRequest", "OrderResult"]


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
    taken from this call's create answer; such an order comes without its fills."""

    order: Order
    trades: tuple[Trade, ...]
    found_by_lookup: bool = False
