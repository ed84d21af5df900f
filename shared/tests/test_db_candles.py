"""Candle repository on a real PostgreSQL: idempotent bulk upsert, ranges, gaps, summaries."""

from __future__ import annotations

import asyncio
import csv
import gzip
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from shared.db import (
    CandleGap,
    candle_series_summary,
    candles_between,
    create_engine,
    create_sessionmaker,
    find_gaps,
    latest_candle,
    recent_candles,
    upsert_candles,
)
from shared.models import Candle
from shared.repositories.candles import COPY_THRESHOLD, upsert_candle_rows
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import sa_models

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
async def sessions(migrated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def make_candles(
    count: int, *, symbol: str = "BTCUSDT", interval: str = "1m", start: datetime = START
) -> list[Candle]:
    step = timedelta(minutes=1) if interval == "1m" else timedelta(hours=1)
    candles = []
    for index in range(count):
        price = Decimal(20000) + Decimal(index) / 100
        candles.append(
            Candle(
                symbol=symbol,
                interval=interval,
                open_time=start + index * step,
                open=price,
                high=price + 5,
                low=price - 5,
                close=price + 1,
                volume=Decimal("1.5"),
                quote_volume=Decimal("30000.25"),
                trades=index,
            )
        )
    return candles


def read_shared_csv(path: Path, symbol: str, interval: str) -> list[Candle]:
    """The ../shared/data format, read plainly (the importer has its own tests)."""
    with gzip.open(path, "rt", newline="") as handle:
        rows = csv.DictReader(handle)
        return [
            Candle(
                symbol=symbol,
                interval=interval,
                open_time=datetime.fromtimestamp(int(row["open_time"]) / 1000, UTC),
                open=Decimal(row["open"]),
                high=Decimal(row["high"]),
                low=Decimal(row["low"]),
                close=Decimal(row["close"]),
                volume=Decimal(row["volume"]),
                quote_volume=Decimal(row["quote_volume"]) if row["quote_volume"] else None,
                trades=int(row["trades"]) if row["trades"] else None,
            )
            for row in rows
        ]


async def count_candles(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return (
            await session.execute(select(func.count()).select_from(sa_models.CandleRow))
        ).scalar_one()


async def test_a_few_candles_are_stored_once_however_often_upserted(sessions) -> None:
    candles = make_candles(10)

    async with sessions.begin() as session:
        assert await upsert_candles(session, candles) == 10
    async with sessions.begin() as session:
        assert await upsert_candles(session, candles) == 0
        assert await upsert_candles(session, []) == 0

    assert await count_candles(sessions) == 10


async def test_a_stored_candle_is_not_overwritten_by_a_later_upsert(sessions) -> None:
    original = make_candles(1)[0]
    changed = original.model_copy(update={"close": Decimal("1")})
    async with sessions.begin() as session:
        await upsert_candles(session, [original])
        assert await upsert_candles(session, [changed]) == 0

    async with sessions() as session:
        assert await latest_candle(session, "BTCUSDT", "1m") == original


def gaps_by_scanning(candles: list[Candle], step: timedelta) -> list[CandleGap]:
    """The reference: walk the series in Python and note every jump of more than one step."""
    gaps = []
    for before, after in itertools.pairwise(candles):
        missing = (after.open_time - before.open_time) // step - 1
        if missing > 0:
            gaps.append(
                CandleGap(
                    start=before.open_time + step,
                    end=after.open_time - step,
                    missing_candles=missing,
                )
            )
    return gaps


async def test_real_file_imported_twice_keeps_every_candle_once_and_shows_its_gap(
    sessions, shared_data: Path
) -> None:
    # ETHUSDT-5m: 13,217 real candles with one 16-candle outage (../shared/data/README.md).
    # The 71,041-candle BTCUSDT-1m file goes through `trading data import` in its own tests.
    candles = read_shared_csv(shared_data / "ETHUSDT-5m.csv.gz", "ETHUSDT", "5m")
    assert len(candles) == 13_217 > COPY_THRESHOLD  # so this is the bulk COPY path

    async with sessions.begin() as session:
        assert await upsert_candles(session, candles) == 13_217
    async with sessions.begin() as session:
        assert await upsert_candles(session, candles) == 0

    assert await count_candles(sessions) == 13_217
    async with sessions() as session:
        gaps = await find_gaps(session, "ETHUSDT", "5m")
        summary = await candle_series_summary(session)
        stored = await candles_between(session, "ETHUSDT", "5m")
    assert gaps == gaps_by_scanning(candles, timedelta(minutes=5))
    assert [(gap.start.date(), gap.missing_candles) for gap in gaps] == [(date(2023, 3, 24), 16)]
    assert [(s.symbol, s.interval, s.rows, s.gaps, s.missing_candles) for s in summary] == [
        ("ETHUSDT", "5m", 13_217, 1, 16)
    ]
    assert (summary[0].first, summary[0].last) == (candles[0].open_time, candles[-1].open_time)
    assert stored == candles


async def test_bulk_upsert_overlapping_stored_candles_adds_only_the_new_ones(sessions) -> None:
    candles = make_candles(3 * COPY_THRESHOLD)
    first_part = candles[: 2 * COPY_THRESHOLD]
    async with sessions.begin() as session:
        assert await upsert_candles(session, first_part) == len(first_part)
    async with sessions.begin() as session:
        assert await upsert_candles(session, candles) == COPY_THRESHOLD

    async with sessions() as session:
        assert await candles_between(session, "BTCUSDT", "1m") == candles


async def test_bulk_upsert_with_repeated_candles_stores_each_once(sessions) -> None:
    candles = make_candles(COPY_THRESHOLD + 1)
    async with sessions.begin() as session:
        assert await upsert_candles(session, candles + candles[:10]) == len(candles)

    assert await count_candles(sessions) == len(candles)


async def test_rolling_back_the_callers_transaction_stores_nothing(sessions) -> None:
    async with sessions() as session:
        assert await upsert_candles(session, make_candles(COPY_THRESHOLD + 5)) == COPY_THRESHOLD + 5
        assert await upsert_candles(session, make_candles(3, interval="1h")) == 3
        await session.rollback()

    assert await count_candles(sessions) == 0


async def test_several_bulk_upserts_in_one_transaction(sessions) -> None:
    btc = make_candles(COPY_THRESHOLD + 1)
    eth = make_candles(COPY_THRESHOLD + 1, symbol="ETHUSDT")
    async with sessions.begin() as session:
        assert await upsert_candles(session, btc) == len(btc)
        assert await upsert_candles(session, btc + eth) == len(eth)  # merge path, after COPY
        assert await upsert_candles(session, eth) == 0

    assert await count_candles(sessions) == len(btc) + len(eth)


async def _wait_until_blocked_on_a_lock(sessions: async_sessionmaker[AsyncSession]) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with sessions() as session:
        for _ in range(2000):
            if (await session.execute(query)).scalar_one() > 0:
                return
            await session.rollback()
            await asyncio.sleep(0.005)  # polling a condition, not standing in for it
    raise AssertionError("the second import never waited on the first one's row")


async def test_bulk_upsert_racing_another_writer_falls_back_to_merging(sessions) -> None:
    candles = make_candles(COPY_THRESHOLD + 100)
    async with sessions() as writer:
        # Another writer stores one of the candles but has not committed yet: the bulk
        # upsert cannot see it, takes the COPY path, and waits on that row.
        assert await upsert_candles(writer, [candles[500]]) == 1
        async with sessions.begin() as importer:
            racing = asyncio.create_task(upsert_candles(importer, candles))
            await _wait_until_blocked_on_a_lock(sessions)
            await writer.commit()
            assert await racing == len(candles) - 1

    assert await count_candles(sessions) == len(candles)


def copy_text(candles: list[Candle]) -> bytes:
    """The COPY CSV `upsert_candle_rows` takes, written by hand as the importer would."""
    lines = [
        f"{c.symbol},{c.interval},{c.open_time.isoformat()},{c.open},{c.high},{c.low},"
        f"{c.close},{c.volume},{'' if c.quote_volume is None else c.quote_volume},"
        f"{'' if c.trades is None else c.trades},{c.closed}"
        for c in candles
    ]
    return ("\n".join(lines) + "\n").encode()


async def test_text_rows_go_through_the_same_idempotent_upsert(sessions) -> None:
    # The importer's path: COPY text straight in; on overlap, the staging merge keeps the
    # stored candle (first write wins) and counts only the new ones.
    candles = make_candles(50)
    changed = [c.model_copy(update={"close": c.close + 1}) for c in candles[:20]]
    async with sessions.begin() as session:
        assert await upsert_candle_rows(session, copy_text(candles[10:30]), 20) == 20
    async with sessions.begin() as session:
        assert await upsert_candle_rows(session, copy_text(changed + candles[20:]), 50) == 30
        assert await upsert_candle_rows(session, b"", 0) == 0
    async with sessions() as session:
        await upsert_candle_rows(session, copy_text(make_candles(5, symbol="ETHUSDT")), 5)
        await session.rollback()

    async with sessions() as session:
        stored = await candles_between(session, "BTCUSDT", "1m")
    assert stored == changed[:10] + candles[10:]
    assert await count_candles(sessions) == 50


async def test_candles_between_is_half_open_and_oldest_first(sessions) -> None:
    candles = make_candles(10)
    async with sessions.begin() as session:
        await upsert_candles(session, list(reversed(candles)))
        await upsert_candles(session, make_candles(5, symbol="ETHUSDT"))

    async with sessions() as session:
        middle = await candles_between(
            session, "BTCUSDT", "1m", candles[2].open_time, candles[5].open_time
        )
        from_start = await candles_between(session, "BTCUSDT", "1m", start=candles[8].open_time)
        until_end = await candles_between(session, "BTCUSDT", "1m", end=candles[1].open_time)
        other = await candles_between(session, "BTCUSDT", "1h")

    assert middle == candles[2:5]
    assert from_start == candles[8:]
    assert until_end == candles[:1]
    assert other == []


async def test_naive_datetimes_are_rejected_with_a_clear_error(sessions) -> None:
    async with sessions() as session:
        with pytest.raises(ValueError, match="start must be a timezone-aware datetime"):
            await candles_between(session, "BTCUSDT", "1m", datetime(2024, 1, 1))


async def test_latest_and_recent_candles(sessions) -> None:
    candles = make_candles(20)
    async with sessions.begin() as session:
        assert await latest_candle(session, "BTCUSDT", "1m") is None
        await upsert_candles(session, candles)

    async with sessions() as session:
        assert await latest_candle(session, "BTCUSDT", "1m") == candles[-1]
        assert await recent_candles(session, "BTCUSDT", "1m", 3) == candles[-3:]
        assert (
            await recent_candles(session, "BTCUSDT", "1m", 4, before=candles[10].open_time)
            == candles[6:10]
        )


async def test_prices_come_back_exact_and_times_utc_aware(sessions) -> None:
    tiny = Decimal("0.00000001")
    huge = Decimal("123456789012345678901234567890.123456789012345678")
    candle = Candle(
        symbol="BTCUSDT",
        interval="1m",
        open_time=datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=9))),
        open=tiny,
        high=huge,
        low=tiny,
        close=huge,
        volume=tiny,
        quote_volume=huge,
        trades=2**40,
        closed=False,
    )
    async with sessions.begin() as session:
        await upsert_candles(session, [candle])

    async with sessions() as session:
        stored = await latest_candle(session, "BTCUSDT", "1m")
    assert stored == candle
    assert stored is not None
    assert (stored.open, stored.high, stored.trades, stored.closed) == (tiny, huge, 2**40, False)
    assert str(stored.high) == str(huge)
    assert stored.open_time.utcoffset() == timedelta(0)
    assert stored.open_time == datetime(2024, 5, 1, 0, 30, tzinfo=UTC)


