"""A `Writer` for tests of what a service does when a commit's answer is lost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

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
