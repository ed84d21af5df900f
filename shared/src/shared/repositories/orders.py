"""Order and trade repository, keyed by the client order id.

Creating an order is idempotent, because the executor may see the same signal twice (a
redelivered bus message, a restart mid-way): `create_order` stores the order the first
time and afterwards returns the stored one unchanged, so "create, then act on what came
back" can never produce a second order. Functions never commit; the caller does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import Order, OrderStatus, Trade
from shared.repositories._convert import (
    ORDERS,
    TRADES,
    Connectable,
    require_aware,
    to_model,
    to_values,
)
from shared.repositories._driver import DriverStatement

# The statements of the executor's per-signal and per-fill writes, built once with the
# values passed at execution: built per call with .values() each costs ~0.2 ms of CPU more.
_CREATE_ORDER = (
    pg_insert(ORDERS)
    .on_conflict_do_nothing(index_elements=[ORDERS.c.client_order_id])
    .returning(ORDERS)
)
INSERT_ORDER = DriverStatement(_CREATE_ORDER, list(Order.model_fields))
"""`insert_order`'s statement (public for bench/bench_hot_insert.py, which runs it three ways)."""
_GET_ORDER = select(ORDERS).where(ORDERS.c.client_order_id == bindparam("client_order_id"))
_UPDATE_ORDER = (
    update(ORDERS).where(ORDERS.c.client_order_id == bindparam("order_to_update")).returning(ORDERS)
)
_ORDER_EXISTS = select(exists().where(ORDERS.c.client_order_id == bindparam("client_order_id")))
_ADD_TRADE = (
    pg_insert(TRADES)
    .on_conflict_do_nothing(index_elements=[TRADES.c.symbol, TRADES.c.trade_id])
    .returning(TRADES.c.id)
)


_UPDATED_ORDER = (
    update(ORDERS)
    .where(ORDERS.c.client_order_id == bindparam("order_to_update"))
    .values(
        {
            column.name: bindparam(f"order_{column.name}", type_=column.type)
            for column in ORDERS.c
            if column.name not in ("id", "client_order_id", "created_at")
        }
    )
    .returning(*ORDERS.c)
    .cte("updated_order")
)
_TRADE_COLUMNS = [column for column in TRADES.c if column.name != "id"]
_ADDED_TRADE = (
    pg_insert(TRADES)
    .from_select(
        [column.name for column in _TRADE_COLUMNS],
        # Only when the order was there to update (else no row, and no trade: the caller
        # raises OrderNotFoundError).
        select(
            *(bindparam(f"trade_{column.name}", type_=column.type) for column in _TRADE_COLUMNS)
        ).where(exists(select(_UPDATED_ORDER.c.id))),
    )
    .on_conflict_do_nothing(index_elements=[TRADES.c.symbol, TRADES.c.trade_id])
    .returning(TRADES.c.id)
    .cte("added_trade")
)
_UPDATE_ORDER_ADD_TRADE = select(_UPDATED_ORDER).add_cte(_ADDED_TRADE)
_UPDATE_ORDER_ADD_TRADE_NOW = DriverStatement(_UPDATE_ORDER_ADD_TRADE)


class OrderNotFoundError(LookupError):
    """No order is stored under the given client order id."""

    def __init__(self, client_order_id: str) -> None:
        super().__init__(
            f"no order with client order id {client_order_id!r} is stored; "
            "create it with create_order() first"
        )
        self.client_order_id = client_order_id


async def create_order(session: Connectable, order: Order) -> Order:
    """Store a new order and return it; if its client order id is stored, return that one.

    The stored order wins: a second create with the same client order id changes nothing,
    whatever its other fields say. Compare the returned order's fields to tell the cases
    apart if needed.
    """
    inserted = await insert_order(session, order)
    if inserted is not None:
        return inserted
    stored = await get_order(session, order.client_order_id)
    assert stored is not None  # not inserted: it was there already
    return stored


