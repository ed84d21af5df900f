"""The strategy engine on real PostgreSQL and Redis: warm-up, catch-up, containment, signals."""

from __future__ import annotations

import csv
import gzip
import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.bus_envelope import decode
from shared.db import (
    Database,
    Writer,
    add_signal,
    create_engine,
    create_sessionmaker,
    get_signal,
    upsert_candles,
)
from shared.logging import setup_logging
from shared.metrics import ERRORS_TOTAL, SIGNALS_GENERATED_TOTAL
from shared.models import Candle, Side, Signal
from shared.notifier import TelegramNotifier
from shared.strategy import BaseStrategy, Decision, StrategyParams
from shared.streams import SIGNALS
from shared.testing.telegram_standin import TelegramStandIn
from shared.testing.writers import RetryingWriter
from strategy_engine.engine import StrategyEngine
from strategy_engine.instances import EngineConfig, StrategyInstance, build_instances

from strategies.ema_crossover_strategy import EmaCrossoverStrategy


def read_candles(path: Path, symbol: str, count: int) -> list[Candle]:
    """The first `count` candles of a Binance kline CSV."""
    with gzip.open(path, "rt", newline="") as handle:
        rows = itertools.islice(csv.DictReader(handle), count)
        return [
            Candle(
                symbol=symbol,
                interval="1m",
                open_time=datetime.fromtimestamp(int(row["open_time"]) / 1000, UTC),
                open=Decimal(row["open"]),
                high=Decimal(row["high"]),
                low=Decimal(row["low"]),
                close=Decimal(row["close"]),
                volume=Decimal(row["volume"]),
            )
            for row in rows
        ]


@pytest.fixture
async def telegram_standin() -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn() as standin:
        yield standin


@pytest.fixture
def btc(shared_data: Path) -> list[Candle]:
    return read_candles(shared_data / "BTCUSDT-1m.csv.gz", "BTCUSDT", 600)


@pytest.fixture
async def database(migrated_database_url: str) -> AsyncIterator[Database]:
    engine = create_engine(migrated_database_url)
    yield Database(
        url=migrated_database_url,
        engine=engine,
        sessions=create_sessionmaker(engine),
        writer=Writer(engine),
    )
    await engine.dispose()


