"""`Writer`s for tests: a commit whose answer is lost, a commit that takes its time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db_writer import Writer

T = TypeVar("T")


class RetryingWriter(Writer):
    """Runs each work twice, as `Writer` does when the first run's connection dies after
    PostgreSQL committed it (the answer lost on the way back): the second run sees the first
    run's rows."""

    async def statement(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        await super().statement(work)
        return await super().statement(work)

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        await super().transaction(work)
        return await super().transaction(work)


class HoldingWriter(Writer):
    """Holds the next statement, once armed with `hold_next`, until `release` is set: a
    commit that takes its time. `held` is set when that statement has reached the writer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._armed = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    def hold_next(self) -> None:
        self._armed = True

    async def statement(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        if self._armed:
            self._armed = False
            self.held.set()
            await self.release.wait()
        return await super().statement(work)
