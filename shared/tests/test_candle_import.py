"""Importing candle files into PostgreSQL: every format stores the same candles; a bad row
stores nothing of its file."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared.candle_io import CandleFileError
from shared.candle_io.importer import import_candle_file
from shared.db import candles_between, create_engine, create_sessionmaker, find_gaps
from shared.models import Candle
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


def real_lines(shared_data: Path, name: str, count: int) -> list[str]:
    with gzip.open(shared_data / name, "rt") as file:
        return [next(file).rstrip("\n") for _ in range(count + 1)]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def sessions(migrated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def stored(sessions: async_sessionmaker[AsyncSession], symbol: str) -> list[Candle]:
    async with sessions() as session:
        return await candles_between(session, symbol, "15m")


def without_symbol(candles: list[Candle]) -> list[dict[str, object]]:
    return [candle.model_dump(exclude={"symbol"}) for candle in candles]


async def test_every_format_stores_the_same_candles_as_the_csv(
    sessions: async_sessionmaker[AsyncSession], shared_data: Path, tmp_path: Path
) -> None:
    lines = real_lines(shared_data, "BTCUSDT-15m.csv.gz", 400)
    raw_lines = [f"{line},0" for line in lines[1:]]  # Binance's archive: no header, 12 columns
    raw_text = "\n".join(raw_lines) + "\n"
    rows = [line.split(",") for line in lines[1:]]
    files = {
        "CSV": write(tmp_path / "candles.csv", lines),
        "RAWPLAIN": write(tmp_path / "raw.csv", raw_lines),
        "RAWGZIP": tmp_path / "raw.csv.gz",
        "PARQUET": tmp_path / "candles.parquet",
    }
    files["RAWGZIP"].write_bytes(gzip.compress(raw_text.encode()))
    pq.write_table(
        pa.table(
            {name: pa.array([row[i] for row in rows]) for i, name in enumerate(lines[0].split(","))}
        ).set_column(0, "open_time", pa.array([int(row[0]) for row in rows], pa.int64())),
        files["PARQUET"],
    )

    for symbol, path in files.items():
        report = await import_candle_file(sessions, path, symbol, "15m")
        assert (report.rows_read, report.new) == (400, 400), symbol

    reference = without_symbol(await stored(sessions, "CSV"))
    assert len(reference) == 400
    # NUMERIC keeps the file's digits: the stored values print as the CSV's text.
    stored_text = [[str(c[name]) for name in ("open", "high", "low", "close")] for c in reference]
    assert stored_text == [row[1:5] for row in rows]
    for symbol in ("RAWPLAIN", "RAWGZIP", "PARQUET"):
        assert without_symbol(await stored(sessions, symbol)) == reference, symbol


async def test_a_corrupt_row_stores_nothing_of_its_file(
    sessions: async_sessionmaker[AsyncSession], shared_data: Path, tmp_path: Path
) -> None:
    lines = real_lines(shared_data, "BTCUSDT-15m.csv.gz", 3000)
    first = await import_candle_file(
        sessions, write(tmp_path / "first.csv", lines[:1001]), "BTCUSDT", "15m"
    )
    assert first.new == 1000
    before = await stored(sessions, "BTCUSDT")

    # Rows 501..3000: half overlap what is stored, half are new; line 2001 is corrupt
    # (high below close), far past the first batch of rows handed to the database.
    fields = lines[2000].split(",")
    fields[2] = str(min(float(fields[1]), float(fields[4])) - 1)
    corrupt = [lines[0], *lines[501:2000], ",".join(fields), *lines[2001:]]
    path = write(tmp_path / "corrupt.csv", corrupt)
    line_number = corrupt.index(",".join(fields)) + 1

    stored_batches: list[int] = []
    with pytest.raises(CandleFileError) as caught:
        await import_candle_file(
            sessions,
            path,
            "BTCUSDT",
            "15m",
            block_bytes=32 << 10,
            progress=lambda done, total: stored_batches.append(done),
        )

    assert len(stored_batches) >= 3  # batches before the bad row had gone to the database

    assert caught.value.location == f"line {line_number}"
    assert f"high {fields[2]} is below" in str(caught.value)
    assert await stored(sessions, "BTCUSDT") == before


async def test_gaps_are_found_in_the_stored_series(
    sessions: async_sessionmaker[AsyncSession], shared_data: Path, tmp_path: Path
) -> None:
    lines = real_lines(shared_data, "BTCUSDT-15m.csv.gz", 100)
    holed = [lines[0], *lines[1:41], *lines[44:]]  # drop three candles: rows 41..43

    report = await import_candle_file(
        sessions, write(tmp_path / "holed.csv", holed), "BTCUSDT", "15m"
    )

    async with sessions() as session:
        gaps = await find_gaps(session, "BTCUSDT", "15m")
    assert report.gaps == gaps
    assert [gap.missing_candles for gap in gaps] == [3]
    first_missing_ms = int(lines[41].split(",")[0])
    assert gaps[0].start.timestamp() * 1000 == first_missing_ms
    assert gaps[0].end.timestamp() * 1000 == first_missing_ms + 2 * 15 * 60_000


async def test_overlapping_files_store_only_the_new_candles(
    sessions: async_sessionmaker[AsyncSession], shared_data: Path, tmp_path: Path
) -> None:
    lines = real_lines(shared_data, "BTCUSDT-15m.csv.gz", 500)
    await import_candle_file(sessions, write(tmp_path / "a.csv", lines[:301]), "BTCUSDT", "15m")
    alone = await stored(sessions, "BTCUSDT")

    # Rows 201..500 in small batches: some batches overlap what is stored, some do not.
    report = await import_candle_file(
        sessions,
        write(tmp_path / "b.csv", [lines[0], *lines[201:]]),
        "BTCUSDT",
        "15m",
        block_bytes=8 << 10,
    )

    assert (report.rows_read, report.new, report.already_present) == (300, 200, 100)
    after = await stored(sessions, "BTCUSDT")
    assert after[:300] == alone
    assert [int(c.open_time.timestamp() * 1000) for c in after] == [
        int(line.split(",")[0]) for line in lines[1:]
    ]
