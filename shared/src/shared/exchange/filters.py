"""A symbol's exchangeInfo filters, and the checks ccxt does not do before sending.

ccxt rounds quantities (truncating to LOT_SIZE's stepSize) and prices (to PRICE_FILTER's
tickSize) but never checks NOTIONAL: `check_order` does, on the values after rounding, and
names the filter and the nearest quantity it would accept. A filter value of 0 means the
rule is off (Binance's convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from shared.exchange.errors import FilterRejectedError

__all__ = ["SymbolFilters", "check_order"]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    """The filters of one symbol that the platform's orders can break."""

    symbol: str
    tick_size: Decimal = _ZERO
    min_price: Decimal = _ZERO
    max_price: Decimal = _ZERO
    step_size: Decimal = _ZERO
    min_qty: Decimal = _ZERO
    max_qty: Decimal = _ZERO
    market_step_size: Decimal = _ZERO
    market_min_qty: Decimal = _ZERO
    market_max_qty: Decimal = _ZERO
    min_notional: Decimal = _ZERO
    max_notional: Decimal = _ZERO
    apply_min_to_market: bool = True
    apply_max_to_market: bool = False
    avg_price_mins: int = 5

    @classmethod
    def from_exchange_info(cls, symbol: str, filters: Sequence[Mapping[str, Any]]) -> SymbolFilters:
        """Build from the ``filters`` list of one ``exchangeInfo`` symbol."""
        values: dict[str, Any] = {"symbol": symbol}
        for entry in filters:
            kind = entry.get("filterType")
            if kind == "PRICE_FILTER":
                values.update(
                    tick_size=_d(entry, "tickSize"),
                    min_price=_d(entry, "minPrice"),
                    max_price=_d(entry, "maxPrice"),
                )
            elif kind == "LOT_SIZE":
                values.update(
                    step_size=_d(entry, "stepSize"),
                    min_qty=_d(entry, "minQty"),
                    max_qty=_d(entry, "maxQty"),
                )
            elif kind == "MARKET_LOT_SIZE":
                values.update(
                    market_step_size=_d(entry, "stepSize"),
                    market_min_qty=_d(entry, "minQty"),
                    market_max_qty=_d(entry, "maxQty"),
                )
            elif kind == "NOTIONAL":
                values.update(
                    min_notional=_d(entry, "minNotional"),
                    max_notional=_d(entry, "maxNotional"),
                    apply_min_to_market=bool(entry.get("applyMinToMarket", True)),
                    apply_max_to_market=bool(entry.get("applyMaxToMarket", False)),
                    avg_price_mins=int(entry.get("avgPriceMins", 5)),
                )
            elif kind == "MIN_NOTIONAL":  # the filter NOTIONAL replaced; still on some symbols
                values.update(
                    min_notional=_d(entry, "minNotional"),
                    apply_min_to_market=bool(entry.get("applyToMarket", True)),
                    avg_price_mins=int(entry.get("avgPriceMins", 5)),
                )
        return cls(**values)

    def uses_market_lot(self, market: bool) -> bool:
        """True when MARKET_LOT_SIZE (rather than LOT_SIZE) governs this order's quantity."""
        return market and bool(self.market_step_size or self.market_min_qty or self.market_max_qty)

    def lot(self, market: bool) -> tuple[Decimal, Decimal, Decimal]:
        """(stepSize, minQty, maxQty) for an order type; MARKET_LOT_SIZE where it is set."""
        if self.uses_market_lot(market):
            return self.market_step_size, self.market_min_qty, self.market_max_qty
        return self.step_size, self.min_qty, self.max_qty


def _d(entry: Mapping[str, Any], key: str) -> Decimal:
    return Decimal(str(entry.get(key, "0")))


def _to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    if not step:
        return value
    return (value / step).to_integral_value(rounding=rounding) * step


def _nearest_notional_quantity(
    f: SymbolFilters, price: Decimal, market: bool, too_small: bool
) -> Decimal | None:
    step, min_qty, max_qty = f.lot(market)
    if too_small:
        quantity = _to_step(f.min_notional / price, step or f.step_size, ROUND_CEILING)
        quantity = max(quantity, min_qty)
    else:
        quantity = _to_step(f.max_notional / price, step or f.step_size, ROUND_FLOOR)
    if quantity <= 0 or (max_qty and quantity > max_qty) or quantity < min_qty:
        return None
    return quantity.normalize()


def check_order(
    f: SymbolFilters, quantity: Decimal, price: Decimal | None, *, market: bool
) -> None:
    """Raise `FilterRejectedError` if the (already rounded) order breaks LOT_SIZE,
    PRICE_FILTER or NOTIONAL. ``price`` is the limit price, or for a market order the
    reference price the notional is judged at (None skips NOTIONAL for market orders).
    """
    step, min_qty, max_qty = f.lot(market)
    lot_name = "MARKET_LOT_SIZE" if f.uses_market_lot(market) else "LOT_SIZE"
    if quantity <= 0 or (min_qty and quantity < min_qty):
        nearest = max(min_qty, step) if (min_qty or step) else None
        raise FilterRejectedError(
            f"Filter failure: {lot_name}: quantity {quantity} of {f.symbol} is below the "
            f"minimum {min_qty} (step {step}); the nearest valid quantity is {nearest}",
            filter_name=lot_name,
            nearest_valid_quantity=nearest,
        )
    if max_qty and quantity > max_qty:
        raise FilterRejectedError(
            f"Filter failure: {lot_name}: quantity {quantity} of {f.symbol} is above the "
            f"maximum {max_qty}; the nearest valid quantity is {max_qty}",
            filter_name=lot_name,
            nearest_valid_quantity=max_qty,
        )
    if price is None:
        return
    if not market and (
        (f.min_price and price < f.min_price) or (f.max_price and price > f.max_price)
    ):
        raise FilterRejectedError(
            f"Filter failure: PRICE_FILTER: price {price} of {f.symbol} is outside "
            f"[{f.min_price}, {f.max_price or 'no maximum'}]",
            filter_name="PRICE_FILTER",
        )
    notional = quantity * price
    check_min = f.min_notional and (not market or f.apply_min_to_market)
    check_max = f.max_notional and (not market or f.apply_max_to_market)
    if check_min and notional < f.min_notional:
        nearest = _nearest_notional_quantity(f, price, market, too_small=True)
        raise FilterRejectedError(
            f"Filter failure: NOTIONAL: {quantity} {f.symbol} at {price} is worth "
            f"{notional.normalize()}, below the minimum notional {f.min_notional}; "
            f"the nearest valid quantity is {nearest}",
            filter_name="NOTIONAL",
            nearest_valid_quantity=nearest,
        )
    if check_max and notional > f.max_notional:
        nearest = _nearest_notional_quantity(f, price, market, too_small=False)
        raise FilterRejectedError(
            f"Filter failure: NOTIONAL: {quantity} {f.symbol} at {price} is worth "
            f"{notional.normalize()}, above the maximum notional {f.max_notional}; "
            f"the nearest valid quantity is {nearest}",
            filter_name="NOTIONAL",
            nearest_valid_quantity=nearest,
        )
