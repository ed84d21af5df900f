"""The portfolio's accounting, pure: fills in, positions, PnL and snapshots out.

It books fills exactly as the backtester's `Simulator` does, so a dry run and a backtest over
the same fills agree to the last Decimal digit:

- each BUY opens a lot (price, quantity, its fee); a SELL closes lots oldest first (FIFO);
- the average entry price is the quantity-weighted price of the open lots;
- realized PnL of a closed (part of a) lot = exit − entry notional − its share of the entry
  fee − its share of the SELL's fee;
- unrealized PnL = quantity × mark − open lots' cost − their remaining entry fees;
- cash = initial cash − BUY notional and fee + SELL notional − fee; every fee is in USDT
  (the quote asset), as the shared fill model charges it.

So total value − initial cash == realized + unrealized PnL, always. Long only, as on spot: a
SELL of more than is held (possible only with holdings from outside the platform) closes what
is held and its excess is booked as cash only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from shared.models import PortfolioSnapshot, Position, Side, Trade

ZERO = Decimal(0)


@dataclass(slots=True)
class Lot:
    """An open BUY, or what remains of it; `fee` is the entry fee of the remaining quantity."""

    time: datetime
    price: Decimal
    quantity: Decimal
    fee: Decimal


@dataclass(slots=True)
class SymbolBook:
    """One symbol's lots, realized PnL, fees and latest mark."""

    symbol: str
    lots: deque[Lot] = field(default_factory=deque)
    quantity: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO
    mark: Decimal | None = None
    updated_at: datetime | None = None

    @property
    def avg_entry_price(self) -> Decimal:
        """Quantity-weighted entry price of the open lots (0 when flat)."""
        if not self.quantity:
            return ZERO
        return sum((lot.price * lot.quantity for lot in self.lots), ZERO) / self.quantity

    @property
    def market_value(self) -> Decimal:
        """Quantity × mark (the last fill price until a candle marks it)."""
        return self.quantity * self.mark if self.quantity and self.mark is not None else ZERO

    @property
    def unrealized_pnl(self) -> Decimal:
        if not self.quantity or self.mark is None:
            return ZERO
        # Computed as the Simulator does (through the average), so both round alike.
        entry_fees = sum((lot.fee for lot in self.lots), ZERO)
        value = self.quantity * self.mark
        return value - self.avg_entry_price * self.quantity - entry_fees

    def buy(self, trade: Trade) -> None:
        self.lots.append(Lot(trade.time, trade.price, trade.quantity, trade.fee))
        self.quantity += trade.quantity

    def sell(self, trade: Trade) -> None:
        sold = trade.quantity
        closing = min(sold, self.quantity)
        remaining = closing
        while remaining > 0:
            lot = self.lots[0]
            closed = min(lot.quantity, remaining)
            entry_fee = lot.fee if closed == lot.quantity else lot.fee * closed / lot.quantity
            exit_fee = trade.fee if closed == sold else trade.fee * closed / sold
            self.realized_pnl += trade.price * closed - lot.price * closed - entry_fee - exit_fee
            if closed == lot.quantity:
                self.lots.popleft()
            else:
                lot.quantity -= closed
                lot.fee -= entry_fee
            remaining -= closed
        if closing < sold:  # the excess's share of the fee is a cost all the same
            self.realized_pnl -= trade.fee * (sold - closing) / sold
        self.quantity -= closing

    def position(self) -> Position:
        assert self.updated_at is not None
        return Position(
            symbol=self.symbol,
            quantity=self.quantity,
            avg_entry_price=self.avg_entry_price,
            realized_pnl=self.realized_pnl,
            unrealized_pnl=self.unrealized_pnl,
            fees_paid=self.fees_paid,
            last_price=self.mark,
            updated_at=self.updated_at,
        )


class Portfolio:
    """Cash and one `SymbolBook` per traded symbol; each trade is booked once."""

    def __init__(self, initial_cash: Decimal) -> None:
        if initial_cash <= 0:
            raise ValueError(f"initial cash {initial_cash} must be positive")
        self.initial_cash = initial_cash
        self.cash = initial_cash
        self.books: dict[str, SymbolBook] = {}
        self._applied: set[tuple[str, str]] = set()

    def has_applied(self, trade: Trade) -> bool:
        """Whether this trade (by symbol and trade id) is already booked."""
        return (trade.symbol, trade.trade_id) in self._applied

    def apply(self, trade: Trade) -> bool:
        """Book one fill; False (changing nothing) when it was booked before."""
        key = (trade.symbol, trade.trade_id)
        if key in self._applied:
            return False
        self._applied.add(key)
        book = self.books.get(trade.symbol)
        if book is None:
            book = self.books[trade.symbol] = SymbolBook(trade.symbol)
        notional = trade.quantity * trade.price
        if trade.side is Side.BUY:
            self.cash -= notional + trade.fee
            book.buy(trade)
        else:
            self.cash += notional - trade.fee
            book.sell(trade)
        book.fees_paid += trade.fee
        if book.mark is None or book.updated_at is None or trade.time >= book.updated_at:
            book.mark = trade.price
            book.updated_at = trade.time
        return True

    def mark(self, symbol: str, price: Decimal, time: datetime) -> SymbolBook | None:
        """Mark a traded symbol to `price` (a candle's close); None if it was never traded."""
        book = self.books.get(symbol)
        if book is None:
            return None
        if book.updated_at is None or time >= book.updated_at:
            book.mark = price
            book.updated_at = time
        return book

    def positions(self) -> list[Position]:
        """Every traded symbol's position (flat ones too), by symbol."""
        return [self.books[symbol].position() for symbol in sorted(self.books)]

    @property
    def positions_value(self) -> Decimal:
        return sum((book.market_value for book in self.books.values()), ZERO)

    @property
    def total_value(self) -> Decimal:
        """Cash plus every position at its mark."""
        return self.cash + self.positions_value

    def snapshot(self, time: datetime) -> PortfolioSnapshot:
        """The whole portfolio's value at `time`."""
        books = self.books.values()
        return PortfolioSnapshot(
            time=time,
            cash=self.cash,
            positions_value=self.positions_value,
            total_value=self.total_value,
            realized_pnl=sum((b.realized_pnl for b in books), ZERO),
            unrealized_pnl=sum((b.unrealized_pnl for b in books), ZERO),
            fees_paid=sum((b.fees_paid for b in books), ZERO),
        )
