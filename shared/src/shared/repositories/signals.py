"""Signal repository, keyed by the signal's deterministic id. Never commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.models import Signal
from shared.repositories._convert import SIGNALS, Connectable, to_model, to_values


async def add_signal(session: Connectable, signal: Signal) -> bool:
    """Store a signal; return False (storing nothing) if its id was already stored."""
    statement = (
        pg_insert(SIGNALS)
        .values(to_values(signal))
        .on_conflict_do_nothing(index_elements=[SIGNALS.c.id])
        .returning(SIGNALS.c.id)
    )
    return (await session.execute(statement)).first() is not None


async def get_signal(session: Connectable, signal_id: str) -> Signal | None:
    """The signal stored under this id, or None."""
    row = (
        (await session.execute(select(SIGNALS).where(SIGNALS.c.id == signal_id)))
        .mappings()
        .one_or_none()
    )
    return None if row is None else to_model(Signal, row)
