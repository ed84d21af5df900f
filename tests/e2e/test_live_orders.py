"""DRY_RUN=false against the exchange simulator: every signal that passes risk makes exactly
one order on the simulator, although every other order response is dropped after the order
was executed (and the first two order requests fail with HTTP 500).

The four services run as `trading run` starts them, on real candles, on real PostgreSQL and
Redis. The database (signals, orders, trades, positions) is compared with what the simulator
itself executed (/_sim/orders, /_sim/requests, /_sim/accounts).
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from shared.db import create_engine, create_sessionmaker, list_orders, list_positions, list_trades
from shared.models import Order, OrderStatus
from sqlalchemy import text
from trading_cli.run_commands import SIMULATOR

from tests.e2e.platform_harness import RunningPlatform, running_platform, write_slice

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# 2023-03-18T13:55 in the real file: 60 candles closed at start, then 120 live ones from
# 14:55 in which the price first drifts, then falls ~2.6 % (26,815 at 16:30): the pulse
# strategy's BUYs pile up a position whose loss trips the daily loss limit, so the later
# BUYs are rejected by risk while the earlier ones are sent.
SKIP, HISTORY, LIVE = 2380, 60, 120
CHUNK = 5
"""Candles closed at a time; the pipeline settles between chunks so that live orders fill
near their signal's price, as they would in real time."""
ORDER_PATH = "/api/v3/order"

PULSE_STRATEGY = """
from decimal import Decimal
from typing import ClassVar

from shared.models import Side
from shared.strategy import BaseStrategy, StrategyParams


class PulseParams(StrategyParams):
    quantity: Decimal = Decimal("0.025")


class PulseStrategy(BaseStrategy):
    \"\"\"BUYs on every live candle opening at a minute divisible by 10: signals that the
    test can count on, whatever the market does.\"\"\"

    name: ClassVar[str] = "pulse"
    params_model: ClassVar[type[StrategyParams]] = PulseParams

    @property
    def warmup_period(self) -> int:
        return 1

    def _reset_state(self) -> None:
        pass

    def _step(self, candle):
        if candle.open_time.minute % 10 == 0:
            return (Side.BUY, "pulse")
        return None
"""


def write_pulse_strategy(folder: Path) -> Path:
    plugins = folder / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "pulse_strategy.py").write_text(PULSE_STRATEGY)
    return plugins


async def settled(platform: RunningPlatform) -> bool:
    """Every consumer group has read and acknowledged every entry of every stream that
    exists yet (the signals and orders streams appear with their first event). Checked
    candles → signals → orders: a group acknowledges an event after handling it, so what
    it published is already in the next stream when the check reaches it."""
    redis = platform.redis
    for stream in ("candles", "signals", "orders"):
        key = platform.namespace + stream
        if not await redis.exists(key):
            if stream == "candles":
                return False
            continue
        info = await redis.xinfo_stream(key)
        for group in await redis.xinfo_groups(key):
            if group["pending"] or group["last-delivered-id"] != info["last-generated-id"]:
                return False
    return True


async def database_state(database_url: str) -> tuple[list[str], list[Order], list, list]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT id FROM signals"))
            signal_ids = [row[0] for row in rows]
        async with create_sessionmaker(engine)() as session:
            orders = await list_orders(session)
            trades = await list_trades(session)
            positions = await list_positions(session)
    finally:
        await engine.dispose()
    return signal_ids, orders, trades, positions


