"""One-row INSERT latency on the services' hot path: through SQLAlchemy, through
`DriverStatement` (what the services run), and asyncpg alone (the floor), in the same run.

    uv run --frozen python bench/bench_hot_insert.py [--count 300] [--idle-ms 10]

The executor's order INSERT (`INSERT ... ON CONFLICT DO NOTHING RETURNING *`, a committed
autocommit statement) on one held connection, each one after --idle-ms of sleep, as a
service wakes for each candle or signal; then the same back to back ("hot"). The three
cases take turns, one statement each, so load on the machine hits them alike. Uses
DATABASE_URL when set, else the embedded PostgreSQL; a scratch database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table
from shared.config import load_settings
from shared.db import (
    Writer,
    create_engine,
    database_url_from_settings,
    insert_order,
    upgrade_to_head_async,
)
from shared.models import Order, Side
from shared.repositories._convert import to_values
from shared.repositories.orders import INSERT_ORDER
from shared.testing.databases import scratch_database
from sqlalchemy.ext.asyncio import AsyncConnection

NOW = datetime.now(UTC)


def new_order() -> Order:
    return Order(
        client_order_id=uuid.uuid4().hex[:32],
        signal_id=uuid.uuid4().hex,
        strategy="macd",
        symbol="BTCUSDT",
        side=Side.BUY,
        quantity=Decimal("0.015"),
        price=Decimal("42000.5"),
        created_at=NOW,
        updated_at=NOW,
    )


async def measure(url: str, count: int, idle: float) -> dict[str, dict[str, list[float]]]:
    engine = create_engine(url, pool_pre_ping=False)
    writer = Writer(engine, hold=True)
    await writer.warm_up()
    sql, names = INSERT_ORDER.compiled(engine.dialect)

    async def through_sqlalchemy(connection: AsyncConnection, order: Order) -> Any:
        return (await connection.execute(INSERT_ORDER.statement, to_values(order))).mappings().one()

    async def through_driver_statement(connection: AsyncConnection, order: Order) -> Any:
        return await insert_order(connection, order)

    async def asyncpg_alone(connection: AsyncConnection, order: Order) -> Any:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        values = to_values(order)
        return await driver.fetchrow(sql, *(values[name] for name in names))

    cases: dict[str, Callable[[AsyncConnection, Order], Awaitable[Any]]] = {
        "SQLAlchemy Core execute": through_sqlalchemy,
        "DriverStatement (the services)": through_driver_statement,
        "asyncpg alone (floor)": asyncpg_alone,
    }
    times: dict[str, dict[str, list[float]]] = {"after idle": {}, "hot": {}}
    try:
        for phase, pause in (("after idle", idle), ("hot", 0.0)):
            for _ in track(range(count), description=f"{phase}: {count} rounds"):
                for name, run in cases.items():
                    order = new_order()
                    if pause:
                        await asyncio.sleep(pause)

                    def work(
                        connection: AsyncConnection, run: Any = run, order: Order = order
                    ) -> Any:
                        return run(connection, order)

                    started = time.perf_counter()
                    await writer.statement(work)
                    elapsed = (time.perf_counter() - started) * 1000
                    times[phase].setdefault(name, []).append(elapsed)
    finally:
        await writer.close()
        await engine.dispose()
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(times: dict[str, dict[str, list[float]]], idle_ms: float) -> None:
    table = Table(title=f"one-row order INSERT, committed (after {idle_ms:g} ms idle, and hot)")
    for column in ("case", "phase", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("case", "phase") else "right")
    for phase, cases in times.items():
        for name, values in cases.items():
            table.add_row(name, phase, *(f"{percentile(values, f):.3f}" for f in (0.5, 0.9, 0.99)))
    Console().print(table)


async def main(count: int, idle_ms: float) -> None:
    server = database_url_from_settings(load_settings())
    async with scratch_database(server, "bench_hot_insert") as url:
        await upgrade_to_head_async(url)
        times = await measure(url, count, idle_ms / 1000)
    report(times, idle_ms)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--idle-ms", type=float, default=10.0)
    args = parser.parse_args()
    if args.count < 1:
        parser.error(f"--count must be at least 1 (got {args.count})")
    if args.idle_ms < 0:
        parser.error(f"--idle-ms must be 0 or more (got {args.idle_ms:g})")
    asyncio.run(main(args.count, args.idle_ms))
