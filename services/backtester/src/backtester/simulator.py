"""The simulated spot account of one symbol: cash, FIFO lots, fills and closed round trips.

Long only: a SELL sells at most what is held and never opens a short; a SELL with nothing held
does nothing. Each BUY opens a lot; a SELL closes lots oldest first, and every (part of a) lot it
closes becomes one `TradeRecord`, so a partial exit yields a record for exactly the part sold.
A BUY that cash cannot cover is reduced to the largest quantity cash covers, fee included, and
skipped only when not even one quantity step is affordable; both are counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from shared.fill_model import Fill, FillModel
from shared.models import Side

ZERO = Decimal(0)


class TradeRecord(NamedTuple):
    """One closed round trip (or the part of one that a SELL closed), the spec's fields.

    `pnl` is net of both fees (the entry fee pro rata to the quantity closed, and the exit fee
    pro rata to the part of the SELL); `pnl_pct` is `pnl` over the entry notional.
    A NamedTuple, as `Fill`: as immutable as a frozen dataclass and several times cheaper to
    make (a frozen dataclass sets each of the ten fields through `object.__setattr__`).
    """

    entry_time: datetime
    exit_time: datetime
    symbol: str
    side: str
    entry_price: Decimal
    exit_price: Decimal
    quantity: Decimal
    pnl: Decimal
    pnl_pct: float
    holding_period: timedelta


@dataclass(slots=True)
class Lot:
    """An open BUY, or what remains of it. `fee` is the entry fee of the remaining quantity."""

    time: datetime
    price: Decimal
    quantity: Decimal
    fee: Decimal


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """What is still held at the end of a run, marked to the last close."""

    symbol: str
    quantity: Decimal
    avg_entry_price: Decimal
    entry_time: datetime
    mark_price: Decimal
    market_value: Decimal
    unrealized_pnl: Decimal


class Simulator:
    """Cash and lots of one symbol, filled by a `FillModel`."""

    def __init__(self, symbol: str, initial_balance: Decimal, fill_model: FillModel) -> None:
        if initial_balance <= 0:
            raise ValueError(f"initial balance {initial_balance} must be positive")
        self.symbol = symbol
        self.initial_balance = initial_balance
        self.fill_model = fill_model
        self.reset()

    def reset(self) -> None:
        """Back to the initial balance with nothing held and nothing recorded."""
        self.cash = self.initial_balance
        self.lots: deque[Lot] = deque()
        self.position_quantity = ZERO
        self.trades: list[TradeRecord] = []
        self.fills: list[tuple[datetime, Fill]] = []
        self.fees_paid = ZERO
        self.buys_reduced = 0
        self.buys_skipped = 0
        self.sells_ignored = 0

    def equity(self, price: Decimal) -> Decimal:
        """Cash plus the position marked at `price`."""
        if self.position_quantity:
            return self.cash + self.position_quantity * price
        return self.cash

    @property
    def avg_entry_price(self) -> Decimal:
        """The quantity-weighted entry price of the open lots (0 when flat)."""
        if not self.position_quantity:
            return ZERO
        cost = sum((lot.price * lot.quantity for lot in self.lots), ZERO)
        return cost / self.position_quantity

    def buy(self, time: datetime, quantity: Decimal, reference_price: Decimal) -> Fill | None:
        """Buy up to `quantity` at `reference_price`; reduced to what cash covers."""
        model = self.fill_model
        fill = model.fill(Side.BUY, quantity, reference_price)
        if fill.notional + fill.fee > self.cash:
            affordable = model.affordable_buy_quantity(self.cash, reference_price)
            if affordable <= 0:
                self.buys_skipped += 1
                return None
            self.buys_reduced += 1
            fill = model.fill(Side.BUY, affordable, reference_price)
        self.cash -= fill.notional + fill.fee
        self.fees_paid += fill.fee
        self.position_quantity += fill.quantity
        self.lots.append(Lot(time, fill.price, fill.quantity, fill.fee))
        self.fills.append((time, fill))
        return fill

    def sell(self, time: datetime, quantity: Decimal, reference_price: Decimal) -> Fill | None:
        """Sell up to `quantity` (at most what is held) and record the lots it closes."""
        quantity = min(quantity, self.position_quantity)
        if quantity <= 0:
            self.sells_ignored += 1
            return None
        fill = self.fill_model.fill(Side.SELL, quantity, reference_price)
        self.cash += fill.notional - fill.fee
        self.fees_paid += fill.fee
        self.position_quantity -= quantity
        self.fills.append((time, fill))
        remaining = quantity
        while remaining > 0:
            lot = self.lots[0]
            closed = min(lot.quantity, remaining)
            entry_fee = lot.fee if closed == lot.quantity else lot.fee * closed / lot.quantity
            exit_fee = fill.fee if closed == quantity else fill.fee * closed / quantity
            self._record(lot, closed, entry_fee, exit_fee, time, fill.price)
            if closed == lot.quantity:
                self.lots.popleft()
            else:
                lot.quantity -= closed
                lot.fee -= entry_fee
            remaining -= closed
        return fill

    def open_position(self, mark_price: Decimal) -> OpenPosition | None:
        """The position still held, marked to `mark_price`, or None when flat."""
        if not self.position_quantity:
            return None
        avg = self.avg_entry_price
        value = self.position_quantity * mark_price
        entry_fees = sum((lot.fee for lot in self.lots), ZERO)
        return OpenPosition(
            symbol=self.symbol,
            quantity=self.position_quantity,
            avg_entry_price=avg,
            entry_time=self.lots[0].time,
            mark_price=mark_price,
            market_value=value,
            unrealized_pnl=value - avg * self.position_quantity - entry_fees,
        )

    def _record(
        self,
        lot: Lot,
        quantity: Decimal,
        entry_fee: Decimal,
        exit_fee: Decimal,
        time: datetime,
        exit_price: Decimal,
    ) -> None:
        entry_notional = lot.price * quantity
        pnl = exit_price * quantity - entry_notional - entry_fee - exit_fee
        self.trades.append(
            TradeRecord(
                entry_time=lot.time,
                exit_time=time,
                symbol=self.symbol,
                side="LONG",
                entry_price=lot.price,
                exit_price=exit_price,
                quantity=quantity,
                pnl=pnl,
                pnl_pct=float(pnl / entry_notional) if entry_notional else 0.0,
                holding_period=time - lot.time,
            )
        )
