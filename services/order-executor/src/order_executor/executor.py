"""The order executor: signals → risk rules → an order per signal → fills → order events.

One `OrderExecutor` handles both streams it reads, one event at a time (a lock), so the
account and the risk state see candles and signals in the order they were handled:

- a candle of symbol S: dry-run orders of S waiting for a price fill at its open (the
  backtest's "signal of candle t fills at the open of candle t+1"); the portfolio value is
  marked to its close and fed to the daily loss limit; a position of S that fell
  RISK_STOP_LOSS_PCT below its entry gets a stop-loss SELL (filled at the next open in dry run,
  sent at once live);
- a signal: its client order id is derived from the signal id, so a redelivered signal finds
  its order stored and places nothing; a BUY passes the risk rules (reduced or rejected, the
  reason counted); the order is stored PENDING *before* anything is sent, then filled by the
  paper account (DRY_RUN=true) or sent to the exchange (`LiveBroker`, DRY_RUN=false).

A dry-run order of a signal of candle t fills at the open of candle t+1 of the signal's series
even when the signal comes late (the executor or the strategy engine restarted, a consumer ran
ahead): t+1 is looked up in the candles this process has seen and, when they do not hold it,
in the database (the data collector stores every closed candle before publishing it). The
lookup is skipped when the newest candle of the series handled here is t itself, as for every
signal of a live run: t+1, stored yet or not, comes next on the candles stream, whose handler
fills the order at its open. A waiting order whose t+1 has been stored is filled before a
later signal of its series is handled, even when the candles stream has not delivered t+1
here yet. So a late fill is the backtest's fill. The risk state is not rewound for it: the
candles after t+1 already handled were observed (daily loss limit, stop loss) without the
fill, and it is seen from the next candle on. The BUY check itself is the backtest's (t's
close, the position and value after the fills before it) as long as signals arrive in order,
which the signals stream keeps.

Every state change is committed, then published on the ``orders`` stream (the `Order`, and a
`Trade` per fill), counted in ``orders_total{status,side}`` when final, and sent to Telegram.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

import structlog
from shared.bus import EventBus
from shared.db import (
    Writer,
    add_trade,
    candles_between,
    create_order,
    get_order,
    get_signal,
    insert_order,
    latest_closes,
    list_orders,
    list_trades,
    update_order,
    update_order_with_trade,
)
from shared.exchange import client_order_id_for_signal
from shared.fill_model import Fill, FillModel
from shared.metrics import ORDERS_TOTAL, RISK_REJECTIONS_TOTAL
from shared.models import (
    Candle,
    Order,
    OrderStatus,
    OrderType,
    Side,
    Signal,
    Trade,
    interval_delta,
)
from shared.notifier import TelegramNotifier
from shared.paper_account import PaperAccount
from shared.streams import ORDERS
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from order_executor.risk import RiskDecision, RiskManager
from order_executor.risk_store import RiskStateStore

__all__ = ["STOP_LOSS_REASON", "Broker", "OrderExecutor", "Outcome"]

log = structlog.get_logger("order_executor")

STOP_LOSS_REASON = "stop_loss"
"""The ``reason`` label counted in risk_rejections_total when a stop loss sells a position."""
QUOTE_ASSET = "USDT"
RECENT_CANDLES = 1024
"""Candles kept per series: a signal handled after later candles (the candles consumer ran
ahead) finds the candle after its own here without asking the database."""
LOOKUP_CANDLES = 1024
"""How far past a signal's candle the database is searched for the next stored candle (a gap
in the series longer than this waits for the next live candle instead)."""
REPUBLISH_ON_START = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a broker made of an order: its new state and the fills it got."""

    order: Order
    trades: tuple[Trade, ...] = ()


class Broker(Protocol):
    """Sends a stored PENDING order to an exchange and reports what became of it."""

    async def execute(self, order: Order) -> Outcome: ...

    async def reconcile(self, order: Order) -> Outcome: ...


