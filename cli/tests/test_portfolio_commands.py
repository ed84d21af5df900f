"""`trading portfolio`: positions and PnL from the database, as a table or JSON."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal

from shared.db import add_snapshot, create_engine, create_sessionmaker, upsert_position
from shared.models import PortfolioSnapshot, Position
from trading_cli.main import app
from typer.testing import CliRunner

runner = CliRunner()
NOON = datetime(2024, 3, 1, 12, tzinfo=UTC)


def store(url: str) -> None:
    async def work() -> None:
        engine = create_engine(url)
        async with create_sessionmaker(engine).begin() as session:
            await upsert_position(
                session,
                Position(
                    symbol="BTCUSDT",
                    quantity=Decimal("0.5"),
                    avg_entry_price=Decimal(200),
                    realized_pnl=Decimal("249.35"),
                    unrealized_pnl=Decimal("24.9"),
                    fees_paid=Decimal("0.75"),
                    last_price=Decimal(250),
                    updated_at=NOON,
                ),
            )
            await add_snapshot(
                session,
                PortfolioSnapshot(
                    time=NOON,
                    cash=Decimal("10149.25"),
                    positions_value=Decimal(125),
                    total_value=Decimal("10274.25"),
                    realized_pnl=Decimal("249.35"),
                    unrealized_pnl=Decimal("24.9"),
                    fees_paid=Decimal("0.75"),
                ),
            )
        await engine.dispose()

    asyncio.run(work())


def test_portfolio_json_lists_positions_and_the_latest_snapshot(
    migrated_database_url: str,
) -> None:
    store(migrated_database_url)
    result = runner.invoke(
        app, ["portfolio", "--json"], env={"DATABASE_URL": migrated_database_url}
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    (position,) = shown["positions"]
    assert position["symbol"] == "BTCUSDT"
    assert Decimal(position["realized_pnl"]) == Decimal("249.35")
    assert Decimal(position["avg_entry_price"]) == Decimal(200)
    assert Decimal(shown["snapshot"]["total_value"]) == Decimal("10274.25")


def test_portfolio_table_shows_each_position_and_the_totals(migrated_database_url: str) -> None:
    store(migrated_database_url)
    result = runner.invoke(
        app, ["portfolio"], env={"DATABASE_URL": migrated_database_url, "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "BTCUSDT" in result.stdout
    assert "+249.35" in result.stdout and "+24.90" in result.stdout
    assert "total 10,274.25 USDT" in result.stdout


def test_empty_portfolio_says_so(migrated_database_url: str) -> None:
    result = runner.invoke(app, ["portfolio"], env={"DATABASE_URL": migrated_database_url})
    assert result.exit_code == 0, result.output
    assert "No positions yet" in result.stdout
    assert "No portfolio snapshot yet" in result.stdout
