"""Each risk rule triggers on a constructed case in the running platform, and the rejection
is counted (`risk_rejections_total{reason}` on the order executor's /metrics) and reported
(the order row's reason, the Telegram stand-in's order message).

The candles are built here: flat at 20,000 with one 6 % fall, across a UTC midnight. A plugin
strategy BUYs on exactly the candles marked with a volume of 11, so each rule is met when
the test decides (dry run: the executor fills at the next candle's open):

    23:30 BUY 0.06         passes (1,200 of a 10,000 portfolio; the cap is 20 %)
    23:32 BUY 0.06         reduced to what fits under the cap     → max_position_size
    23:34 BUY 0.06         rejected, the cap is reached           → max_position_size
    23:35 close 18,800     6 % below the entry: the position is sold → stop_loss; the day
                           has lost more than 1 %                  → BUYs halted
    23:37, 23:59 BUY       rejected for the rest of the UTC day   → daily_loss_limit
    00:01 BUY 0.06         a new day: passes again
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from shared.db import create_engine, create_sessionmaker, get_signal, list_orders, list_trades
from shared.fill_model import QUANTITY_STEP, FillModel
from shared.models import Candle, Order, OrderStatus, Side

from tests.e2e.platform_harness import RunningPlatform, running_platform

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

START = datetime(2024, 1, 1, 23, 0, tzinfo=UTC)
HISTORY = 30  # 23:00-23:29 closed before the services start
PRICE, FALLEN = Decimal(20_000), Decimal(18_800)
QUANTITY = Decimal("0.06")
CASH = Decimal(10_000)
MAX_POSITION, STOP_LOSS_PCT, DAILY_LOSS_PCT = Decimal("0.2"), Decimal(5), Decimal(1)
BUY_MARK = Decimal(11)

MARKED_STRATEGY = """
from decimal import Decimal
from typing import ClassVar

from shared.models import Side
from shared.strategy import BaseStrategy, StrategyParams


class MarkedParams(StrategyParams):
    quantity: Decimal = Decimal("0.06")


class MarkedStrategy(BaseStrategy):
    \"\"\"BUYs on the candles whose volume is 11 (the test marks them), never otherwise.\"\"\"

    name: ClassVar[str] = "marked"
    params_model: ClassVar[type[StrategyParams]] = MarkedParams

    @property
    def warmup_period(self) -> int:
        return 1

    def _reset_state(self) -> None:
        pass

    def _step(self, candle):
        if candle.volume == Decimal(11):
            return (Side.BUY, "marked candle")
        return None
"""


def at(hour: int, minute: int) -> datetime:
    day = START.date() if hour >= START.hour else START.date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


BUYS = [at(23, 30), at(23, 32), at(23, 34), at(23, 37), at(23, 59), at(0, 1)]
FALL = at(23, 35)


def constructed_candles() -> list[Candle]:
    """23:00 to 00:03: flat at 20,000 until the 23:35 candle closes at 18,800, flat there
    after; the BUY candles marked by their volume."""
    candles = []
    time = START
    while time <= at(0, 3):
        if time < FALL:
            open_, close = PRICE, PRICE
        elif time == FALL:
            open_, close = PRICE, FALLEN
        else:
            open_, close = FALLEN, FALLEN
        candles.append(
            Candle(
                symbol="BTCUSDT",
                interval="1m",
                open_time=time,
                open=open_,
                high=max(open_, close),
                low=min(open_, close),
                close=close,
                volume=BUY_MARK if time in BUYS else Decimal(1),
            )
        )
        time += timedelta(minutes=1)
    return candles


def write_candles(folder: Path, candles: list[Candle]) -> Path:
    """The candles as a file in the real data's CSV layout (the simulator replays it)."""
    path = folder / "BTCUSDT-1m.csv"
    lines = ["open_time,open,high,low,close,volume,close_time,quote_volume,trades,"
             "taker_buy_base,taker_buy_quote"]  # fmt: skip
    for c in candles:
        ms = int(c.open_time.timestamp() * 1000)
        lines.append(f"{ms},{c.open},{c.high},{c.low},{c.close},{c.volume},,,,,")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_engine(folder: Path) -> tuple[Path, Path]:
    """The marked strategy alone on BTCUSDT 1m: (engine config, plugins folder)."""
    plugins = folder / "plugins"
    plugins.mkdir()
    (plugins / "marked_strategy.py").write_text(MARKED_STRATEGY)
    config = folder / "risk-engine.yaml"
    config.write_text("instances:\n  - strategy: marked\n    symbol: BTCUSDT\n    interval: 1m\n")
    return config, plugins


