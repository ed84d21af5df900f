"""The collector's candle storage: bulk idempotent upserts and reads through the repositories."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from shared.db import Writer, candles_between, latest_candle, upsert_candles
from shared.models import Candle
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["CandleStorage"]


class CandleStorage:
    """Stores closed candles (one transaction per batch) and reads series back."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], writer: Writer | None = None
    ) -> None:
        self.sessions = sessions
        self.writer = writer or Writer.for_sessions(sessions)

    async def store(self, candles: Sequence[Candle]) -> int:
        """Store the closed ones among `candles` (already stored: left alone); how many new."""
        closed = [candle for candle in candles if candle.closed]
        if not closed:
            return 0
        if len(closed) == 1:
            # A live candle, on the way to the bus: one autocommit INSERT (one round trip,
            # committed before it returns) instead of a session's transaction and pre-ping.
            return await self.writer.statement(lambda conn: upsert_candles(conn, closed))
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
