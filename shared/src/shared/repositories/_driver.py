"""One-statement writes on the asyncpg connection itself, for the services' hot paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ValuesBase
from sqlalchemy.sql.selectable import Select

from shared.repositories._convert import Connectable, connection_of

__all__ = ["DriverStatement"]

# What asyncpg raises when the server or the network dropped the connection (as opposed to
# an error of the statement itself, which leaves the connection usable).
_DISCONNECTS = (
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08, and a dropped socket
    asyncpg.exceptions.OperatorInterventionError,  # 57P0x: the server shut the session down
    ConnectionError,
)


class DriverStatement:
    """A write (an INSERT, or a statement of CTEs that write) compiled once by SQLAlchemy
    and run on the asyncpg connection.

    SQLAlchemy's execution path (the greenlet hop, execution context, result processing)
    costs ~0.1 ms a statement hot and ~0.25 ms in a process woken from idle: a committed
    one-row INSERT after 10 ms idle, p50 1.08-1.38 ms through it, 0.83-1.15 ms through this
    and 0.77-1.05 ms with asyncpg alone (`bench/bench_hot_insert.py`, docs/BENCHMARKS.md).
    The writes between a candle's close and its order take this path, and so do the ones
    that run beside them on every candle (the executor's paper fill, the portfolio
    manager's marks), which compete for the same cores. SQLAlchemy still
    builds and compiles the statement (once per dialect); only its per-execution machinery
    is skipped, so the values must be ones asyncpg encodes by itself (str and str enums, int,
    Decimal, aware datetime, bool, None), as the columns of the trading tables are.

    Only on a connection in autocommit mode (`shared.db.Writer.statement`), where the
    statement commits alone: inside a transaction (a session, `Writer.transaction`) it runs
    through SQLAlchemy, since a driver call there would run before, and outside of,
    SQLAlchemy's lazily begun transaction. A dropped connection is reported as SQLAlchemy
    reports one (a `DBAPIError` with `connection_invalidated`, the connection invalidated),
    so that the writer replaces it and runs the work again.
    """

    def __init__(
        self, statement: ValuesBase | Select[Any], columns: Sequence[str] | None = None
    ) -> None:
        """`columns`: an INSERT's columns given at execution (its VALUES clause); None for
        a statement whose parameters are all bound parameters of its own."""
        self.statement = statement
        self.columns = None if columns is None else list(columns)
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
        """The SQL the driver runs and the names of its values, in parameter order."""
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.columns)
            assert compiled.positiontup is not None  # asyncpg's paramstyle is positional
            found = self._compiled[dialect.name] = (str(compiled), tuple(compiled.positiontup))
        return found

    async def fetchrow(
        self, where: Connectable, values: Mapping[str, Any]
    ) -> Mapping[Any, Any] | None:
        """Run it and return its (RETURNING) row, or None when it returned none."""
        connection = await connection_of(where)
        driver = await _autocommit_driver(connection)
        if driver is None:
            return (await connection.execute(self.statement, dict(values))).mappings().one_or_none()
        row: Mapping[Any, Any] | None = await self._run(connection, driver, "fetchrow", values)
        return row

    async def rowcount(self, where: Connectable, values: Mapping[str, Any]) -> int:
        """Run it and return how many rows it inserted or changed."""
        connection = await connection_of(where)
        driver = await _autocommit_driver(connection)
        if driver is None:
            return (await connection.execute(self.statement, dict(values))).rowcount
        status: str = await self._run(connection, driver, "execute", values)
        return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 1", "UPDATE 1"

    async def _run(
        self, where: AsyncConnection, driver: Any, method: str, values: Mapping[str, Any]
    ) -> Any:
        sql, names = self.compiled(where.dialect)
        try:
            return await getattr(driver, method)(sql, *(values[name] for name in names))
        except Exception as exc:
            if not (isinstance(exc, _DISCONNECTS) or driver.is_closed()):
                raise
            await where.invalidate()
            raise DBAPIError(sql, None, exc, connection_invalidated=True) from exc


async def _autocommit_driver(connection: AsyncConnection) -> Any:
    """The asyncpg connection behind `connection` when it is in autocommit mode (no
    transaction to join), else None."""
    pooled = await connection.get_raw_connection()
    if not getattr(pooled.dbapi_connection, "autocommit", False):
        return None
    return pooled.driver_connection
