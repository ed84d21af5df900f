"""The collector's candle storage: bulk idempotent upserts and reads through the repositories."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from shared.db import candles_between, latest_candle, upsert_candles
from shared.models import Candle
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["CandleStorage"]


class CandleStorage:
    """Stores closed candles (one transaction per batch) and reads series back."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def store(self, candles: Sequence[Candle]) -> int:
        """Store the closed ones among `candles` (already stored: left alone); how many new."""
        closed = [candle for candle in candles if candle.closed]
        if not closed:
            return 0
        async with self.sessions.begin() as session:
            return await upsert_candles(session, closed)

    async def latest(self, symbol: str, interval: str) -> Candle | None:
        """The last stored candle of the series, or None."""
        async with self.sessions() as session:
            return await latest_candle(session, symbol, interval)

    async def since(self, symbol: str, interval: str, start: datetime) -> list[Candle]:
        """Stored candles of the series opened at or after `start`, oldest first."""
        async with self.sessions() as session:
            return await candles_between(session, symbol, interval, start)