async def test_bulk_path_keeps_extreme_values_and_nulls_exact(sessions) -> None:
    tiny = Decimal("0.00000001")
    huge = Decimal("123456789012345678901234567890.123456789012345678")
    candles = make_candles(COPY_THRESHOLD + 1)
    candles[0] = candles[0].model_copy(
        update={"open": tiny, "high": huge, "low": tiny, "quote_volume": None, "trades": None}
    )
    candles[1] = candles[1].model_copy(update={"close": huge, "volume": tiny, "closed": False})
    async with sessions.begin() as session:
        assert await upsert_candles(session, candles) == len(candles)  # the COPY path

    async with sessions() as session:
        stored = await candles_between(session, "BTCUSDT", "1m")
    assert stored == candles
    assert (stored[0].open, stored[0].high, stored[0].quote_volume, stored[0].trades) == (
        tiny,
        huge,
        None,
        None,
    )
    assert str(stored[1].close) == str(huge)
    assert stored[1].closed is False
    assert all(candle.open_time.utcoffset() == timedelta(0) for candle in stored)


async def test_gaps_and_summary_per_series(sessions) -> None:
    btc = make_candles(10)
    del btc[3:6]  # 3 missing after the third candle
    del btc[-2]  # 1 missing before the last
    eth_hourly = make_candles(4, symbol="ETHUSDT", interval="1h")
    async with sessions.begin() as session:
        await upsert_candles(session, btc + eth_hourly)

    async with sessions() as session:
        gaps = await find_gaps(session, "BTCUSDT", "1m")
        assert await find_gaps(session, "ETHUSDT", "1h") == []
        assert await find_gaps(session, "SOLUSDT", "1m") == []
        summary = await candle_series_summary(session)

    assert gaps == [
        CandleGap(
            start=START + timedelta(minutes=3), end=START + timedelta(minutes=5), missing_candles=3
        ),
        CandleGap(
            start=START + timedelta(minutes=8), end=START + timedelta(minutes=8), missing_candles=1
        ),
    ]
    assert [
        (s.symbol, s.interval, s.first, s.last, s.rows, s.gaps, s.missing_candles) for s in summary
    ] == [
        ("BTCUSDT", "1m", START, START + timedelta(minutes=9), 6, 2, 4),
        ("ETHUSDT", "1h", START, START + timedelta(hours=3), 4, 0, 0),
    ]


async def test_summary_of_an_empty_database_is_empty(sessions) -> None:
    async with sessions() as session:
        assert await candle_series_summary(session) == []
