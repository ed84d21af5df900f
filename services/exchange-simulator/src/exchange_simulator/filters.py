"""A symbol's trading rules: the exchangeInfo filters and the checks Binance applies.

A rule whose value is 0 is off. A failure answers -1013 "Filter failure: <NAME>".
Defaults are derived from the replayed prices so any data set gets plausible rules: the tick
is the finest price step seen in the data, the lot step keeps one step worth about 0.1–1 of
the quote asset (BTCUSDT: 0.00001, as on Binance), minNotional is 5 as on Binance's USDT pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from exchange_simulator import errors

KNOWN_QUOTES = ("USDT", "FDUSD", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
ZERO = Decimal(0)


def split_symbol(symbol: str) -> tuple[str, str]:
    """Base and quote asset of a symbol such as BTCUSDT, by its known quote suffix."""
    for quote in KNOWN_QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise ValueError(
        f"cannot tell the quote asset of {symbol!r}: it should end with one of "
        f"{', '.join(KNOWN_QUOTES)}"
    )


def fmt(value: Decimal | int) -> str:
    """A decimal as Binance writes it: 8 decimals, as a string."""
    return f"{value:.8f}"


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    return step == 0 or value % step == 0


@dataclass(frozen=True)
class SymbolRules:
    """PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE and NOTIONAL of one symbol."""

    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal = Decimal(5)
    max_notional: Decimal = Decimal(9_000_000)
    apply_min_to_market: bool = True
    apply_max_to_market: bool = False
    avg_price_mins: int = 5

    @classmethod
    def derived(cls, symbol: str, prices: Iterable[Decimal]) -> SymbolRules:
        """Plausible Binance-like rules for a symbol trading at `prices`."""
        base, quote = split_symbol(symbol)
        values = [p for p in prices if p > 0]
        decimals = max((_decimals(p) for p in values), default=2)
        tick = Decimal(1).scaleb(-min(max(decimals, 2), 8))
        typical = max(values) if values else Decimal(1)
        step = Decimal(1).scaleb(-min(math.floor(math.log10(typical)) + 1, 8))
        return cls(
            symbol=symbol,
            base_asset=base,
            quote_asset=quote,
            tick_size=tick,
            min_price=tick,
            max_price=Decimal(1_000_000),
            step_size=step,
            min_qty=step,
            max_qty=step * 900_000_000,
            market_step_size=ZERO,
            market_min_qty=ZERO,
            market_max_qty=step * 10_000_000,
        )

    def check_price(self, price: Decimal) -> None:
        if (
            (self.min_price and price < self.min_price)
            or (self.max_price and price > self.max_price)
            or not _is_multiple(price, self.tick_size)
        ):
            raise errors.filter_failure("PRICE_FILTER")

    def check_lot(self, qty: Decimal) -> None:
        if (
            (self.min_qty and qty < self.min_qty)
            or (self.max_qty and qty > self.max_qty)
            or not _is_multiple(qty - self.min_qty, self.step_size)
        ):
            raise errors.filter_failure("LOT_SIZE")

    def check_market_lot(self, qty: Decimal) -> None:
        if (
            (self.market_min_qty and qty < self.market_min_qty)
            or (self.market_max_qty and qty > self.market_max_qty)
            or not _is_multiple(qty - self.market_min_qty, self.market_step_size)
        ):
            raise errors.filter_failure("MARKET_LOT_SIZE")

    def check_notional(self, notional: Decimal, *, market: bool) -> None:
        check_min = self.min_notional and (not market or self.apply_min_to_market)
        check_max = self.max_notional and (not market or self.apply_max_to_market)
        if (check_min and notional < self.min_notional) or (
            check_max and notional > self.max_notional
        ):
            raise errors.filter_failure("NOTIONAL")

    def floor_to_step(self, qty: Decimal) -> Decimal:
        """`qty` truncated to the lot step (how a quoteOrderQty becomes a quantity)."""
        step = self.market_step_size or self.step_size
        if not step:
            return qty
        return (qty // step) * step

    def filters_json(self) -> list[dict[str, object]]:
        """The `filters` array of exchangeInfo, in Binance's field names."""
        return [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(self.min_price),
                "maxPrice": fmt(self.max_price),
                "tickSize": fmt(self.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(self.min_qty),
                "maxQty": fmt(self.max_qty),
                "stepSize": fmt(self.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": fmt(self.market_min_qty),
                "maxQty": fmt(self.market_max_qty),
                "stepSize": fmt(self.market_step_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(self.min_notional),
                "applyMinToMarket": self.apply_min_to_market,
                "maxNotional": fmt(self.max_notional),
                "applyMaxToMarket": self.apply_max_to_market,
                "avgPriceMins": self.avg_price_mins,
            },
        ]

    def symbol_json(self) -> dict[str, object]:
        """This symbol's entry in exchangeInfo's `symbols`."""
        return {
            "symbol": self.symbol,
            "status": "TRADING",
            "baseAsset": self.base_asset,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote_asset,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            # Only the types the simulator executes.
            "orderTypes": ["LIMIT", "MARKET"],
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "amendAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": self.filters_json(),
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_MAKER"],
        }


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0