@pytest.fixture
async def bus(redis_server_url: str, redis_namespace: str) -> AsyncIterator[EventBus]:
    redis = Redis.from_url(redis_server_url)
    yield EventBus(redis, namespace=redis_namespace)
    keys = [key async for key in redis.scan_iter(match=f"{redis_namespace}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def ema(short: int = 5, long: int = 13) -> StrategyInstance:
    strategy = EmaCrossoverStrategy({"short_period": short, "long_period": long})
    return StrategyInstance(f"ema:{short}:{long}", strategy, "BTCUSDT", "1m")


async def store(database: Database, candles: Sequence[Candle]) -> None:
    async with database.sessions.begin() as session:
        await upsert_candles(session, candles)


async def published(bus: EventBus) -> list[Signal]:
    entries = await bus.redis.xrange(bus.key(SIGNALS))
    signals = []
    for _, fields in entries:
        event = decode(fields).event
        assert isinstance(event, Signal)
        signals.append(event)
    return signals


def expected_signals(candles: Sequence[Candle], short: int = 5, long: int = 13) -> list[Signal]:
    strategy = EmaCrossoverStrategy({"short_period": short, "long_period": long})
    return [s for s in map(strategy.on_candle, candles) if s is not None]


def after(candle: Candle) -> datetime:
    """The moment `candle` has just closed."""
    return candle.open_time + timedelta(minutes=1)


async def test_warm_up_from_database_then_consuming_gives_the_signals_of_the_series(
    database: Database, bus: EventBus, btc: list[Candle]
) -> None:
    stored, live = btc[:300], btc[300:]
    await store(database, stored)
    instance = ema()
    engine = StrategyEngine([instance], sessions=database.sessions, bus=bus)
    await engine.start(now=after(stored[-1]))
    for candle in live:
        await engine.on_candle(candle)

    warmup = stored[-instance.strategy.warmup_period :]
    expected = expected_signals([*warmup, *live])
    got = await published(bus)
    assert len(expected) >= 4, "the slice should make the strategy trade"
    assert got == expected
    # The same signals as the strategy over the whole series, from the first warm-up candle.
    whole = expected_signals(btc)
    assert [s for s in whole if s.candle_time >= live[0].open_time] == expected
    async with database.sessions() as session:
        for signal in got:
            assert await get_signal(session, signal.id) == signal


async def test_warm_up_takes_only_candles_closed_before_now(
    database: Database, bus: EventBus, btc: list[Candle]
) -> None:
    await store(database, btc[:300])
    instance = ema()
    engine = StrategyEngine([instance], sessions=database.sessions, bus=bus)
    # At 30 s into candle 200 only candles 0..199 are closed: the strategy resumes after 199.
    await engine.start(now=btc[200].open_time + timedelta(seconds=30))
    for candle in btc[200:]:
        await engine.on_candle(candle)
    warmup = btc[200 - instance.strategy.warmup_period : 200]
    assert await published(bus) == expected_signals([*warmup, *btc[200:]])


async def test_restart_catches_up_on_candles_stored_while_down_and_loses_no_signal(
    database: Database, bus: EventBus, btc: list[Candle]
) -> None:
    await store(database, btc[:200])
    first = StrategyEngine([ema()], sessions=database.sessions, bus=bus)
    await first.start(now=after(btc[199]))
    for candle in btc[200:350]:
        await store(database, [candle])
        await first.on_candle(candle)
    # Down while candles 350..449 are collected; they reach the bus too, but only after
    # the restart, as redeliveries.
    await store(database, btc[350:450])
    second = StrategyEngine([ema()], sessions=database.sessions, bus=bus)
    await second.start(now=after(btc[449]))
    for candle in btc[350:]:
        await second.on_candle(candle)

    warmup = btc[200 - 13 : 200]
    expected = expected_signals([*warmup, *btc[200:]])
    assert [s for s in expected if s.candle_time >= btc[350].open_time], "must trade while down"
    assert await published(bus) == expected


async def test_signal_stored_by_a_process_that_died_is_published_again_once(
    database: Database, bus: EventBus, btc: list[Candle]
) -> None:
    await store(database, btc[:300])
    engine = StrategyEngine([ema()], sessions=database.sessions, bus=bus)
    await engine.start(now=after(btc[12]))  # warmed up with candles 0..12
    signals = expected_signals(btc[:300])
    # An earlier process stored the first signal and died before publishing it.
    async with database.sessions.begin() as session:
        assert await add_signal(session, signals[0])
    counted = SIGNALS_GENERATED_TOTAL.labels("ema_crossover", signals[0].side.value)
    before = counted._value.get()
    for candle in btc[13:300]:
        await engine.on_candle(candle)
    assert await published(bus) == signals
    # The same candles again through a strategy that forgot them (as after a reset) fire the
    # same signals: all stored and published by this process, so none is published again.
    engine.instances[0].strategy.reset()
    for candle in btc[:300]:
        await engine.on_candle(candle)
    assert await published(bus) == signals
    # Counted once per new signal: the one stored earlier was counted by its own process.
    same_side = [s for s in signals[1:] if s.side is signals[0].side]
    assert counted._value.get() - before == len(same_side)


class ExplodingParams(StrategyParams):
    after: int = 20


class ExplodingStrategy(BaseStrategy):
    """Raises on every candle after its first `after`."""

    name: ClassVar[str] = "exploding"
    params_model: ClassVar[type[StrategyParams]] = ExplodingParams

    @property
    def warmup_period(self) -> int:
        return 1

    def _reset_state(self) -> None:
        self.count = 0

    def _step(self, candle: Candle) -> Decision | None:
        self.count += 1
        params = self.params
        assert isinstance(params, ExplodingParams)
        if self.count > params.after:
            raise ZeroDivisionError("bad indicator")
        return None


async def test_raising_strategy_is_contained_counted_and_alerted_once(
    database: Database, bus: EventBus, btc: list[Candle], telegram_standin: TelegramStandIn
) -> None:
    notifier = TelegramNotifier(
        "1:token", "42", api_url=telegram_standin.api_url, enabled=True, min_interval=0.0
    )
    setup_logging("strategy-engine", "INFO", log_format="json", notifier=notifier)
    await notifier.start()
    exploding = StrategyInstance("exploding", ExplodingStrategy(), "BTCUSDT", "1m")
    healthy = ema()
    engine = StrategyEngine(
        [exploding, healthy], sessions=database.sessions, bus=bus, notifier=notifier
    )
    errors = ERRORS_TOTAL.labels("strategy-engine", "ZeroDivisionError")
    errors_before = errors._value.get()
    await engine.start(now=after(btc[0]) - timedelta(days=1))  # empty database: no warm-up
    for candle in btc[:300]:
        await engine.on_candle(candle)
    await notifier.close()

    failures = 300 - 20
    assert engine.failures(exploding) == failures
    assert errors._value.get() - errors_before == failures
    assert await published(bus) == expected_signals(btc[:300])
    texts = [m.text for m in telegram_standin.messages]
    alerts = [t for t in texts if "ZeroDivisionError" in t]
    assert len(alerts) == 1, texts
    signal_alerts = [t for t in texts if "BTCUSDT" in t and t not in alerts]
    assert len(signal_alerts) == len(expected_signals(btc[:300]))


async def test_candles_of_other_series_and_unclosed_candles_reach_no_instance(
    database: Database, bus: EventBus, btc: list[Candle]
) -> None:
    engine = StrategyEngine([ema()], sessions=database.sessions, bus=bus)
    await engine.start(now=btc[0].open_time)
    for candle in btc[:300]:
        await engine.on_candle(candle.model_copy(update={"symbol": "ETHUSDT"}))
        await engine.on_candle(candle.model_copy(update={"interval": "5m"}))
        await engine.on_candle(candle.model_copy(update={"closed": False}))
    assert await published(bus) == []


def test_instances_share_nothing_and_keys_name_their_parameters() -> None:
    config = EngineConfig.model_validate(
        {
            "instances": [
                {"strategy": "ema_crossover", "symbol": "BTCUSDT", "interval": "1m"},
                {
                    "strategy": "ema_crossover",
                    "symbol": "BTCUSDT",
                    "interval": "1m",
                    "params": {"short_period": 3},
                },
            ]
        }
    )
    first, second = build_instances(config, source=Path("engine.yaml"))
    assert first.strategy is not second.strategy
    assert first.key != second.key
    assert first.key.startswith("ema_crossover:BTCUSDT:1m:")


async def test_signal_whose_storing_failed_is_sent_when_the_candle_comes_again(
    database: Database, bus: EventBus, btc: list[Candle]
) -> None:
    engine = StrategyEngine([ema()], sessions=database.sessions, bus=bus)
    await engine.start(now=btc[0].open_time)
    signals = expected_signals(btc[:300])
    first = next(i for i, c in enumerate(btc) if c.open_time == signals[0].candle_time)
    for candle in btc[:first]:
        await engine.on_candle(candle)
    async with database.engine.begin() as connection:  # the signals table is unreachable
        await connection.exec_driver_sql("ALTER TABLE signals RENAME TO signals_away")
    with pytest.raises(Exception, match="signals"):
        await engine.on_candle(btc[first])
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("ALTER TABLE signals_away RENAME TO signals")
    for candle in btc[first:300]:  # the bus redelivers the failed candle, then goes on
        await engine.on_candle(candle)
    assert await published(bus) == signals


async def run_with_restarts(
    database: Database, bus: EventBus, btc: list[Candle], restarts: Sequence[tuple[int, int]]
) -> None:
    """EMA(9, 21) on `btc`: 200 candles stored before the first start, then one candle at a
    time stored and consumed; at each (stop, back) the engine stops after consuming candle
    `stop - 1`, candles stop..back-1 are stored while it is down, and a new engine starts
    and gets every candle from `stop` on from the bus (the redelivery)."""
    await store(database, btc[:200])
    engine = StrategyEngine([ema(9, 21)], sessions=database.sessions, bus=bus)
    await engine.start(now=after(btc[199]))
    consumed = 200
    for stop, back in [*restarts, (len(btc), len(btc))]:
        for candle in btc[consumed:stop]:
            await store(database, [candle])
            await engine.on_candle(candle)
        await store(database, btc[stop:back])
        if stop == len(btc):
            break
        engine = StrategyEngine([ema(9, 21)], sessions=database.sessions, bus=bus)
        await engine.start(now=after(btc[back - 1]))
        consumed = stop


# Restart points where a warm-up of only the 21 candles before the restart re-seeds the EMAs
# and changes the signals after it (checked against the engine's earlier warm-up).
RESTARTS = [(250, 250), (420, 450)]


async def test_restart_replays_from_the_feed_start_and_gives_the_uninterrupted_signals(
    database: Database, bus: EventBus, btc: list[Candle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("strategy_engine.engine.REPLAY_PAGE", 17)  # many pages, odd boundaries
    await run_with_restarts(database, bus, btc, RESTARTS)

    warmup = btc[200 - 21 : 200]
    uninterrupted = expected_signals([*warmup, *btc[200:]], 9, 21)
    got = await published(bus)
    assert [s.id for s in got] == [s.id for s in uninterrupted]
    # A warm-up of only warmup_period candles before either restart gives other signals.
    for stop, _ in RESTARTS:
        reseeded = expected_signals(btc[stop - 21 :], 9, 21)
        after_stop = [s for s in uninterrupted if s.candle_time >= btc[stop].open_time]
        assert [s.id for s in reseeded if s.candle_time >= btc[stop].open_time] != [
            s.id for s in after_stop
        ]
    stored = await bus.redis.hgetall(bus.key("strategy-engine:feed-start"))
    assert {_key.decode(): int(v) for _key, v in stored.items()} == {
        "ema:9:21": int(warmup[0].open_time.timestamp() * 1000)
    }


async def test_first_start_on_an_empty_database_records_the_first_consumed_candle(
    database: Database, bus: EventBus, btc: list[Candle]
) -> None:
    await store(database, btc)  # none of them has closed at the first start
    engine = StrategyEngine([ema(9, 21)], sessions=database.sessions, bus=bus)
    await engine.start(now=btc[0].open_time)
    for candle in btc[:250]:
        await engine.on_candle(candle)
    restarted = StrategyEngine([ema(9, 21)], sessions=database.sessions, bus=bus)
    await restarted.start(now=after(btc[249]))
    for candle in btc[250:]:
        await restarted.on_candle(candle)
    assert [s.id for s in await published(bus)] == [s.id for s in expected_signals(btc, 9, 21)]


async def test_strategy_raising_in_warm_up_and_replay_is_contained(
    database: Database, bus: EventBus, btc: list[Candle], telegram_standin: TelegramStandIn
) -> None:
    notifier = TelegramNotifier(
        "1:token", "42", api_url=telegram_standin.api_url, enabled=True, min_interval=0.0
    )
    setup_logging("strategy-engine", "INFO", log_format="json", notifier=notifier)
    await notifier.start()
    await store(database, btc[:300])

    def instances() -> list[StrategyInstance]:
        broken = ExplodingStrategy({"after": 0})  # raises on every candle, warm-up included
        return [StrategyInstance("exploding", broken, "BTCUSDT", "1m"), ema()]

    errors = ERRORS_TOTAL.labels("strategy-engine", "ZeroDivisionError")
    errors_before = errors._value.get()
    # The alert goes through logging; signals need no Telegram here.
    first = StrategyEngine(instances(), sessions=database.sessions, bus=bus)
    await first.start(now=after(btc[99]))  # the warm-up raises: contained
    for candle in btc[100:200]:
        await first.on_candle(candle)
    assert first.failures(first.instances[0]) == 1 + 100  # its warm-up candle, then each one
    # A restart replays 99..199 through it (each raising again) and catches up on 200..299.
    second = StrategyEngine(instances(), sessions=database.sessions, bus=bus)
    await second.start(now=after(btc[299]))
    await notifier.close()

    assert second.failures(second.instances[0]) == 101 + 100
    assert errors._value.get() - errors_before == 101 + 201
    warmup = btc[100 - 13 : 100]
    assert await published(bus) == expected_signals([*warmup, *btc[100:300]])
    alerts = [m.text for m in telegram_standin.messages if "ZeroDivisionError" in m.text]
    assert len(alerts) == 2, alerts  # once per instance and process


async def stored_signal_ids(database: Database) -> list[str]:
    async with database.engine.connect() as connection:
        rows = await connection.exec_driver_sql("SELECT id FROM signals ORDER BY candle_time")
        return [row[0] for row in rows]


async def test_each_signal_is_stored_and_published_once(
    database: Database, bus: EventBus, btc: list[Candle]
) -> None:
    engine = StrategyEngine([ema()], sessions=database.sessions, bus=bus)
    await engine.start(now=btc[0].open_time)
    for candle in [*btc[:300], *btc[100:300]]:  # the second pass: redeliveries
        await engine.on_candle(candle)
    signals = expected_signals(btc[:300])
    assert len(signals) > 3
    assert await published(bus) == signals
    assert await stored_signal_ids(database) == [s.id for s in signals]
    assert engine.signals_published == len(signals)


async def test_a_process_that_died_after_publishing_before_storing_loses_no_signal(
    database: Database, bus: EventBus, btc: list[Candle]
) -> None:
    await store(database, btc[:300])
    signals = expected_signals(btc[:300])
    first = next(i for i, c in enumerate(btc) if c.open_time == signals[0].candle_time)
    dying = StrategyEngine([ema()], sessions=database.sessions, bus=bus)
    await dying.start(now=after(btc[12]))  # warmed up with candles 0..12
    for candle in btc[13:first]:
        await dying.on_candle(candle)
    # The signal's INSERT does not commit, its publish does; the process dies before its
    # candle's progress is saved.
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("ALTER TABLE signals RENAME TO signals_away")
    with pytest.raises(Exception, match="signals"):
        await dying.on_candle(btc[first])
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("ALTER TABLE signals_away RENAME TO signals")
    assert await published(bus) == signals[:1]
    assert await stored_signal_ids(database) == []

    restarted = StrategyEngine([ema()], sessions=database.sessions, bus=bus)
    await restarted.start(now=after(btc[299]))  # replays 0..first-1, catches up from first
    for candle in btc[first:300]:  # the bus redelivers what the dead process left unacked
        await restarted.on_candle(candle)
    # Every signal stored once; the one the dead process published is published once more
    # (same id: the order executor makes one order of both), none is lost.
    assert await stored_signal_ids(database) == [s.id for s in signals]
    assert await published(bus) == [signals[0], *signals]


async def test_a_signal_whose_insert_committed_before_its_connection_died_is_still_reported(
    database: Database, bus: EventBus, btc: list[Candle], telegram_standin: TelegramStandIn
) -> None:
    """The writer runs the INSERT again after a connection died with the commit done: the
    retry finds the row its own first run stored, and the signal is still counted and sent
    to Telegram (not taken for one an earlier process reported)."""
    await store(database, btc[:300])
    notifier = TelegramNotifier(
        "1:token", "42", api_url=telegram_standin.api_url, enabled=True, min_interval=0.0
    )
    await notifier.start()
    engine = StrategyEngine([ema()], sessions=database.sessions, bus=bus, notifier=notifier)
    engine.writer = RetryingWriter(database.engine)
    signals = expected_signals(btc[:300])
    counters = {side: SIGNALS_GENERATED_TOTAL.labels("ema_crossover", side.value) for side in Side}
    before = {side: counter._value.get() for side, counter in counters.items()}
    await engine.start(now=after(btc[12]))
    for candle in btc[13:300]:
        await engine.on_candle(candle)
    await notifier.close()

    assert await published(bus) == signals
    assert await stored_signal_ids(database) == [s.id for s in signals]
    for side, counter in counters.items():
        assert counter._value.get() - before[side] == sum(s.side is side for s in signals)
    texts = [m.text for m in telegram_standin.messages]
    assert len([t for t in texts if "BTCUSDT" in t]) == len(signals)