def command_line(pid: int) -> bytes:
    """A running process's arguments, as `ps` shows them to every local user."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def rejected_by_risk(order: Order) -> bool:
    return order.status is OrderStatus.REJECTED and (order.reason or "").startswith("risk:")


async def test_live_orders_reach_the_simulator_exactly_once_despite_dropped_responses(
    tmp_path: Path,
    shared_data: Path,
    migrated_database_url: str,
    redis_server_url: str,
    redis_namespace: str,
) -> None:
    data = write_slice(shared_data, tmp_path, HISTORY + LIVE, skip=SKIP)
    async with running_platform(
        tmp_path=tmp_path,
        data=data,
        database_url=migrated_database_url,
        redis_url=redis_server_url,
        namespace=redis_namespace,
        history=HISTORY,
        extra_strategies=("pulse",),
        env={
            "DRY_RUN": "false",
            "STRATEGIES_EXTRA_DIR": str(write_pulse_strategy(tmp_path)),
            # No size cap (a capped BUY after a dip is a sliver the exchange's filters
            # refuse, which is not what this test is about); a tight daily loss limit
            # rejects the BUYs once the fall has cost 0.25 % of the day's starting value.
            "RISK_MAX_POSITION_SIZE": "0",
            "RISK_DAILY_LOSS_LIMIT_PCT": "0.25",
        },
    ) as platform:
        await platform.sim(
            "POST", "faults", {"kind": "drop", "path": ORDER_PATH, "method": "POST", "every": 2}
        )
        await platform.sim(
            "POST", "faults", {"kind": "http_500", "path": ORDER_PATH, "method": "POST", "times": 2}
        )
        moved = 0
        while moved < LIVE:
            step = await platform.advance(min(CHUNK, LIVE - moved))
            await platform.wait_until(lambda: settled(platform), "the pipeline settled")
            if step == 0:  # the file's last candle stays open
                break
            moved += step
        await platform.wait_until(platform.drained, "every stream drained")
        sim_orders: list[dict[str, Any]] = (await platform.sim("GET", "orders"))["orders"]
        requests: list[dict[str, Any]] = (await platform.sim("GET", "requests"))["requests"]
        api_key = platform.platform.env["BINANCE_API_KEY"]
        accounts = (await platform.sim("GET", f"accounts?api_key={api_key}"))["accounts"]
        simulator = platform.platform.supervisor.process(SIMULATOR)
        assert simulator is not None
        simulator_command_line = command_line(simulator.pid)

    # The simulator got the key pair the services signed with from its environment: not on
    # its command line, which every local user can read (`ps`).
    api_secret = platform.platform.env["BINANCE_API_SECRET"]
    assert b"simulator" in simulator_command_line
    assert api_key.encode() not in simulator_command_line
    assert api_secret.encode() not in simulator_command_line

    signal_ids, orders, trades, positions = await database_state(migrated_database_url)

    # One order row per signal, none twice.
    by_signal = Counter(order.signal_id for order in orders if order.signal_id is not None)
    assert set(by_signal) == set(signal_ids)
    assert all(count == 1 for count in by_signal.values()), by_signal
    assert len({order.client_order_id for order in orders}) == len(orders)
    # Every order reached a final state: none left hanging by a lost response.
    assert [o.client_order_id for o in orders if not o.status.is_final] == []

    refused = [order for order in orders if rejected_by_risk(order)]
    passed = [order for order in orders if not rejected_by_risk(order)]
    assert refused, "the slice must trip the daily loss limit for the comparison to mean anything"
    assert {order.reason for order in refused} == {"risk: daily_loss_limit"}
    assert len(passed) >= 5

    # Exactly one simulator order per order that passed risk, and nothing else.
    on_sim = Counter(order["clientOrderId"] for order in sim_orders)
    assert all(count == 1 for count in on_sim.values()), on_sim
    assert set(on_sim) == {order.client_order_id for order in passed}
    # A risk-rejected order was never even sent.
    sent_ids = {r["client_order_id"] for r in requests if r["path"] == ORDER_PATH}
    assert sent_ids.isdisjoint(order.client_order_id for order in refused)

    # The faults really happened: responses dropped after execution, 500s before it (the
    # order was sent again after the lookup found nothing, still one order on the simulator).
    posts = [r for r in requests if r["path"] == ORDER_PATH and r["method"] == "POST"]
    # (A request hit by both faults is answered by neither: refused before executing, then
    # its connection closed; the simulator logs it "dropped" with both faults named.)
    dropped = [r for r in posts if r["fault"] == "drop"]
    assert len(dropped) >= 2
    assert all(r["status"] == "dropped" for r in dropped)
    assert {r["client_order_id"] for r in dropped} <= set(on_sim)
    failed = [r for r in posts if "http_500" in (r["fault"] or "")]
    assert len(failed) == 2
    posted = Counter(r["client_order_id"] for r in posts)
    assert all(posted[r["client_order_id"]] >= 2 for r in failed)

    # The database's final state of each order is the simulator's.
    remote = {order["clientOrderId"]: order for order in sim_orders}
    fills: dict[str, Decimal] = {}
    for trade in trades:
        fills[trade.client_order_id] = fills.get(trade.client_order_id, Decimal(0)) + trade.quantity
    for order in passed:
        sim = remote[order.client_order_id]
        executed = Decimal(sim["executedQty"])
        assert order.status.value == sim["status"] == "FILLED", (order, sim)
        assert order.exchange_order_id == str(sim["orderId"])
        assert order.filled_quantity == executed == order.quantity
        assert order.avg_fill_price == Decimal(sim["cummulativeQuoteQty"]) / executed
        assert fills[order.client_order_id] == executed
    assert set(fills) == {order.client_order_id for order in passed}

    # The position the portfolio manager keeps is what the simulator's account holds.
    held = {p.symbol: p.quantity for p in positions}.get("BTCUSDT", Decimal(0))
    assert held == Decimal(accounts[api_key]["BTC"]["free"])
