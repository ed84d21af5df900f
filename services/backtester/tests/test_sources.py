"""The same candles from a file and from PostgreSQL give the same backtest, warm-up included."""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from backtester.data import (
    NoCandlesError,
    batch_candles,
    file_sha256,
    load_db_candles,
    load_file_candles,
)
from backtester.engine import BacktestConfig, BacktestEngine, BacktestResult
from backtester.export import result_dict
from shared.db import create_engine, create_sessionmaker, upsert_candles

from strategies.macd_strategy import MacdStrategy

START = datetime(2019, 2, 1, tzinfo=UTC)
END = datetime(2019, 3, 1, tzinfo=UTC)


def write_slice(source: Path, target: Path, first_ms: str, rows: int) -> None:
    with gzip.open(source, "rt") as src, gzip.open(target, "wt") as dst:
        reader = csv.reader(src)
        writer = csv.writer(dst, lineterminator="\n")
        writer.writerow(next(reader))
        written = 0
        for row in reader:
            if row[0] >= first_ms:
                writer.writerow(row)
                written += 1
                if written == rows:
                    return


def comparable(result: BacktestResult) -> str:
    """The JSON of a run without the manifest (which names the source)."""
    body = result_dict(result, {})
    body.pop("manifest")
    return json.dumps(body)


async def test_file_and_database_give_the_same_result(
    migrated_database_url: str, shared_data: Path, tmp_path: Path
) -> None:
    path = tmp_path / "BTCUSDT-1h.csv.gz"
    write_slice(shared_data / "BTCUSDT-1h.csv.gz", path, "1546300800000", 1600)  # 2019-01-01 on
    strategy = MacdStrategy({"quantity": "0.1"})
    warmup = strategy.warmup_period
    from_file = load_file_candles(path, "BTCUSDT", "1h", START, END, warmup)
    everything = load_file_candles(path, "BTCUSDT", "1h")

    engine = create_engine(migrated_database_url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            await upsert_candles(session, everything.candles)
            await session.commit()
        async with sessions() as session:
            from_db = await load_db_candles(session, "BTCUSDT", "1h", START, END, warmup)
            with pytest.raises(NoCandlesError, match="no BTCUSDT 1h candles"):
                await load_db_candles(session, "BTCUSDT", "1h", datetime(2030, 1, 1, tzinfo=UTC))
    finally:
        await engine.dispose()

    assert from_db.candles == from_file.candles and from_db.warmup == from_file.warmup
    assert len(from_file.warmup) == warmup and from_file.candles[0].open_time == START
    runner = BacktestEngine(strategy, BacktestConfig("BTCUSDT", "1h"))
    by_file = runner.run(from_file.candles, from_file.warmup)
    by_db = runner.run(from_db.candles, from_db.warmup)
    assert by_file.metrics.total_trades > 3
    assert comparable(by_file) == comparable(by_db)
    assert from_file.source["sha256"] == file_sha256(path)
    assert from_db.source["type"] == "database"


def test_fast_candle_building_equals_the_validated_models(
    shared_data: Path, tmp_path: Path
) -> None:
    from shared.candle_io import read_candle_file

    path = tmp_path / "BTCUSDT-15m.csv.gz"
    write_slice(shared_data / "BTCUSDT-15m.csv.gz", path, "0", 3000)  # all 11 columns
    [batch] = list(read_candle_file(path, "15m"))
    fast = batch_candles(batch, "BTCUSDT", "15m")
    validated = batch.to_candles("BTCUSDT", "15m")
    assert len(fast) == 3000 and fast == validated
    assert [c.model_dump() for c in fast] == [c.model_dump() for c in validated]
    assert fast[0].quote_volume is not None and fast[0].trades is not None