class Orders:
    """The orders in the database, each with the candle time of its signal."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def load(self) -> list[tuple[datetime | None, Order]]:
        engine = create_engine(self.database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                result = []
                for order in await list_orders(session):
                    signal = None
                    if order.signal_id is not None:
                        signal = await get_signal(session, order.signal_id)
                    result.append((None if signal is None else signal.candle_time, order))
                return result
        finally:
            await engine.dispose()

    def final_for(self, candle_time: datetime) -> Callable[[], Awaitable[Order | None]]:
        """A condition: the order of the BUY signal of `candle_time`, once final."""

        async def condition() -> Order | None:
            for time, order in await self.load():
                if time == candle_time and order.status.is_final:
                    return order
            return None

        return condition

    async def stop_losses(self) -> list[Order]:
        return [o for _, o in await self.load() if o.reason == "risk: stop_loss"]


async def executor_metric(platform: RunningPlatform, name: str) -> dict[str, float]:
    """One labelled counter of the order executor's /metrics: {first label value: value}."""
    (spec,) = [s for s in platform.specs if s.name == "order-executor"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{spec.health_port}/metrics") as response,
    ):
        body = await response.text()
    return {
        next(iter(sample.labels.values())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name
    }


async def test_each_risk_rule_triggers_and_is_counted_and_reported(
    tmp_path: Path,
    migrated_database_url: str,
    redis_server_url: str,
    redis_namespace: str,
) -> None:
    candles = constructed_candles()
    config, plugins = write_engine(tmp_path)
    orders = Orders(migrated_database_url)
    async with running_platform(
        tmp_path=tmp_path,
        data=write_candles(tmp_path, candles),
        database_url=migrated_database_url,
        redis_url=redis_server_url,
        namespace=redis_namespace,
        history=HISTORY,
        env={
            "STRATEGY_ENGINE_CONFIG": str(config),
            "STRATEGIES_EXTRA_DIR": str(plugins),
            "PORTFOLIO_INITIAL_CASH": str(CASH),
            "RISK_MAX_POSITION_SIZE": str(MAX_POSITION),
            "RISK_STOP_LOSS_PCT": str(STOP_LOSS_PCT),
            "RISK_DAILY_LOSS_LIMIT_PCT": str(DAILY_LOSS_PCT),
        },
    ) as platform:

        async def close_until(open_time: datetime) -> None:
            """Close every candle up to and including the one opening at `open_time`."""
            state = await platform.sim("GET", "state")
            current = datetime.fromtimestamp(state["replay"]["current_open_time"] / 1000, UTC)
            count = int((open_time - current) / timedelta(minutes=1)) + 1
            assert count >= 1, f"{open_time} is already closed"
            assert await platform.advance(count) == count

        async def final(candle_time: datetime, what: str) -> Order:
            order: Order = await platform.wait_until(orders.final_for(candle_time), what, 60)
            return order

        # Max position size: the first BUY passes, the second is reduced to fit, the third
        # finds no room (each waits for the fill before it: dry run fills at the next open).
        await close_until(at(23, 31))
        first = await final(at(23, 30), "the first BUY filled")
        await close_until(at(23, 33))
        reduced = await final(at(23, 32), "the reduced BUY filled")
        await close_until(at(23, 34))
        capped = await final(at(23, 34), "the BUY over the cap rejected")

        # Stop loss: the 23:35 candle closes 6 % below the entry; the SELL fills at 23:36.
        await close_until(at(23, 36))
        (stop_loss,) = await platform.wait_until(
            lambda: _final_only(orders.stop_losses()), "the stop-loss SELL filled", 60
        )

        # Daily loss limit: that fall lost more than 1 % of the day's value: no BUY today.
        await close_until(at(23, 37))
        halted = await final(at(23, 37), "the BUY after the loss rejected")
        await close_until(at(23, 59))
        still_halted = await final(at(23, 59), "the day's last BUY rejected")
        # After 00:00 UTC the limit starts over (the executor keeps its day in Redis).
        await close_until(at(0, 0))
        risk_key = f"{redis_namespace}order-executor:risk"

        async def new_day() -> bool:
            raw = await platform.redis.get(risk_key)
            return raw is not None and json.loads(raw)["day"] == at(0, 0).date().isoformat()

        await platform.wait_until(new_day, "the executor seeing the new UTC day", 60)
        await close_until(at(0, 2))
        next_day = await final(at(0, 1), "the next day's BUY filled")

        rejections = await platform.wait_until(
            lambda: _counted(platform), "the rejections counted on /metrics", 30
        )
        reported = await platform.wait_until(
            lambda: _reported(platform), "every risk order reported to Telegram", 60
        )

    fee_rate = FillModel().fee_rate
    assert first.status is OrderStatus.FILLED
    assert (first.filled_quantity, first.avg_fill_price) == (QUANTITY, PRICE)
    assert first.reason == "marked candle"
    # Reduced to exactly the room left under 20 % of the portfolio (cash less the first fee).
    value = CASH - QUANTITY * PRICE * fee_rate
    room = (MAX_POSITION * value - QUANTITY * PRICE) / PRICE
    assert reduced.status is OrderStatus.FILLED
    assert reduced.quantity == reduced.filled_quantity == room.quantize(QUANTITY_STEP, ROUND_DOWN)
    assert Decimal(0) < reduced.quantity < QUANTITY
    assert reduced.reason == "risk: max_position_size"
    assert capped.status is OrderStatus.REJECTED
    assert capped.reason == "risk: max_position_size"
    assert capped.filled_quantity == 0

    assert stop_loss.side is Side.SELL
    assert stop_loss.status is OrderStatus.FILLED
    assert stop_loss.filled_quantity == first.quantity + reduced.quantity  # all of it
    assert stop_loss.avg_fill_price == FALLEN  # the open after the fall
    assert stop_loss.signal_id is None  # the executor's own order, no strategy asked for it

    for order in (halted, still_halted):
        assert order.status is OrderStatus.REJECTED
        assert order.reason == "risk: daily_loss_limit"
    assert next_day.status is OrderStatus.FILLED
    assert next_day.filled_quantity == QUANTITY
    assert next_day.reason == "marked candle"

    # Every BUY made exactly one order; the fills are the three filled orders' and the SELL's.
    stored = await orders.load()
    assert sorted(t for t, _ in stored if t is not None) == BUYS
    engine = create_engine(migrated_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            trades = await list_trades(session)
    finally:
        await engine.dispose()
    assert sorted(t.client_order_id for t in trades) == sorted(
        o.client_order_id for o in (first, reduced, stop_loss, next_day)
    )

    assert rejections == {"max_position_size": 2.0, "stop_loss": 1.0, "daily_loss_limit": 2.0}
    assert reported == {
        ("filled", "risk: max_position_size"): 1,
        ("rejected", "risk: max_position_size"): 1,
        ("filled", "risk: stop_loss"): 1,
        ("rejected", "risk: daily_loss_limit"): 2,
    }


async def _final_only(pending: Awaitable[list[Order]]) -> list[Order] | None:
    found = await pending
    return found if found and all(o.status.is_final for o in found) else None


async def _counted(platform: RunningPlatform) -> dict[str, float] | None:
    counted = await executor_metric(platform, "risk_rejections_total")
    return counted if sum(counted.values()) >= 5 else None


async def _reported(platform: RunningPlatform) -> dict[tuple[str, str], int] | None:
    """The stand-in's order messages that name a risk reason, by (status, reason)."""
    found: dict[tuple[str, str], int] = {}
    for message in platform.standin.messages:
        lines = message.text.splitlines()
        if not lines or "<b>Order " not in lines[0]:
            continue
        status = lines[0].split("<b>Order ", 1)[1].split("</b>", 1)[0]
        for line in lines:
            if line.startswith("Reason: risk: "):
                key = (status, line.removeprefix("Reason: "))
                found[key] = found.get(key, 0) + 1
    return found if sum(found.values()) >= 5 else None
