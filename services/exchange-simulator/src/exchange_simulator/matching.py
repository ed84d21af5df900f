"""Orders and their execution against the replayed price.

- MARKET orders fill at once, in full, at the current price (the current candle's close so
  far: see `replay.py`), as a taker.
- LIMIT orders that are marketable when placed fill at once at the current price; the others
  rest (GTC) or expire (IOC/FOK) and fill at their own price when a replayed price path
  crosses it.
- The fee is 0.1% of the traded quote amount, always charged in the quote asset (Binance
  charges a buyer in the base asset; one asset keeps the books simple). A buyer must hold the
  cost plus the fee; a seller receives the proceeds minus the fee.
- A `newClientOrderId` is refused (-2010 "Duplicate order sent.") only while an order of the
  same account and symbol with that id is still open: after a fill the id may be reused
  (BINANCE.md pitfall 1).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal

from exchange_simulator import errors
from exchange_simulator.accounts import Account
from exchange_simulator.filters import SymbolRules, fmt

FEE_RATE = Decimal("0.001")
FEE_QUANTUM = Decimal("0.00000001")
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})


@dataclass(frozen=True)
class Fill:
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int
    time_ms: int = 0
    is_maker: bool = False  # a resting LIMIT order filled later; taker when filled on arrival

    def json(self) -> dict[str, object]:
        """One entry of a FULL order response's `fills`."""
        return {
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "commission": fmt(self.commission),
            "commissionAsset": self.commission_asset,
            "tradeId": self.trade_id,
        }