async def insert_order(session: Connectable, order: Order) -> Order | None:
    """Store a new order and return it as stored; None (storing nothing) when its client
    order id is stored already. One statement."""
    # RETURNING gives the new row; nothing comes back when the id was stored already. On
    # the driver when `session` is an autocommit connection: the executor's write between a
    # signal and its order's event.
    row = await INSERT_ORDER.fetchrow(session, to_values(order))
    return None if row is None else to_model(Order, row)


async def get_order(session: Connectable, client_order_id: str) -> Order | None:
    """The order stored under this client order id, or None."""
    result = await session.execute(_GET_ORDER, {"client_order_id": client_order_id})
    row = result.mappings().one_or_none()
    return None if row is None else to_model(Order, row)


async def update_order(session: Connectable, order: Order) -> Order:
    """Write an order's new state (status, fills, fee, exchange id, ...) and return it.

    The order is found by its client order id; `created_at` keeps its stored value.
    Raises `OrderNotFoundError` when no such order was created.
    """
    values = to_values(order)
    del values["client_order_id"], values["created_at"]
    values["order_to_update"] = order.client_order_id
    row = (await session.execute(_UPDATE_ORDER, values)).mappings().one_or_none()
    if row is None:
        raise OrderNotFoundError(order.client_order_id)
    return to_model(Order, row)


async def update_order_with_trade(session: Connectable, order: Order, trade: Trade) -> Order:
    """`update_order` and `add_trade` (of a fill of this order) in one statement, so one
    round trip, atomic even on an autocommit connection; returns the order as stored.

    Idempotent as the two are: the update writes the same values again and a trade already
    stored is left as it is. Raises `OrderNotFoundError` (storing nothing) when no such
    order was created, and ValueError when the trade is not of this order.
    """
    if trade.client_order_id != order.client_order_id:
        raise ValueError(f"trade {trade.trade_id!r} is not a fill of {order.client_order_id!r}")
    values = to_values(order)
    del values["client_order_id"], values["created_at"]
    params = {f"order_{name}": value for name, value in values.items()}
    params["order_to_update"] = order.client_order_id
    params.update({f"trade_{name}": value for name, value in to_values(trade).items()})
    row = await _UPDATE_ORDER_ADD_TRADE_NOW.fetchrow(session, params)
    if row is None:
        raise OrderNotFoundError(order.client_order_id)
    return to_model(Order, row)


async def list_orders(
    session: AsyncSession,
    *,
    statuses: Iterable[OrderStatus] | None = None,
    symbol: str | None = None,
) -> list[Order]:
    """Orders, oldest first, optionally only those in `statuses` and/or of one symbol."""
    statement = select(ORDERS)
    if statuses is not None:
        statement = statement.where(ORDERS.c.status.in_(list(statuses)))
    if symbol is not None:
        statement = statement.where(ORDERS.c.symbol == symbol)
    result = await session.execute(statement.order_by(ORDERS.c.created_at, ORDERS.c.id))
    return [to_model(Order, row) for row in result.mappings()]


async def add_trade(session: Connectable, trade: Trade) -> bool:
    """Store a fill; return False if this (symbol, trade id) was already stored.

    Raises `OrderNotFoundError` when the trade's order was never created.
    """
    found = await session.execute(_ORDER_EXISTS, {"client_order_id": trade.client_order_id})
    if not found.scalar_one():
        raise OrderNotFoundError(trade.client_order_id)
    return (await session.execute(_ADD_TRADE, to_values(trade))).first() is not None


async def list_trades(
    session: AsyncSession,
    *,
    client_order_id: str | None = None,
    symbol: str | None = None,
    since: datetime | None = None,
) -> list[Trade]:
    """Trades in time order, optionally of one order, one symbol, or from `since` on."""
    require_aware("since", since)
    statement = select(TRADES)
    if client_order_id is not None:
        statement = statement.where(TRADES.c.client_order_id == client_order_id)
    if symbol is not None:
        statement = statement.where(TRADES.c.symbol == symbol)
    if since is not None:
        statement = statement.where(TRADES.c.time >= since)
    result = await session.execute(statement.order_by(TRADES.c.time, TRADES.c.id))
    return [to_model(Trade, row) for row in result.mappings()]
