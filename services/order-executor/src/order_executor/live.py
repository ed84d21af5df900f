"""DRY_RUN=false: orders go to the exchange through `shared.exchange` (and its breaker).

`BinanceExchange.submit_order` looks the client order id up before creating and again after
any create whose outcome is unknown (a dropped response), so sending a stored order twice —
a redelivered signal, a restart after a crash between sending and recording — finds the first
one instead of placing another. An order found by lookup comes without its fills: one fill
is recorded at its average price, with the fee estimated by the fill model's rate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from shared.exchange import (
    BinanceExchange,
    FilterRejectedError,
    OrderRejectedError,
    OrderRequest,
)
from shared.models import Order, OrderStatus, Trade

from order_executor.executor import QUOTE_ASSET, Outcome

__all__ = ["LiveBroker"]


class LiveBroker:
    """Sends stored orders to the exchange; reports the exchange's view as an `Outcome`.

    Transient failures (network, 5xx, an open circuit breaker, a trading halt) propagate:
    the order stays PENDING and is taken up again when the signal is redelivered or the
    executor restarts. Rejections (filters, insufficient balance) end the order REJECTED.
    """

    def __init__(
        self,
        exchange: BinanceExchange,
        *,
        fee_rate: Decimal,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.exchange = exchange
        self.fee_rate = fee_rate
        self.clock = clock

    async def execute(self, order: Order) -> Outcome:
        """Send `order` (found instead if the exchange already has it)."""
        request = OrderRequest(
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            client_order_id=order.client_order_id,
            reference_price=order.price,
            signal_id=order.signal_id,
            strategy=order.strategy,
        )
        try:
            result = await self.exchange.submit_order(request)
        except (FilterRejectedError, OrderRejectedError) as exc:
            rejected = order.model_copy(
                update={
                    "status": OrderStatus.REJECTED,
                    "reason": str(exc),
                    "updated_at": self.clock(),
                }
            )
            return Outcome(rejected)
        remote = result.order
        merged = order.model_copy(
            update={
                "status": remote.status,
                "filled_quantity": remote.filled_quantity,
                "avg_fill_price": remote.avg_fill_price,
                "fee": remote.fee,
                "fee_asset": remote.fee_asset,
                "exchange_order_id": remote.exchange_order_id,
                "updated_at": self.clock(),
            }
        )
        trades = result.trades
        if not trades and remote.filled_quantity > 0 and remote.avg_fill_price is not None:
            notional = remote.filled_quantity * remote.avg_fill_price
            trades = (
                Trade(
                    trade_id=f"{remote.exchange_order_id or order.client_order_id}-lookup",
                    client_order_id=order.client_order_id,
                    symbol=order.symbol,
                    side=order.side,
                    quantity=remote.filled_quantity,
                    price=remote.avg_fill_price,
                    fee=notional * self.fee_rate,
                    fee_asset=QUOTE_ASSET,
                    time=remote.updated_at,
                ),
            )
            merged = merged.model_copy(
                update={"fee": notional * self.fee_rate, "fee_asset": QUOTE_ASSET}
            )
        return Outcome(merged, trades)

    async def reconcile(self, order: Order) -> Outcome:
        """An order left unfinished by a crash: found by its client order id, else sent."""
        return await self.execute(order)