@dataclass
class SimOrder:
    """One order as the simulator keeps it."""

    api_key: str
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str | None
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    cumulative_quote: Decimal = Decimal(0)
    update_ms: int = 0
    locked: Decimal = Decimal(0)  # what this order still holds of the account's balance
    fills: list[Fill] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def _common(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": fmt(self.price),
            "origQty": fmt(self.orig_qty),
            "executedQty": fmt(self.executed_qty),
            "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "cummulativeQuoteQty": fmt(self.cumulative_quote),
            "status": self.status,
            "timeInForce": self.time_in_force or "GTC",
            "type": self.type,
            "side": self.side,
        }

    def ack_json(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "transactTime": self.time_ms,
        }

    def result_json(self) -> dict[str, object]:
        return {
            **self.ack_json(),
            **self._common(),
            "workingTime": self.time_ms,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def full_json(self) -> dict[str, object]:
        return {**self.result_json(), "fills": [f.json() for f in self.fills]}

    def query_json(self) -> dict[str, object]:
        """GET /api/v3/order's answer."""
        return {
            **self._common(),
            "stopPrice": fmt(Decimal(0)),
            "icebergQty": fmt(Decimal(0)),
            "time": self.time_ms,
            "updateTime": self.update_ms or self.time_ms,
            "isWorking": True,
            "workingTime": self.time_ms,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


@dataclass(frozen=True)
class OrderRequest:
    """A parsed POST /api/v3/order."""

    symbol: str
    side: str
    type: str
    quantity: Decimal | None
    quote_order_qty: Decimal | None
    price: Decimal | None
    time_in_force: str | None
    client_order_id: str | None


class Matcher:
    """Places, fills, cancels and finds orders for every account."""

    def __init__(
        self,
        rules: Mapping[str, SymbolRules],
        price: Callable[[str], Decimal],
        avg_price: Callable[[str], Decimal],
        clock_ms: Callable[[], int],
    ) -> None:
        self._rules = rules
        self._price = price
        self._avg_price = avg_price
        self._clock_ms = clock_ms
        self._order_ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self.orders: list[SimOrder] = []
        self._by_series: dict[tuple[str, str], list[SimOrder]] = {}
        self._resting: list[SimOrder] = []
        self._accounts: dict[str, Account] = {}
        # (api_key, symbol) → that account's trades on that symbol, in trade-id order.
        self._trades: dict[tuple[str, str], list[tuple[SimOrder, Fill]]] = {}

    def register(self, account: Account) -> None:
        self._accounts[account.api_key] = account

    # --- placing -------------------------------------------------------------------------

    def place(self, account: Account, request: OrderRequest) -> SimOrder:
        """Validate and execute an order, or raise the `BinanceError` Binance would send."""
        rules = self._rules[request.symbol]
        client_id = request.client_order_id or secrets.token_urlsafe(16)[:22]
        if any(
            o.api_key == account.api_key
            and o.symbol == request.symbol
            and o.client_order_id == client_id
            for o in self._resting
        ):
            raise errors.duplicate_order()
        now = self._clock_ms()
        if request.type == "MARKET":
            order = self._market(account, request, rules, client_id, now)
        else:
            order = self._limit(account, request, rules, client_id, now)
        self.orders.append(order)
        self._by_series.setdefault((account.api_key, request.symbol), []).append(order)
        if order.is_open:
            self._resting.append(order)
        return order

    def _new_order(
        self,
        account: Account,
        request: OrderRequest,
        client_id: str,
        now: int,
        price: Decimal,
        qty: Decimal,
    ) -> SimOrder:
        return SimOrder(
            api_key=account.api_key,
            symbol=request.symbol,
            order_id=next(self._order_ids),
            client_order_id=client_id,
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force,
            price=price,
            orig_qty=qty,
            orig_quote_qty=request.quote_order_qty or Decimal(0),
            time_ms=now,
        )

    def _market(
        self, account: Account, request: OrderRequest, rules: SymbolRules, client_id: str, now: int
    ) -> SimOrder:
        price = self._price(request.symbol)
        if request.quantity is not None:
            qty = request.quantity
        else:
            assert request.quote_order_qty is not None
            qty = rules.floor_to_step(request.quote_order_qty / price)
        rules.check_lot(qty)
        rules.check_market_lot(qty)
        rules.check_notional(qty * self._avg_price(request.symbol), market=True)
        cost = qty * price
        if request.side == "BUY":
            account.require_free(rules.quote_asset, cost + _fee(cost))
        else:
            account.require_free(rules.base_asset, qty)
        order = self._new_order(account, request, client_id, now, Decimal(0), qty)
        self._fill(account, order, rules, price, maker=False)
        return order

    def _limit(
        self, account: Account, request: OrderRequest, rules: SymbolRules, client_id: str, now: int
    ) -> SimOrder:
        assert request.price is not None and request.quantity is not None
        price, qty = request.price, request.quantity
        rules.check_price(price)
        rules.check_lot(qty)
        rules.check_notional(price * qty, market=False)
        order = self._new_order(account, request, client_id, now, price, qty)
        if request.side == "BUY":
            order.locked = price * qty + _fee(price * qty)
            account.lock(rules.quote_asset, order.locked)
        else:
            order.locked = qty
            account.lock(rules.base_asset, qty)
        market = self._price(request.symbol)
        marketable = market <= price if request.side == "BUY" else market >= price
        if marketable:
            self._fill(account, order, rules, market, maker=False)
        elif request.time_in_force in ("IOC", "FOK"):
            self._release(account, order, rules)
            order.status = "EXPIRED"
        return order

    # --- filling -------------------------------------------------------------------------

    def on_price_path(self, symbol: str, low: Decimal, high: Decimal) -> list[SimOrder]:
        """Fill the resting orders of `symbol` whose price the path [low, high] touched."""
        filled = []
        for order in list(self._resting):
            if order.symbol != symbol:
                continue
            crossed = order.price >= low if order.side == "BUY" else order.price <= high
            if crossed:
                account = self._accounts[order.api_key]
                self._fill(account, order, self._rules[symbol], order.price, maker=True)
                filled.append(order)
        return filled

    def _fill(
        self, account: Account, order: SimOrder, rules: SymbolRules, price: Decimal, *, maker: bool
    ) -> None:
        qty = order.orig_qty - order.executed_qty
        quote = qty * price
        fee = _fee(quote)
        self._release(account, order, rules)
        if order.side == "BUY":
            account.balance(rules.quote_asset).free -= quote + fee
            account.balance(rules.base_asset).free += qty
        else:
            account.balance(rules.base_asset).free -= qty
            account.balance(rules.quote_asset).free += quote - fee
        now = self._clock_ms()
        fill = Fill(price, qty, fee, rules.quote_asset, next(self._trade_ids), now, maker)
        order.fills.append(fill)
        self._trades.setdefault((order.api_key, order.symbol), []).append((order, fill))
        order.executed_qty += qty
        order.cumulative_quote += quote
        order.status = "FILLED"
        order.update_ms = now
        if order in self._resting:
            self._resting.remove(order)

    def _release(self, account: Account, order: SimOrder, rules: SymbolRules) -> None:
        if order.locked:
            asset = rules.quote_asset if order.side == "BUY" else rules.base_asset
            account.unlock(asset, order.locked)
            order.locked = Decimal(0)

    # --- querying and cancelling ---------------------------------------------------------

    def find(
        self, api_key: str, symbol: str, order_id: int | None, client_order_id: str | None
    ) -> SimOrder | None:
        """The order by id, or the latest one with that client order id."""
        for order in reversed(self._orders_of(api_key, symbol)):
            if order_id is not None:
                if order.order_id == order_id:
                    return order
            elif order.client_order_id == client_order_id:
                return order
        return None

    def cancel(self, account: Account, order: SimOrder) -> None:
        self._release(account, order, self._rules[order.symbol])
        order.status = "CANCELED"
        order.update_ms = self._clock_ms()
        self._resting.remove(order)

    def open_orders(self, api_key: str, symbol: str | None) -> list[SimOrder]:
        return [
            o
            for o in self._resting
            if o.api_key == api_key and (symbol is None or o.symbol == symbol)
        ]

    def trades(self, api_key: str, symbol: str) -> list[tuple[SimOrder, Fill]]:
        """The account's trades on `symbol`, oldest (lowest id) first."""
        return self._trades.get((api_key, symbol), [])

    def _orders_of(self, api_key: str, symbol: str) -> list[SimOrder]:
        return self._by_series.get((api_key, symbol), [])


def trade_json(order: SimOrder, fill: Fill) -> dict[str, object]:
    """One entry of GET /api/v3/myTrades."""
    return {
        "symbol": order.symbol,
        "id": fill.trade_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "price": fmt(fill.price),
        "qty": fmt(fill.qty),
        "quoteQty": fmt(fill.price * fill.qty),
        "commission": fmt(fill.commission),
        "commissionAsset": fill.commission_asset,
        "time": fill.time_ms,
        "isBuyer": order.side == "BUY",
        "isMaker": fill.is_maker,
        "isBestMatch": True,
    }


def _fee(quote: Decimal) -> Decimal:
    return (quote * FEE_RATE).quantize(FEE_QUANTUM, rounding=ROUND_UP)
