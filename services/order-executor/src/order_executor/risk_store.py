"""Where the executor keeps its `RiskState` between restarts: one JSON value in Redis.

The daily loss limit must hold for the rest of the UTC day even if the executor restarts,
so the state (the day, its starting value, whether BUYs are halted) is written after every
change and read back at start. Redis is the executor's own durable store here (the bus lives
there too); a lost state only means the day's halt is recomputed from the next candles.
"""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis

from order_executor.risk import RiskState

__all__ = ["RiskStateStore"]


class RiskStateStore:
    """Loads and saves the executor's `RiskState` under ``{namespace}order-executor:risk``."""

    def __init__(self, redis: Redis, namespace: str = "") -> None:
        self.redis = redis
        self.key = f"{namespace}order-executor:risk"
        self._saved: str | None = None
        """What this store last read or wrote: an unchanged state is not written again."""
        self._writing = asyncio.Lock()

    async def load(self) -> RiskState:
        """The saved state, or a fresh one when none was saved."""
        raw = await self.redis.get(self.key)
        if raw is None:
            return RiskState()
        self._saved = raw.decode() if isinstance(raw, bytes) else str(raw)
        return RiskState.from_dict(json.loads(raw))

    @staticmethod
    def encode(state: RiskState) -> str:
        """`state` as it is now, as `write` stores it."""
        return json.dumps(state.to_dict())

    async def save(self, state: RiskState) -> None:
        """Write `state` as it is now (see `write`)."""
        await self.write(self.encode(state))

    async def write(self, encoded: str) -> None:
        """Store a state taken with `encode`, unless it is what was last written: the
        executor saves after every signal and candle, most of which change nothing.

        One write at a time, in the order of the calls (asyncio's lock is first come, first
        served), so a caller may take the state under its own lock and write it after
        releasing that lock: a later state is never overwritten by an earlier one.
        """
        async with self._writing:
            if encoded != self._saved:
                await self.redis.set(self.key, encoded)
                self._saved = encoded