@dataclass(slots=True)
class _Waiting:
    """A dry-run order waiting for the first candle of its series opened after `after`
    (`interval` None: of any interval of the symbol, for an order whose candle is unknown)."""

    order: Order
    after: datetime
    interval: str | None


class OrderExecutor:
    """Handles signals and candles; `broker=None` is dry run (fills by the paper account)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        risk: RiskManager,
        fill_model: FillModel,
        initial_cash: Decimal,
        broker: Broker | None = None,
        risk_store: RiskStateStore | None = None,
        notifier: TelegramNotifier | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        writer: Writer | None = None,
    ) -> None:
        self.sessions = sessions
        self.writer = writer or Writer.for_sessions(sessions)
        self.bus = bus
        self.risk = risk
        self.fill_model = fill_model
        self.initial_cash = initial_cash
        self.account = PaperAccount(initial_cash, fill_model)
        self.broker = broker
        self.risk_store = risk_store
        self.notifier = notifier
        self.clock = clock
        self.marks: dict[str, Decimal] = {}
        self._recent: dict[tuple[str, str], deque[Candle]] = {}
        self._waiting: list[_Waiting] = []
        self._lock = asyncio.Lock()

    @property
    def dry_run(self) -> bool:
        return self.broker is None

    # --- start: rebuild what memory held ------------------------------------------------

    async def start(self) -> None:
        """Rebuild the account from the stored fills, load the risk state, publish the latest
        final orders again, and take up every order that is not final: dry run waits for the
        next candle; live reconciles each with the exchange by its client order id (sent
        before a crash, or never sent)."""
        async with self.sessions() as session:
            trades = await list_trades(session)
            orders = await list_orders(session)
        unfinished = [order for order in orders if not order.status.is_final]
        await self._republish_recent(orders, trades)
        self.account = PaperAccount.replay(
            self.initial_cash, self.fill_model, (self._quote_fee(t) for t in trades)
        )
        # Every position held is priced from the start (portfolio value for the risk rules),
        # not only once its symbol's next candle arrives.
        held = [symbol for symbol, quantity in self.account.quantities.items() if quantity]
        async with self.sessions() as session:
            self.marks.update(await latest_closes(session, held))
        if self.risk_store is not None:
            self.risk.state = await self.risk_store.load()
        for order in unfinished:
            if self.broker is None:
                await self._resume_on_paper(order)
            else:
                await self._finish(await self.broker.reconcile(order))
        log.info(
            "order executor ready",
            dry_run=self.dry_run,
            trades=len(trades),
            unfinished_orders=len(unfinished),
            cash=str(self.account.cash),
        )

    async def _resume_on_paper(self, order: Order) -> None:
        """Fill a dry-run order left PENDING at the open after its signal's candle (stored by
        the strategy engine), or wait for that candle; an order without a stored signal (a
        stop loss) fills at the next candle of its symbol."""
        signal = None
        if order.signal_id is not None:
            async with self.sessions() as session:
                signal = await get_signal(session, order.signal_id)
        if signal is None:
            self._waiting.append(_Waiting(order, datetime.min.replace(tzinfo=UTC), None))
            return
        waiting = _Waiting(order, signal.candle_time, signal.interval)
        candle = await self._next_candle(waiting)
        if candle is None:
            self._waiting.append(waiting)
        else:
            await self._fill_on_paper(order, candle)

    async def _republish_recent(self, orders: list[Order], trades: list[Trade]) -> None:
        """Publish the latest final orders and their fills again: a crash between committing
        a fill and publishing it must not hide it from the portfolio (whose handlers are
        idempotent, as every bus handler is)."""
        recent = [order for order in orders if order.status.is_final][-REPUBLISH_ON_START:]
        wanted = {order.client_order_id for order in recent}
        fills = [trade for trade in trades if trade.client_order_id in wanted]
        if recent:
            await self.bus.publish_many(ORDERS, [*recent, *fills])

    # --- signals -------------------------------------------------------------------------

    async def on_signal(self, signal: Signal) -> Order:
        """Make (at most) one order for `signal`; returns it as stored."""
        async with self._lock:
            order = await self._handle_signal(signal)
            risk_state = self._risk_state_now()
        await self._save_risk_state(risk_state)
        return order

    async def _handle_signal(self, signal: Signal) -> Order:
        """`on_signal` under the lock, but for saving the risk state."""
        await self._fill_overtaken(signal)
        client_order_id = client_order_id_for_signal(signal.id)
        counted = dict(self.risk.state.rejections)
        order, decision = self._order_for(signal, client_order_id)

        attempts = 0

        async def record(connection: AsyncConnection) -> tuple[Order, bool]:
            nonlocal attempts
            attempts += 1
            inserted = await insert_order(connection, order)
            if inserted is not None:
                return inserted, True
            stored = await get_order(connection, client_order_id)
            assert stored is not None  # not inserted: it was there already
            # Run again by the writer (the first run's connection died) and finding
            # exactly this order: the first run's INSERT committed before the connection
            # went. Ours still to publish and fill; on a first run, a redelivery.
            return stored, attempts > 1 and stored == order

        # Recorded (committed) before it is sent, in one autocommit statement: INSERT ...
        # ON CONFLICT DO NOTHING RETURNING. Only when the client order id is stored
        # already does a second statement read that order back; looking it up first cost
        # every new order a round trip (~0.5-1 ms on the way to the exchange).
        stored, new = await self.writer.statement(record)
        if not new:
            # Stored before: a redelivered signal (or another instance's order). Its risk
            # decision was counted when that order was made, so this one is not.
            self.risk.state.rejections = counted
            # A live order left unfinished (the exchange was unreachable) is taken up
            # again; the broker looks it up before sending.
            if self.broker is not None and not stored.status.is_final:
                return await self._finish(await self.broker.execute(stored))
            return stored
        if decision is not None:
            self._risk_applied(signal, decision)
        return await self._placed(order, stored, after=signal.candle_time, interval=signal.interval)

    def _order_for(self, signal: Signal, client_order_id: str) -> tuple[Order, RiskDecision | None]:
        """The order for `signal`, and the risk decision when a rule reduced or rejected it."""
        quantity = signal.quantity
        status, reason = OrderStatus.PENDING, signal.reason or None
        applied = None
        if signal.side is Side.BUY:
            prices = {**self.marks, signal.symbol: signal.price}
            decision = self.risk.check_order(
                Side.BUY,
                quantity,
                signal.price,
                position_quantity=self.account.position(signal.symbol),
                portfolio_value=self.account.equity(prices),
            )
            if decision.reason is not None:
                applied = decision
                reason = f"risk: {decision.reason.value}"
            if decision.approved:
                quantity = decision.quantity
            else:
                status = OrderStatus.REJECTED
        now = self.clock()
        order = Order(
            client_order_id=client_order_id,
            signal_id=signal.id,
            strategy=signal.strategy,
            symbol=signal.symbol,
            side=signal.side,
            type=OrderType.MARKET,
            quantity=quantity,
            price=signal.price,  # the reference price (NOTIONAL check); a MARKET order sends none
            status=status,
            reason=reason,
            created_at=now,
            updated_at=now,
        )
        return order, applied

    @staticmethod
    def _risk_applied(signal: Signal, decision: RiskDecision) -> None:
        assert decision.reason is not None
        RISK_REJECTIONS_TOTAL.labels(decision.reason.value).inc()
        log.info(
            "risk rule applied",
            signal_id=signal.id,
            rule=decision.reason.value,
            requested=str(signal.quantity),
            allowed=str(decision.quantity),
        )

    async def _place(self, order: Order, *, after: datetime, interval: str) -> Order:
        """Store the order (PENDING or REJECTED), publish it, then fill or send it."""
        stored = await self.writer.statement(lambda connection: create_order(connection, order))
        return await self._placed(order, stored, after=after, interval=interval)

    async def _placed(
        self, order: Order, stored: Order, *, after: datetime, interval: str
    ) -> Order:
        """`order` was just recorded as `stored`: publish it, then fill or send it."""
        if stored != order:  # another instance made it first: theirs stands
            return stored
        if stored.status.is_final:
            await self._announce(stored, ())
            return stored
        await self.bus.publish(ORDERS, stored)
        if self.broker is not None:
            return await self._finish(await self.broker.execute(stored))
        waiting = _Waiting(stored, after, interval)
        if self._next_comes_on_the_stream(waiting):
            self._waiting.append(waiting)
            return stored
        candle = await self._next_candle(waiting)
        if candle is None:
            self._waiting.append(waiting)
            return stored
        return await self._fill_on_paper(stored, candle)

    def _next_comes_on_the_stream(self, waiting: _Waiting) -> bool:
        """Whether the newest candle of the order's series handled here is the order's own.

        Then the next one, stored yet or not, is still to come on the candles stream (read
        in order) and its handler fills the order at its open, as a lookup would. So no
        database lookup, which in a live run is one round trip per signal that finds
        nothing, on the writer's connection that the next signal's INSERT waits for. A
        later signal of the series that overtakes that candle still looks it up
        (`_fill_overtaken`).
        """
        recent = self._recent.get((waiting.order.symbol, waiting.interval or ""))
        if not recent:
            return False
        return recent[-1].open_time == waiting.after

    async def _fill_overtaken(self, signal: Signal) -> None:
        """Fill the waiting dry-run orders of `signal`'s series from before its candle.

        Candles and signals come on two streams: in a burst of candles, a signal of a later
        candle can overtake the candle that fills an earlier waiting order. That candle is
        stored (the signal's own candle, at the latest, was stored before it was published),
        so the earlier order fills first, in signal order, where the backtest has it (a SELL
        behind a waiting BUY then sells what the BUY bought instead of finding nothing
        held). Orders of the signal's own candle keep waiting, as in the backtest: no lookup
        on the usual path, where two strategies signal on the same candle.
        """
        for waiting in list(self._waiting):
            if (
                waiting.order.symbol != signal.symbol
                or waiting.interval != signal.interval
                or waiting.after >= signal.candle_time
            ):
                continue
            candle = await self._next_candle(waiting)
            if candle is None:  # a gap in the stored candles: left to the candles stream
                continue
            self._waiting.remove(waiting)
            await self._fill_on_paper(waiting.order, candle)

    async def _next_candle(self, waiting: _Waiting) -> Candle | None:
        """The first closed candle of the order's series opened after `waiting.after`, if it
        exists yet: from the candles seen when they hold the very next one, else from the
        database, which holds every closed candle (the collector stores before publishing),
        also those before this process started or before a late signal's candles were seen."""
        symbol, interval, after = waiting.order.symbol, waiting.interval, waiting.after
        assert interval is not None
        step = interval_delta(interval)
        seen = next(
            (c for c in self._recent.get((symbol, interval), ()) if c.open_time > after), None
        )
        if seen is not None and seen.open_time <= after + step:
            return seen
        end = seen.open_time if seen is not None else after + step * (LOOKUP_CANDLES + 1)
        # On the writer's held connection (a read, but one that runs after most signals,
        # under the lock: a session's checkout and connection check cost ~3 round trips).
        stored = await self.writer.statement(
            lambda connection: candles_between(connection, symbol, interval, after + step, end)
        )
        return next((c for c in stored if c.closed), seen)

    # --- candles -------------------------------------------------------------------------

    async def on_candle(self, candle: Candle) -> None:
        """Fill waiting dry-run orders at the open, mark to the close, check the risk rules."""
        if not candle.closed:
            return
        async with self._lock:
            fills = await self._handle_candle(candle)
            risk_state = self._risk_state_now()
        # The waiting orders this candle fills were booked on the paper account under the
        # lock, so the next signal's risk check sees them; they are stored and announced
        # after it, so that signal (usually one of this very candle, ~1-2 ms behind it) does
        # not wait for their commit and publish. In the order they were booked (the writer
        # runs one statement at a time, first come first served). A crash before they are
        # stored loses nothing: a restart rebuilds the account from the stored fills, finds
        # these orders still PENDING and fills them at this same candle's open again.
        for done, trade in fills:
            await self._record_paper_fill(done, trade)
        await self._save_risk_state(risk_state)

    async def _handle_candle(self, candle: Candle) -> list[tuple[Order, Trade | None]]:
        """`on_candle` under the lock; returns the paper fills booked, still to record."""
        series = (candle.symbol, candle.interval)
        recent = self._recent.setdefault(series, deque(maxlen=RECENT_CANDLES))
        if recent and candle.open_time <= recent[-1].open_time:
            return []  # redelivered or out of date: already accounted for
        recent.append(candle)
        due = [
            w
            for w in self._waiting
            if w.order.symbol == candle.symbol
            and w.interval in (None, candle.interval)
            and candle.open_time > w.after
        ]
        fills = []
        for waiting in due:
            self._waiting.remove(waiting)
            fills.append(self._book_on_paper(waiting.order, candle))
        self.marks[candle.symbol] = candle.close
        value = self.account.equity(self.marks)
        self.risk.observe_portfolio_value(candle.close_time, value)
        await self._check_stop_loss(candle)
        return fills

    async def _check_stop_loss(self, candle: Candle) -> None:
        symbol = candle.symbol
        held = self.account.position(symbol)
        if not self.risk.stop_loss_triggered(
            position_quantity=held,
            avg_entry_price=self.account.avg_entry_price(symbol),
            price=candle.close,
        ):
            return
        RISK_REJECTIONS_TOTAL.labels(STOP_LOSS_REASON).inc()
        stamp = int(candle.open_time.timestamp() * 1000)
        now = self.clock()
        order = Order(
            client_order_id=client_order_id_for_signal(f"stop-loss-{symbol}-{stamp}"),
            symbol=symbol,
            side=Side.SELL,
            quantity=held,
            price=candle.close,
            reason=f"risk: {STOP_LOSS_REASON}",
            created_at=now,
            updated_at=now,
        )
        log.warning("stop loss triggered", symbol=symbol, quantity=str(held))
        await self._place(order, after=candle.open_time, interval=candle.interval)

    # --- fills ---------------------------------------------------------------------------

    async def _fill_on_paper(self, order: Order, candle: Candle) -> Order:
        """Fill a dry-run order at `candle`'s open with the shared fill model."""
        return await self._record_paper_fill(*self._book_on_paper(order, candle))

    def _book_on_paper(self, order: Order, candle: Candle) -> tuple[Order, Trade | None]:
        """Fill a dry-run order at `candle`'s open on the paper account: the order's new
        state and its trade (None when nothing could be filled: the order is rejected)."""
        account = self.account
        if order.side is Side.BUY:
            fill = account.buy(order.symbol, order.quantity, candle.open)
            nothing = "not enough cash for one quantity step"
        else:
            fill = account.sell(order.symbol, order.quantity, candle.open)
            nothing = "nothing held to sell"
        if fill is None:
            done = order.model_copy(
                update={
                    "status": OrderStatus.REJECTED,
                    "reason": nothing,
                    "updated_at": candle.open_time,
                }
            )
            return done, None
        done = order.model_copy(
            update={
                "status": OrderStatus.FILLED,
                "filled_quantity": fill.quantity,
                "avg_fill_price": fill.price,
                "fee": fill.fee,
                "fee_asset": QUOTE_ASSET,
                "updated_at": candle.open_time,
            }
        )
        trade = Trade(
            trade_id=f"{order.client_order_id}-1",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=fill.quantity,
            price=fill.price,
            fee=fill.fee,
            fee_asset=QUOTE_ASSET,
            time=candle.open_time,
        )
        return done, trade

    async def _record_paper_fill(self, done: Order, trade: Trade | None) -> Order:
        """Store and announce a fill booked by `_book_on_paper` (or its rejection)."""
        if trade is None:
            return await self._finish(Outcome(done))
        # The order's new state and its fill in one statement (atomic, one round trip, on
        # the writer's held connection). The paper account booked the fill already, and the
        # order was waiting, so this is always a change to announce (a repeat, should the
        # writer run it again, writes the same rows).
        stored = await self.writer.statement(
            lambda connection: update_order_with_trade(connection, done, trade)
        )
        await self._announce(stored, (trade,))
        return stored

    async def _finish(self, outcome: Outcome) -> Order:
        """Commit the order's new state and its fills, book them, publish and report."""
        order = outcome.order

        first: tuple[Order | None, list[Trade]] | None = None

        async def record(connection: AsyncConnection) -> tuple[Order | None, Order, list[Trade]]:
            nonlocal first
            before = await get_order(connection, order.client_order_id)
            stored = await update_order(connection, order)
            new_trades = [t for t in outcome.trades if await add_trade(connection, t)]
            if first is None:
                # What this change found and added. Should the commit's answer be lost and
                # the writer run this again, the second run finds the change made (when the
                # commit went through) and would take it for nothing new: never announced.
                first = (before, new_trades)
            return first[0], stored, first[1]

        # One transaction on the writer (no session, no pre-ping).
        before, stored, new_trades = await self.writer.transaction(record)
        for trade in new_trades:  # live fills: the account follows the exchange
            fee = self._quote_fee(trade).fee
            notional = trade.quantity * trade.price
            fill = Fill(trade.side, trade.quantity, trade.price, notional, fee)
            self.account.apply(trade.symbol, fill)
        if before is not None and before.status == stored.status and not new_trades:
            return stored  # nothing changed (a reconcile that found what we knew)
        await self._announce(stored, new_trades)
        return stored

    async def _announce(self, order: Order, trades: list[Trade] | tuple[Trade, ...]) -> None:
        if trades:
            # The order and its fills in one round trip, in order (a fill runs on the candle
            # after its signal, holding the lock that candle's own signals wait for).
            await self.bus.publish_many(ORDERS, [order, *trades])
        else:
            await self.bus.publish(ORDERS, order)
        if order.status.is_final:
            ORDERS_TOTAL.labels(order.status.value, order.side.value).inc()
            if self.notifier is not None:
                self.notifier.send_order(order)
        log.info(
            "order updated",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side.value,
            status=order.status.value,
            filled=str(order.filled_quantity),
            price=None if order.avg_fill_price is None else str(order.avg_fill_price),
            reason=order.reason,
        )

    @staticmethod
    def _quote_fee(trade: Trade) -> Trade:
        """The trade with its fee in USDT (Binance charges a BUY's fee in the base asset)."""
        if trade.fee_asset in (None, QUOTE_ASSET) or not trade.fee:
            return trade
        return trade.model_copy(update={"fee": trade.fee * trade.price, "fee_asset": QUOTE_ASSET})

    def _risk_state_now(self) -> str | None:
        """The risk state as it is now, to save (taken under the lock)."""
        return None if self.risk_store is None else self.risk_store.encode(self.risk.state)

    async def _save_risk_state(self, encoded: str | None) -> None:
        """Save a state taken under the lock, after releasing it: the Redis round trip
        (~0.3 ms from idle) delays neither the order's event (published first) nor the next
        signal, which no longer waits for it behind the lock. The store writes the states
        in the order they were taken. A crash before the write loses what a crash just
        before a write under the lock would: the state of the last signal or candle (the
        order itself is committed; the daily limit is seen again from the next candle)."""
        if encoded is not None and self.risk_store is not None:
            await self.risk_store.write(encoded)
