"""The live pipeline end to end: simulator → data-collector → strategy-engine → order-executor
→ portfolio-manager, each its own process (as `trading run` starts them), on real PostgreSQL
and Redis, compared with `trading backtest run` on the same candles."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from shared.db import create_engine, create_sessionmaker, latest_snapshot, list_trades
from sqlalchemy import text
from trading_cli.main import app
from typer.testing import CliRunner

from tests.e2e.platform_harness import running_platform, write_slice

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

HISTORY = 105
"""Candles closed before the services start: the slice starts 2023-03-16T22:15, so the first
live candle opens at 2023-03-17T00:00."""
LIVE = 400


async def db_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            counts = {}
            for table in ("candles", "signals", "orders", "trades"):
                result = await connection.execute(text(f"SELECT count(*) FROM {table}"))
                counts[table] = int(result.scalar_one())
            return counts
    finally:
        await engine.dispose()


def backtest(data: Path, start: datetime, end: datetime) -> dict:
    result = CliRunner().invoke(
        app,
        [
            "backtest", "run", "-s", "ema_crossover", "--data", str(data),
            "--start", start.isoformat(), "--end", end.isoformat(), "--output", "json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_dry_run_pipeline_matches_the_backtest_on_the_same_candles(
    tmp_path: Path,
    shared_data: Path,
    migrated_database_url: str,
    redis_server_url: str,
    redis_namespace: str,
) -> None:
    data = write_slice(shared_data, tmp_path, HISTORY + LIVE)
    async with running_platform(
        tmp_path=tmp_path,
        data=data,
        database_url=migrated_database_url,
        redis_url=redis_server_url,
        namespace=redis_namespace,
        history=HISTORY,
    ) as platform:
        moved = await platform.advance(LIVE)
        assert moved >= LIVE - 1  # the file's last candle may stay open
        await platform.wait_until(
            lambda: _stored(migrated_database_url, HISTORY + moved), "every candle stored"
        )
        await platform.wait_until(platform.drained, "every stream drained")
        probes = await platform.probes()

    counts = await db_counts(migrated_database_url)
    first_live = datetime(2023, 3, 17, tzinfo=UTC)
    last_open = first_live + timedelta(minutes=moved - 1)
    expected = backtest(data, first_live, last_open + timedelta(minutes=1))
    assert expected["run"]["start"] == first_live.isoformat()
    fills = sorted(
        [(t["entry_time"], "BUY", Decimal(t["entry_price"]), Decimal(t["quantity"]))
         for t in expected["trades"]]
        + [(t["exit_time"], "SELL", Decimal(t["exit_price"]), Decimal(t["quantity"]))
           for t in expected["trades"] if t["exit_time"]]
        + [(p["entry_time"], "BUY", Decimal(p["avg_entry_price"]), Decimal(p["quantity"]))
           for p in [expected["run"]["open_position"]] if p]
    )  # fmt: skip
    engine = create_engine(migrated_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            trades = await list_trades(session)
            snapshot = await latest_snapshot(session)
    finally:
        await engine.dispose()
    live_fills = sorted((t.time.isoformat(), t.side.value, t.price, t.quantity) for t in trades)
    assert expected["trades"], "the slice must trade for the comparison to mean anything"
    assert live_fills == fills
    assert counts["signals"] == expected["run"]["execution"]["signals"]
    assert counts["orders"] == counts["signals"]
    assert snapshot is not None
    assert snapshot.time >= last_open
    assert snapshot.total_value == Decimal(expected["run"]["final_equity"])
    assert probes["portfolio-manager"].metrics["portfolio_value"] == pytest.approx(
        float(expected["run"]["final_equity"])
    )


async def _stored(database_url: str, count: int) -> bool:
    return (await db_counts(database_url))["candles"] >= count
