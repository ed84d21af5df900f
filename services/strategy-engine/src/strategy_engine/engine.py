"""The strategy engine: closed candles in, stored and published signals out.

For each configured `StrategyInstance`:

- **Start.** Its progress (the open time of the last candle it handled) and its feed start
  (the open time of the first candle it was fed, warm-up included) are kept in Redis beside
  the bus's consumer groups. On the first start the strategy is warmed up with the last
  ``warmup_period`` closed candles stored before now, as `trading backtest run` warms up
  before ``--start``. After a restart every stored candle from the feed start up to the
  progress is fed again with signals suppressed: a strategy's state is a pure function of the
  candles it was fed, so the instance is then exactly where the uninterrupted run was (a
  warm-up of only ``warmup_period`` candles would re-seed EMAs and move or drop crossovers).
  The replay reads the database a page (`REPLAY_PAGE` candles) at a time, so memory stays
  bounded; measured: 70,000 1m candles (49 days) replay in about 3 s through EMA(9, 21)
  (``services/strategy-engine/bench/replay.py``, on 2 busy cores; the old 21-candle warm-up
  took 4 ms), so a restart's cost grows with the instance's age: ~20 s a year of 1m
  candles. Then it *catches up* on the stored candles after the progress, signals enabled,
  so candles that arrived while the engine was down (and that the bus redelivers, which the
  strategy then ignores as already seen) lose no signal.
- **Each candle** of the bus's candles stream goes to the instances of its symbol and
  interval. A strategy that raises, here or in its warm-up or replay, is contained: the first
  failure of an instance is logged at ERROR (counted in ``errors_total`` and alerted once by
  `shared.logging`), repeats are counted (and logged at WARNING while consuming); the
  instance stays on for the next candles, the other instances go on and the candle is
  acknowledged.
- **A signal** is stored (`add_signal`, committed) and published on the signals stream at
  the same time, then sent to Telegram and counted; the candle's progress is saved only
  after both. Its id is deterministic, so a candle handled twice yields the same id: a
  signal already published by this process is not published again (only stored, if its
  INSERT failed); one that an earlier process stored or published and died before the
  progress was saved is derived again by the restart's catch-up, stored and published
  again, and the order executor dedupes by id (one order per signal).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.db import Writer, add_signal, candles_between
from shared.metrics import ERRORS_TOTAL, SIGNALS_GENERATED_TOTAL, STRATEGY_EXECUTION_SECONDS
from shared.models import Candle, Signal, interval_delta
from shared.notifier import TelegramNotifier
from shared.repositories.candles import recent_candles
from shared.streams import SIGNALS
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from strategy_engine.instances import StrategyInstance

SERVICE = "strategy-engine"
PROGRESS_KEY = "strategy-engine:progress"
"""A Redis hash (under the bus namespace): instance key → last handled candle open time (ms)."""
FEED_START_KEY = "strategy-engine:feed-start"
"""A Redis hash (under the bus namespace): instance key → open time (ms) of the first candle
fed to it, warm-up included; a restart replays from there (see `StrategyEngine.start`)."""
REPLAY_PAGE = 5_000
"""Candles (interval lengths) per database query of a replay or catch-up: bounds memory."""
PUBLISHED_MEMORY = 10_000
"""How many published signal ids are remembered to avoid republishing."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

log = structlog.get_logger("strategy_engine")


