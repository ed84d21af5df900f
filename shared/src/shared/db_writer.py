"""`Writer`: the services' per-event writes, as Core statements without sessions.

Re-exported from `shared.db`; a service gets its own from `open_database` (`Database.writer`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

__all__ = ["Writer"]

T = TypeVar("T")


class Writer:
    """The services' per-event writes: Core statements on pooled connections, without the
    per-checkout costs that sessions pay.

    An ORM session transaction with ``pool_pre_ping`` costs six round trips to PostgreSQL for
    one INSERT (the ping is BEGIN, ``;``, ROLLBACK, then BEGIN, the INSERT, COMMIT) and about
    0.9 ms of client CPU; `statement` runs it in one round trip (autocommit: PostgreSQL
    commits the single statement itself, as durably) and about 0.3 ms. Measured on this
    project's 2-core machine, with the INSERT of a candle.

    Instead of pinging before each use, a connection that turns out dead (PostgreSQL
    restarted) is replaced and the work run once more, so the work must be idempotent (all
    of the services' writes are: inserts keyed by deterministic ids, upserts).

    With ``hold`` (a service's writer, see `open_database`), `statement` keeps one
    connection checked out and reuses it, one caller at a time: a pool checkout and
    return cost ~0.35 ms a statement when the process wakes from idle, as it does on every
    candle (measured: an INSERT after 100 ms of idle, 1.98 ms through the pool, 1.64 ms on
    a held connection). Close the writer (`close`) before disposing of its engine.
    """

    def __init__(self, engine: AsyncEngine, *, hold: bool = False) -> None:
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._hold = hold
        self._held: AsyncConnection | None = None
        self._held_lock = asyncio.Lock()

    @classmethod
    def for_sessions(cls, sessions: async_sessionmaker[AsyncSession]) -> Writer:
        """A writer on the engine the sessions use (tests and tools; a service uses
        `Database.writer`, whose pool skips the pre-ping)."""
        bind = sessions.kw["bind"]
        assert isinstance(bind, AsyncEngine)
        return cls(bind)

    async def warm_up(self) -> None:
        """Connect now rather than on the first write: an engine's first connection also
        runs the dialect's start-up queries (~15 ms here)."""
        if self._hold:
            await self.statement(_nothing)
        else:
            async with self.engine.connect():
                pass

    async def close(self) -> None:
        """Give the held connection back (a writer without ``hold`` holds none)."""
        async with self._held_lock:
            held, self._held = self._held, None
            if held is not None:
                await held.close()

    async def statement(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` on a connection in autocommit mode: each statement it executes is
        committed on its own (use it for one statement, or for steps each correct alone)."""
        if not self._hold:
            return await self._run(self._autocommit, work, begin=False)
        async with self._held_lock:
            for attempt in (1, 2):
                if self._held is None:
                    self._held = await self._autocommit.connect()
                try:
                    return await work(self._held)
                except DBAPIError as exc:
                    if not exc.connection_invalidated:
                        raise
                    await self._drop_held()
                    if attempt == 2:
                        raise
                except BaseException:
                    # Interrupted (cancelled) mid-statement, the connection may be half-way
                    # through the protocol: it is not used again.
                    await self._drop_held()
                    raise
        raise AssertionError("unreachable")

    async def _drop_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(Exception):
                await held.invalidate()
                await held.close()

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in one transaction, committed when it returns."""
        return await self._run(self.engine, work, begin=True)

    async def _run(
        self, engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], *, begin: bool
    ) -> T:
        for attempt in (1, 2):
            try:
                async with engine.begin() if begin else engine.connect() as connection:
                    return await work(connection)
            except DBAPIError as exc:
                # SQLAlchemy has invalidated the pool's connections: the next one is new.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")


async def _nothing(connection: AsyncConnection) -> None:
    return None
