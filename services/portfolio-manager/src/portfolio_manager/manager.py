"""The portfolio manager: books fills from the orders stream, marks to candles, snapshots.

**Fills.** The order executor stores each order and its fills (`add_trade`) before it
publishes them on the orders stream, so the trades table is the ledger. At start the
`Portfolio` is rebuilt from every stored trade; afterwards each `Trade` event (and each
filled `Order`, whose stored trades are looked up) is booked at most once: a trade already
booked (same symbol and trade id) changes nothing, and the trade (stored if the executor had
not) and the symbol's new position are written in one transaction.

**Marks.** Each closed candle marks its symbol to the close; the position row (last price,
unrealized PnL) is updated and the ``portfolio_value`` / ``unrealized_pnl`` gauges are set.

**The clock is candle time.** The portfolio's clock is the close time of the latest candle
seen, never the wall clock, so a replay at any speed takes the same snapshots and sends the
same daily summaries as the live run did. A snapshot is stored whenever the clock crosses a
multiple of the snapshot interval (counted from 00:00 UTC) and at every 00:00 UTC, where the
daily summary (positions and the day's change in total value) goes to Telegram. After a
restart the clock resumes from the latest stored snapshot, so none is taken twice. When no
candles arrive (the data collector is down), no snapshots are taken either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import structlog
from shared.db import (
    Writer,
    add_snapshot,
    add_trade,
    latest_snapshot,
    list_positions,
    list_trades,
    store_marks,
    upsert_position,
)
from shared.metrics import PORTFOLIO_VALUE, UNREALIZED_PNL
from shared.models import Candle, Order, OrderStatus, PortfolioSnapshot, Trade, interval_delta
from shared.notifier import TelegramNotifier
from shared.repositories.portfolio import snapshots_between
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from portfolio_manager.portfolio import Portfolio

SERVICE = "portfolio-manager"
DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MOMENT = timedelta(milliseconds=1)

log = structlog.get_logger("portfolio_manager")


def floor_time(moment: datetime, step: timedelta) -> datetime:
    """The latest multiple of `step` since the epoch (so of a day: 00:00 UTC) at or before."""
    return _EPOCH + ((moment - _EPOCH) // step) * step


class PortfolioManager:
    """Handlers for the orders and candles streams, over one `Portfolio`."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        initial_cash: Decimal,
        snapshot_interval: timedelta,
        notifier: TelegramNotifier | None = None,
        writer: Writer | None = None,
    ) -> None:
        if snapshot_interval <= timedelta(0):
            raise ValueError("the snapshot interval must be positive")
        self.sessions = sessions
        self.writer = writer or Writer.for_sessions(sessions)
        self.initial_cash = initial_cash
        self.snapshot_interval = snapshot_interval
        self.notifier = notifier
        self.portfolio = Portfolio(initial_cash)
        self.clock: datetime | None = None
        self.snapshot_time: datetime | None = None
        """The time of the last snapshot taken (or found at start)."""
        self._last_trade_time: datetime | None = None
        self.day_start_value = initial_cash
        self._lock = asyncio.Lock()
        self._stale = False

    async def start(self) -> None:
        """Rebuild the portfolio from the stored trades, marks and snapshots."""
        async with self._lock, self.sessions.begin() as session:
            await self._rebuild(session)
            # Trades stored by the executor after this service last wrote a position (it
            # died in between) are in the rebuilt books: write every position back.
            for book in self.portfolio.books.values():
                await upsert_position(session, book.position())
            latest = await latest_snapshot(session)
            if latest is not None:
                self.clock = self.snapshot_time = latest.time
                midnight = floor_time(latest.time, DAY)
                at_midnight = await snapshots_between(session, midnight, midnight + _MOMENT)
                if at_midnight:
                    self.day_start_value = at_midnight[0].total_value
        self._set_gauges()
        log.info(
            "portfolio rebuilt",
            symbols=sorted(self.portfolio.books),
            total_value=str(self.portfolio.total_value),
            clock=None if self.clock is None else self.clock.isoformat(),
        )

    async def _refresh(self) -> None:
        """Rebuild from the database if a failed write left the memory ahead of it."""
        if self._stale:
            async with self.sessions() as session:
                await self._rebuild(session)
            self._stale = False

    async def _rebuild(self, session: AsyncSession) -> None:
        portfolio = Portfolio(self.initial_cash)
        for trade in await list_trades(session):
            portfolio.apply(trade)
            self._note_trade_time(trade)
        for position in await list_positions(session):
            if position.last_price is not None:
                portfolio.mark(position.symbol, position.last_price, position.updated_at)
        self.portfolio = portfolio

    # -- the orders stream ------------------------------------------------------------------

    async def on_order_event(self, event: Order | Trade) -> None:
        """Book a `Trade`, or the stored trades of a (partially) filled `Order`."""
        if isinstance(event, Trade):
            await self.book([event])
            return
        if event.status not in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            return
        async with self.sessions() as session:
            trades = await list_trades(session, client_order_id=event.client_order_id)
        await self.book(trades)

    async def book(self, trades: Sequence[Trade]) -> int:
        """Book each trade not booked yet, storing it with its position; returns how many."""
        booked = 0
        late = False
        async with self._lock:
            await self._refresh()
            for trade in trades:
                if self.portfolio.has_applied(trade):
                    log.debug("trade already booked", trade_id=trade.trade_id)
                    continue
                try:
                    async with self.sessions.begin() as session:
                        await add_trade(session, trade)
                        self.portfolio.apply(trade)
                        await upsert_position(
                            session, self.portfolio.books[trade.symbol].position()
                        )
                except BaseException:
                    # The transaction rolled back: the memory must match the database again,
                    # now or (the database being unreachable) before the next event.
                    self._stale = True
                    await self._refresh()
                    raise
                booked += 1
                self._note_trade_time(trade)
                late = late or self._missed_by_last_snapshot(trade)
                log.info(
                    "trade booked",
                    trade_id=trade.trade_id,
                    symbol=trade.symbol,
                    side=trade.side.value,
                    quantity=str(trade.quantity),
                    price=str(trade.price),
                )
            if booked:
                self._set_gauges()
            if late:
                await self._retake_last_snapshot()
        return booked

    def _note_trade_time(self, trade: Trade) -> None:
        if self._last_trade_time is None or trade.time > self._last_trade_time:
            self._last_trade_time = trade.time

    def _missed_by_last_snapshot(self, trade: Trade) -> bool:
        """Whether the last snapshot should have held `trade`: a fill reaches this service
        on the orders stream, often just after the candle whose close took the snapshot
        (the fill is at that candle's open), and after a restart possibly much later."""
        return self.snapshot_time is not None and trade.time < self.snapshot_time

    async def _retake_last_snapshot(self) -> None:
        """Store the last snapshot again with the late trades in it (a newer row for the same
        time: `latest_snapshot` returns it), if the portfolio is still as of that time: no
        candle marked after it and no trade after it. Otherwise the next snapshot has them."""
        at = self.snapshot_time
        assert at is not None
        if self.clock != at or (self._last_trade_time is not None and self._last_trade_time > at):
            return
        snapshot = self.portfolio.snapshot(at)
        async with self.sessions.begin() as session:
            await add_snapshot(session, snapshot)
        log.info("portfolio snapshot retaken", time=at.isoformat(), value=str(snapshot.total_value))

    # -- the candles stream -----------------------------------------------------------------

    async def on_candle(self, candle: Candle) -> None:
        """Mark to the candle's close, then take the snapshots its close time is due for."""
        if not candle.closed:
            return
        closes = candle.open_time + interval_delta(candle.interval)
        async with self._lock:
            await self._refresh()
            book = self.portfolio.mark(candle.symbol, candle.close, closes)
            position = None if book is None else book.position()
            times = self._snapshots_due(closes, previous=candle.open_time)
            snapshots = [self.portfolio.snapshot(t) for t in times]

            # The position and the snapshot as one statement on the writer's held connection
            # (no session, no pre-ping, no pool checkout, no BEGIN and COMMIT): this runs on
            # every candle, on the 2 cores the pipeline's hops share. Two snapshots at once
            # (an interval that does not divide the day) take a transaction.
            def write(connection: AsyncConnection) -> Awaitable[None]:
                return store_marks(connection, position, snapshots)

            if len(snapshots) > 1:
                await self.writer.transaction(write)
            elif position is not None or snapshots:
                await self.writer.statement(write)
            self._set_gauges()
            if closes > (self.clock or candle.open_time):
                self.clock = closes
            if snapshots:
                self._snapshots_taken(times, snapshots)

    def _snapshots_due(self, now: datetime, *, previous: datetime) -> list[datetime]:
        """The snapshot times (interval multiples, 00:00 UTC) the clock passes moving to `now`."""
        last = self.clock if self.clock is not None else previous
        if now <= last:
            return []
        due = floor_time(now, self.snapshot_interval)
        midnight = floor_time(now, DAY)
        return sorted({t for t in (due, midnight) if t > last})

    def _snapshots_taken(self, times: list[datetime], snapshots: list[PortfolioSnapshot]) -> None:
        self.snapshot_time = times[-1]
        log.info(
            "portfolio snapshot", time=times[-1].isoformat(), value=str(snapshots[-1].total_value)
        )
        midnight = floor_time(times[-1], DAY)
        if midnight in times:
            self._daily_summary(snapshots[times.index(midnight)])

    def _daily_summary(self, snapshot: PortfolioSnapshot) -> None:
        pnl = snapshot.total_value - self.day_start_value
        self.day_start_value = snapshot.total_value
        log.info("daily summary", day_end=snapshot.time.isoformat(), pnl=str(pnl))
        if self.notifier is not None:
            self.notifier.send_daily_summary(self.portfolio.positions(), pnl)

    def _set_gauges(self) -> None:
        PORTFOLIO_VALUE.set(float(self.portfolio.total_value))
        for symbol, book in self.portfolio.books.items():
            UNREALIZED_PNL.labels(symbol).set(float(book.unrealized_pnl))
