"""Conversion between table rows and the frozen domain models, shared by the repositories."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared import sa_models

ModelT = TypeVar("ModelT", bound=BaseModel)

Connectable = AsyncSession | AsyncConnection
"""Where a repository function runs its Core statements: a session's transaction, or a
connection (`shared.db.Writer` hands the services' hot paths one, without a session)."""

CANDLES = cast(Table, sa_models.CandleRow.__table__)
SIGNALS = cast(Table, sa_models.SignalRow.__table__)
ORDERS = cast(Table, sa_models.OrderRow.__table__)
TRADES = cast(Table, sa_models.TradeRow.__table__)
POSITIONS = cast(Table, sa_models.PositionRow.__table__)
SNAPSHOTS = cast(Table, sa_models.PortfolioSnapshotRow.__table__)


async def connection_of(where: Connectable) -> AsyncConnection:
    """The connection behind `where` (a session's, in its transaction)."""
    return where if isinstance(where, AsyncConnection) else await where.connection()


def to_model(model: type[ModelT], row: Mapping[Any, Any]) -> ModelT:
    """Build a domain model from a result row, taking only the model's own fields.

    Validation runs again on the way out, so what the database returns is held to the same
    rules as what went in (UTC-aware times, Decimal money).
    """
    return model.model_validate({name: row[name] for name in model.model_fields})


def to_values(model: BaseModel) -> dict[str, Any]:
    """The column values of a domain model (Decimals, datetimes and enums kept as they are)."""
    return model.model_dump()


def require_aware(name: str, value: datetime | None) -> None:
    """Reject a naive datetime: the database would have to guess its time zone."""
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got {value!r}")
