"""The strategy engine: closed candles in, stored and published signals out.

For each configured `StrategyInstance`:

- **Start.** Its progress (the open time of the last candle it handled) is kept in Redis
  beside the bus's consumer groups. On the first start the strategy is warmed up with the
  last ``warmup_period`` closed candles stored before now. After a restart it is warmed up
  with the ``warmup_period`` candles up to its progress and then *catches up* on the stored
  candles after it, signals enabled, so candles that arrived while the engine was down (and
  that the bus redelivers, which the strategy then ignores as already seen) lose no signal.
- **Each candle** of the bus's candles stream goes to the instances of its symbol and
  interval. A strategy that raises is contained: the first failure of an instance is logged
  at ERROR (counted in ``errors_total`` and alerted once by `shared.logging`), repeats only
  at WARNING and counted; the other instances go on and the candle is acknowledged.
- **A signal** is stored first (`add_signal`, committed), then published on the signals
  stream, then sent to Telegram and counted. Its id is deterministic, so a candle handled
  twice yields the same id: a signal already stored and already published by this process
  is not published again; one stored by an earlier process (which may have died before
  publishing) is published again, and the order executor dedupes by id.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.db import add_signal, candles_between
from shared.metrics import ERRORS_TOTAL, SIGNALS_GENERATED_TOTAL, STRATEGY_EXECUTION_SECONDS
from shared.models import Candle, Signal, interval_delta
from shared.notifier import TelegramNotifier
from shared.repositories.candles import recent_candles
from shared.streams import SIGNALS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from strategy_engine.instances import StrategyInstance

SERVICE = "strategy-engine"
PROGRESS_KEY = "strategy-engine:progress"
"""A Redis hash (under the bus namespace): instance key → last handled candle open time (ms)."""
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
    ) -> None:
        self.instances = list(instances)
        self.sessions = sessions
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
        self.signals_published = 0

    @property
    def redis(self) -> Redis:
        return self.bus.redis

    def failures(self, instance: StrategyInstance) -> int:
        """How many times `instance` has raised since start."""
        return self._failures.get(instance.key, 0)

    # -- start ------------------------------------------------------------------------------

    async def start(self, now: datetime | None = None) -> None:
        """Warm every instance up from the database and catch up on missed candles."""
        now = now or datetime.now(UTC)
        stored = await self.redis.hgetall(self._progress_key)
        progress = {_text(key): int(value) for key, value in stored.items()}
        for instance in self.instances:
            await self._start_instance(instance, now, progress.get(instance.key))

    async def _start_instance(
        self, instance: StrategyInstance, now: datetime, last_ms: int | None
    ) -> None:
        strategy = instance.strategy
        strategy.reset()
        delta = interval_delta(instance.interval)
        # First start: up to the candle opened at now - delta (it closes at now, the last
        # closed one). After a restart: up to the last candle handled, inclusive.
        before = now - delta + _MS if last_ms is None else _EPOCH + (last_ms + 1) * _MS
        async with self.sessions() as session:
            warmup = await recent_candles(
                session, instance.symbol, instance.interval, strategy.warmup_period, before=before
            )
            missed = (
                []
                if last_ms is None
                else await candles_between(
                    session, instance.symbol, instance.interval, before, now - delta + _MS
                )
            )
        for candle in warmup:
            strategy.on_candle(candle)  # a strategy never signals within its warm-up
        if warmup:
            self._last[instance.key] = warmup[-1].open_time
        log.info(
            "strategy warmed up",
            instance=instance.key,
            warmup_candles=len(warmup),
            catching_up=len(missed),
            last=warmup[-1].open_time.isoformat() if warmup else None,
        )
        for candle in missed:
            await self._handle(instance, candle)

    # -- candles ----------------------------------------------------------------------------

    async def on_candle(self, candle: Candle) -> None:
        """Route one candle to the instances of its series (the bus handler)."""
        if not candle.closed:
            return
        for instance in self._routes.get((candle.symbol, candle.interval), ()):
            await self._handle(instance, candle)

    async def _handle(self, instance: StrategyInstance, candle: Candle) -> None:
        unsent = self._unsent.get(instance.key)
        if unsent is not None:
            # Storing or publishing it failed last time (the handler raised, so the bus
            # redelivers): the strategy has moved past its candle, so send it from here.
            await self._emit(instance, unsent)
            del self._unsent[instance.key]
        last = self._last.get(instance.key)
        if last is not None and candle.open_time <= last:
            return  # handled already (a redelivery, or a backlog older than the warm-up)
        signal = self._run_strategy(instance, candle)
        self._last[instance.key] = candle.open_time
        if signal is not None:
            self._unsent[instance.key] = signal
            await self._emit(instance, signal)
            del self._unsent[instance.key]
        await self.redis.hset(self._progress_key, instance.key, str(_millis(candle.open_time)))

    def _run_strategy(self, instance: StrategyInstance, candle: Candle) -> Signal | None:
        started = time.perf_counter()
        try:
            return instance.strategy.on_candle(candle)
        except Exception as exc:
            self._strategy_failed(instance, candle, exc)
            return None
        finally:
            STRATEGY_EXECUTION_SECONDS.labels(instance.name).observe(time.perf_counter() - started)

    def _strategy_failed(self, instance: StrategyInstance, candle: Candle, exc: Exception) -> None:
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
            log.warning("strategy raised again; skipping its candle", **fields)

    async def _emit(self, instance: StrategyInstance, signal: Signal) -> None:
        async with self.sessions.begin() as session:
            new = await add_signal(session, signal)
        if not new and signal.id in self._published:
            log.info("signal already published", signal_id=signal.id, instance=instance.key)
            return
        await self.bus.publish(SIGNALS, signal)
        self._remember(signal.id)
        self.signals_published += 1
        if not new:
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

    def _remember(self, signal_id: str) -> None:
        self._published[signal_id] = None
        while len(self._published) > PUBLISHED_MEMORY:
            self._published.popitem(last=False)


def routes(instances: Iterable[StrategyInstance]) -> set[tuple[str, str]]:
    """The (symbol, interval) series the instances follow."""
    return {(instance.symbol, instance.interval) for instance in instances}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
