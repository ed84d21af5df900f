"""A paper spot account over several symbols: USDT cash and FIFO lots, filled by `FillModel`.

The dry-run order executor keeps one, and it fills exactly as the backtester's `Simulator`
does for one symbol: a BUY that cash cannot cover is reduced to the largest quantity cash
covers (fee included) and skipped when not one quantity step is affordable; a SELL sells at
most what is held; the average entry price is that of the open FIFO lots (what the stop loss
compares against). Pure: no IO, no clock. `replay` rebuilds it from stored fills.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from shared.fill_model import Fill, FillModel
from shared.models import Side, Trade

ZERO = Decimal(0)

__all__ = ["PaperAccount", "PaperLot"]


@dataclass(slots=True)
class PaperLot:
    """An open BUY, or what remains of it."""

    price: Decimal
    quantity: Decimal


class PaperAccount:
    """Cash and per-symbol lots; `buy`/`sell` return the `Fill` or None when nothing trades."""

    def __init__(self, initial_cash: Decimal, fill_model: FillModel) -> None:
        if initial_cash <= 0:
            raise ValueError(f"initial cash {initial_cash} must be positive")
        self.initial_cash = initial_cash
        self.fill_model = fill_model
        self.cash = initial_cash
        self.lots: dict[str, deque[PaperLot]] = {}
        self.quantities: dict[str, Decimal] = {}

    def position(self, symbol: str) -> Decimal:
        """The quantity of `symbol` held."""
        return self.quantities.get(symbol, ZERO)

    def avg_entry_price(self, symbol: str) -> Decimal:
        """The quantity-weighted price of the open lots of `symbol` (0 when flat)."""
        held = self.position(symbol)
        if not held:
            return ZERO
        cost = sum((lot.price * lot.quantity for lot in self.lots[symbol]), ZERO)
        return cost / held

    def equity(self, prices: Mapping[str, Decimal]) -> Decimal:
        """Cash plus every position marked at `prices` (a symbol without a price counts 0)."""
        value = self.cash
        for symbol, held in self.quantities.items():
            if held and symbol in prices:
                value += held * prices[symbol]
        return value

    def buy(self, symbol: str, quantity: Decimal, reference_price: Decimal) -> Fill | None:
        """Buy up to `quantity` at `reference_price`, reduced to what cash covers."""
        model = self.fill_model
        fill = model.fill(Side.BUY, quantity, reference_price)
        if fill.notional + fill.fee > self.cash:
            affordable = model.affordable_buy_quantity(self.cash, reference_price)
            if affordable <= 0:
                return None
            fill = model.fill(Side.BUY, affordable, reference_price)
        self.apply(symbol, fill)
        return fill

    def sell(self, symbol: str, quantity: Decimal, reference_price: Decimal) -> Fill | None:
        """Sell up to `quantity`, at most what is held."""
        quantity = min(quantity, self.position(symbol))
        if quantity <= 0:
            return None
        fill = self.fill_model.fill(Side.SELL, quantity, reference_price)
        self.apply(symbol, fill)
        return fill

    def apply(self, symbol: str, fill: Fill) -> None:
        """Book an executed fill (ours, or one the exchange reported)."""
        self.cash += fill.cash_delta
        lots = self.lots.setdefault(symbol, deque())
        if fill.side is Side.BUY:
            lots.append(PaperLot(fill.price, fill.quantity))
            self.quantities[symbol] = self.position(symbol) + fill.quantity
            return
        remaining = min(fill.quantity, self.position(symbol))
        self.quantities[symbol] = self.position(symbol) - remaining
        while remaining > 0 and lots:
            lot = lots[0]
            closed = min(lot.quantity, remaining)
            lot.quantity -= closed
            remaining -= closed
            if not lot.quantity:
                lots.popleft()

    @classmethod
    def replay(
        cls, initial_cash: Decimal, fill_model: FillModel, trades: Iterable[Trade]
    ) -> PaperAccount:
        """The account after `trades` (in time order), e.g. the stored fills after a restart."""
        account = cls(initial_cash, fill_model)
        for trade in trades:
            notional = trade.quantity * trade.price
            account.apply(
                trade.symbol, Fill(trade.side, trade.quantity, trade.price, notional, trade.fee)
            )
        return account