def _millis(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


class StrategyEngine:
    """Runs strategy instances on candles; `on_candle` is the candles-stream handler."""

    def __init__(
        self,
        instances: Sequence[StrategyInstance],
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        notifier: TelegramNotifier | None = None,
        service: str = SERVICE,
        writer: Writer | None = None,
    ) -> None:
        self.instances = list(instances)
        self.sessions = sessions
        self.writer = writer or Writer.for_sessions(sessions)
        self.bus = bus
        self.notifier = notifier
        self.service = service
        self._routes: dict[tuple[str, str], list[StrategyInstance]] = defaultdict(list)
        for instance in self.instances:
            self._routes[(instance.symbol, instance.interval)].append(instance)
        self._failures: dict[str, int] = {}
        self._last: dict[str, datetime] = {}
        self._unsent: dict[str, Signal] = {}
        self._published: OrderedDict[str, None] = OrderedDict()
        self._progress_key = bus.key(PROGRESS_KEY)
        self._start_key = bus.key(FEED_START_KEY)
        self._started: set[str] = set()  # instance keys whose feed start is stored
        self.signals_published = 0

    @property
    def redis(self) -> Redis:
        return self.bus.redis

    def failures(self, instance: StrategyInstance) -> int:
        """How many times `instance` has raised since start."""
        return self._failures.get(instance.key, 0)

    # -- start ------------------------------------------------------------------------------

    async def start(self, now: datetime | None = None) -> None:
        """Bring every instance to the state of an uninterrupted run, then catch up.

        First start: warm-up with the last ``warmup_period`` closed candles (as `trading
        backtest run` feeds its warm-up before ``--start``). After a restart: a replay of every
        stored candle from the instance's feed start to its progress, signals suppressed, then
        the stored candles after it with signals enabled. A strategy that raises on any of
        them is contained as while consuming (see `_strategy_failed`).
        """
        now = now or datetime.now(UTC)
        progress = await self._read_times(self._progress_key)
        starts = await self._read_times(self._start_key)
        self._started.update(key for key in starts if key in progress)
        for instance in self.instances:
            await self._start_instance(
                instance, now, progress.get(instance.key), starts.get(instance.key)
            )

    async def _read_times(self, key: str) -> dict[str, int]:
        stored = await self.redis.hgetall(key)
        return {_text(field): int(value) for field, value in stored.items()}

    async def _start_instance(
        self, instance: StrategyInstance, now: datetime, last_ms: int | None, start_ms: int | None
    ) -> None:
        strategy = instance.strategy
        strategy.reset()
        # Candles opened before this have closed by `now`.
        closed_before = now - interval_delta(instance.interval) + _MS
        failures = self.failures(instance)
        if last_ms is None:
            async with self.sessions() as session:
                warmup = await recent_candles(
                    session,
                    instance.symbol,
                    instance.interval,
                    strategy.warmup_period,
                    before=closed_before,
                )
            if warmup:
                await self._record_start(instance, warmup[0].open_time)
            for candle in warmup:
                self._feed(instance, candle)  # a strategy never signals within its warm-up
            if warmup:
                self._last[instance.key] = warmup[-1].open_time
            fed = len(warmup)
            catch_up_from = None
        else:
            last = _EPOCH + last_ms * _MS
            if start_ms is None:
                # Progress written before feed starts were recorded: the old, approximate
                # warm-up; recording its first candle makes the next restarts exact again.
                async with self.sessions() as session:
                    replay = await recent_candles(
                        session,
                        instance.symbol,
                        instance.interval,
                        strategy.warmup_period,
                        before=last + _MS,
                    )
                if replay:
                    await self._record_start(instance, replay[0].open_time)
                log.warning("no feed start stored; warming up approximately", instance=instance.key)
                for candle in replay:
                    self._feed(instance, candle)
                fed = len(replay)
            else:
                fed = 0
                async for page in self._stored(instance, _EPOCH + start_ms * _MS, last + _MS):
                    for candle in page:
                        self._feed(instance, candle)
                    fed += len(page)
            self._last[instance.key] = last
            catch_up_from = last + _MS
        log.info(
            "strategy warmed up" if last_ms is None else "strategy replayed",
            instance=instance.key,
            candles=fed,
            failures=self.failures(instance) - failures,
            last=self._last[instance.key].isoformat() if instance.key in self._last else None,
        )
        if catch_up_from is not None:
            caught_up = 0
            async for page in self._stored(instance, catch_up_from, closed_before):
                for candle in page:
                    if await self._handle(instance, candle):
                        await self._save_progress([instance], candle)
                caught_up += len(page)
            log.info("strategy caught up", instance=instance.key, candles=caught_up)

    async def _stored(
        self, instance: StrategyInstance, start: datetime, end: datetime
    ) -> AsyncIterator[list[Candle]]:
        """The stored candles of `instance`'s series in [start, end), a page at a time."""
        step = interval_delta(instance.interval) * REPLAY_PAGE
        cursor = start
        while cursor < end:
            upper = min(cursor + step, end)
            async with self.sessions() as session:
                page = await candles_between(
                    session, instance.symbol, instance.interval, cursor, upper
                )
            if page:
                yield page
            cursor = upper

    async def _record_start(self, instance: StrategyInstance, first: datetime) -> None:
        """Store the first candle fed to `instance` (before any progress of it is stored)."""
        await self.redis.hset(self._start_key, instance.key, str(_millis(first)))
        self._started.add(instance.key)

    def _feed(self, instance: StrategyInstance, candle: Candle) -> None:
        """Feed a warm-up or replayed candle: any signal is dropped, a raise contained."""
        try:
            instance.strategy.on_candle(candle)
        except Exception as exc:
            self._strategy_failed(instance, candle, exc, replaying=True)

    # -- candles ----------------------------------------------------------------------------

    async def on_candle(self, candle: Candle) -> None:
        """Route one candle to the instances of its series (the bus handler)."""
        if not candle.closed:
            return
        handled = [
            instance
            for instance in self._routes.get((candle.symbol, candle.interval), ())
            if await self._handle(instance, candle)
        ]
        # The progress of all the series' instances in one round trip, after every signal of
        # the candle is published (a signal waits for no other instance's progress write).
        await self._save_progress(handled, candle)

    async def _save_progress(self, instances: Sequence[StrategyInstance], candle: Candle) -> None:
        """Record `candle` as the last one `instances` handled (their signals published)."""
        if not instances:
            return
        started = [instance for instance in instances if instance.key not in self._started]
        for instance in started:
            await self._record_start(instance, candle.open_time)  # nothing was there to warm up
        stamp = str(_millis(candle.open_time))
        await self.redis.hset(
            self._progress_key, mapping={instance.key: stamp for instance in instances}
        )

    async def _handle(self, instance: StrategyInstance, candle: Candle) -> bool:
        """Run `instance` on `candle` and emit its signal; False when it had seen the candle.
        The caller then records the progress (`_save_progress`)."""
        unsent = self._unsent.get(instance.key)
        if unsent is not None:
            # Storing or publishing it failed last time (the handler raised, so the bus
            # redelivers): the strategy has moved past its candle, so send it from here.
            await self._emit(instance, unsent)
            del self._unsent[instance.key]
        last = self._last.get(instance.key)
        if last is not None and candle.open_time <= last:
            return False  # handled already (a redelivery, or a backlog older than the warm-up)
        signal = self._run_strategy(instance, candle)
        self._last[instance.key] = candle.open_time
        if signal is not None:
            self._unsent[instance.key] = signal
            await self._emit(instance, signal)
            del self._unsent[instance.key]
        return True

    def _run_strategy(self, instance: StrategyInstance, candle: Candle) -> Signal | None:
        started = time.perf_counter()
        try:
            return instance.strategy.on_candle(candle)
        except Exception as exc:
            self._strategy_failed(instance, candle, exc)
            return None
        finally:
            STRATEGY_EXECUTION_SECONDS.labels(instance.name).observe(time.perf_counter() - started)

    def _strategy_failed(
        self, instance: StrategyInstance, candle: Candle, exc: Exception, *, replaying: bool = False
    ) -> None:
        """Contain a raise: the instance keeps getting the next candles (not disabled).

        Kept on, not disabled, because a raise may be one bad candle, and because a replay
        must feed exactly what the uninterrupted run fed: the same candles, the same raises.
        The first failure per instance and process is logged at ERROR (counted in
        ``errors_total`` and alerted once by `shared.logging`); repeats are counted, and
        logged at WARNING except within a warm-up or replay (summed up in its log line).
        """
        count = self._failures.get(instance.key, 0) + 1
        self._failures[instance.key] = count
        fields = {
            "instance": instance.key,
            "candle_time": candle.open_time.isoformat(),
            "error": f"{type(exc).__name__}: {exc}",
            "error_type": type(exc).__name__,
            "failures": count,
        }
        if count == 1:
            # At ERROR: shared.logging counts it in errors_total and alerts Telegram, once.
            log.error("strategy raised; skipping its candle", exc_info=exc, **fields)
        else:
            ERRORS_TOTAL.labels(self.service, type(exc).__name__).inc()
            if not replaying:
                log.warning("strategy raised again; skipping its candle", **fields)

    async def _emit(self, instance: StrategyInstance, signal: Signal) -> None:
        attempts = 0

        async def insert(connection: AsyncConnection) -> bool:
            """Whether the signal is new: stored now, or by this very call's first run,
            which the writer runs again when its connection died after PostgreSQL committed
            it (the answer lost): the row is then ours, still to count and report (a retry
            that meets an earlier process's row is counted again: rare, and better than a
            signal never reported)."""
            nonlocal attempts
            attempts += 1
            return await add_signal(connection, signal) or attempts > 1

        store = self.writer.statement(insert)
        if signal.id in self._published:
            # Published by this process already (its storing failed and the candle came
            # again, or the candle came again): only the INSERT may be left to do.
            if not await store:
                log.info("signal already published", signal_id=signal.id, instance=instance.key)
                return
        else:
            # The INSERT (one autocommit statement, see `Writer`) and the publish run at
            # once: the signal is on its way to the executor while PostgreSQL commits it.
            # Safe because nothing on the way to an order reads the signal row, the executor
            # makes at most one order per signal id (a repeat finds its order stored), and
            # the candle's progress is saved only after both are done: after a crash in
            # between, the restart's catch-up derives the same signal (same id) from the
            # stored candles again, stores it and publishes it once more.
            # The publish goes first: gather starts its coroutines in order, and the INSERT's
            # client-side work would otherwise run before the XADD is sent.
            outcomes = await asyncio.gather(self._publish(signal), store, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            if not outcomes[1]:
                log.info("signal stored earlier published again", signal_id=signal.id)
                return
        SIGNALS_GENERATED_TOTAL.labels(signal.strategy, signal.side.value).inc()
        log.info(
            "signal generated",
            signal_id=signal.id,
            strategy=signal.strategy,
            symbol=signal.symbol,
            side=signal.side.value,
            price=str(signal.price),
            candle_time=signal.candle_time.isoformat(),
        )
        if self.notifier is not None:
            self.notifier.send_signal(signal)

    async def _publish(self, signal: Signal) -> None:
        await self.bus.publish(SIGNALS, signal)
        self._remember(signal.id)
        self.signals_published += 1

    def _remember(self, signal_id: str) -> None:
        self._published[signal_id] = None
        while len(self._published) > PUBLISHED_MEMORY:
            self._published.popitem(last=False)


def routes(instances: Iterable[StrategyInstance]) -> set[tuple[str, str]]:
    """The (symbol, interval) series the instances follow."""
    return {(instance.symbol, instance.interval) for instance in instances}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
