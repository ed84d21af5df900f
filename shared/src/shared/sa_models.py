"""SQLAlchemy tables, one per domain model of `shared.models`.

These rows are a storage detail: the repositories (`shared.db`) convert them to and from the
frozen pydantic models, and nothing outside the repositories sees them. Money is NUMERIC with
no fixed precision, so any Decimal comes back exactly; times are TIMESTAMP WITH TIME ZONE.
The naming convention gives every constraint and index a stable name, so Alembic's
autogenerate sees no spurious differences.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.models import OrderStatus, OrderType, Side

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SYMBOL_LENGTH = 20
INTERVAL_LENGTH = 8
SIGNAL_ID_LENGTH = 64  # shared.models.Signal.id
CLIENT_ORDER_ID_LENGTH = 36  # Binance's limit for newClientOrderId


def _enum(enum_class: type[Side] | type[OrderType] | type[OrderStatus], name: str) -> Enum:
    # A VARCHAR with a CHECK constraint rather than a native PostgreSQL ENUM: adding a
    # value later is then an ordinary migration, not an ALTER TYPE outside a transaction.
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    """Declarative base of every table; its metadata is what Alembic compares against."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        Decimal: Numeric(),
        datetime: DateTime(timezone=True),
        str: Text(),
    }


class CandleRow(Base):
    """One kline; the primary key (symbol, interval, open_time) serves every range query."""

    __tablename__ = "candles"

    symbol: Mapped[str] = mapped_column(String(SYMBOL_LENGTH), primary_key=True)
    interval: Mapped[str] = mapped_column(String(INTERVAL_LENGTH), primary_key=True)
    open_time: Mapped[datetime] = mapped_column(primary_key=True)
    open: Mapped[Decimal]
    high: Mapped[Decimal]
    low: Mapped[Decimal]
    close: Mapped[Decimal]
    volume: Mapped[Decimal]
    quote_volume: Mapped[Decimal | None]
    trades: Mapped[int | None] = mapped_column(BigInteger)
    closed: Mapped[bool] = mapped_column(Boolean, server_default="true")


class SignalRow(Base):
    """A strategy's signal, keyed by its deterministic id (redelivery stores nothing new)."""

    __tablename__ = "signals"

    id: Mapped[str] = mapped_column(String(SIGNAL_ID_LENGTH), primary_key=True)
    strategy: Mapped[str]
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LENGTH))
    interval: Mapped[str] = mapped_column(String(INTERVAL_LENGTH))
    side: Mapped[Side] = mapped_column(_enum(Side, "side"))
    quantity: Mapped[Decimal]
    price: Mapped[Decimal]
    candle_time: Mapped[datetime]
    reason: Mapped[str] = mapped_column(server_default="")

    __table_args__ = (Index(None, "symbol", "candle_time"),)


class OrderRow(Base):
    """An order; `client_order_id` is its identity for the platform and the exchange."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(CLIENT_ORDER_ID_LENGTH), unique=True)
    signal_id: Mapped[str | None] = mapped_column(String(SIGNAL_ID_LENGTH))
    strategy: Mapped[str | None]
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LENGTH), index=True)
    side: Mapped[Side] = mapped_column(_enum(Side, "side"))
    type: Mapped[OrderType] = mapped_column(_enum(OrderType, "order_type"))
    quantity: Mapped[Decimal]
    price: Mapped[Decimal | None]
    status: Mapped[OrderStatus] = mapped_column(_enum(OrderStatus, "order_status"), index=True)
    filled_quantity: Mapped[Decimal]
    avg_fill_price: Mapped[Decimal | None]
    fee: Mapped[Decimal]
    fee_asset: Mapped[str | None] = mapped_column(String(16))
    exchange_order_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class TradeRow(Base):
    """One fill of an order.

    Unique on (symbol, trade_id) rather than trade_id alone: Binance numbers trades per
    symbol, so two symbols can share a trade id.
    """

    __tablename__ = "trades"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    trade_id: Mapped[str] = mapped_column(String(64))
    client_order_id: Mapped[str] = mapped_column(
        String(CLIENT_ORDER_ID_LENGTH),
        ForeignKey("orders.client_order_id"),
        index=True,
    )
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LENGTH))
    side: Mapped[Side] = mapped_column(_enum(Side, "side"))
    quantity: Mapped[Decimal]
    price: Mapped[Decimal]
    fee: Mapped[Decimal]
    fee_asset: Mapped[str | None] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("symbol", "trade_id"),)


class PositionRow(Base):
    """The current holding of one symbol (one row per symbol, upserted)."""

    __tablename__ = "positions"

    symbol: Mapped[str] = mapped_column(String(SYMBOL_LENGTH), primary_key=True)
    quantity: Mapped[Decimal]
    avg_entry_price: Mapped[Decimal]
    realized_pnl: Mapped[Decimal]
    unrealized_pnl: Mapped[Decimal]
    fees_paid: Mapped[Decimal]
    last_price: Mapped[Decimal | None]
    updated_at: Mapped[datetime]


class PortfolioSnapshotRow(Base):
    """The portfolio's value at one moment; indexed by time for 'latest' and ranges."""

    __tablename__ = "portfolio_snapshots"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    time: Mapped[datetime] = mapped_column(index=True)
    cash: Mapped[Decimal]
    positions_value: Mapped[Decimal]
    total_value: Mapped[Decimal]
    realized_pnl: Mapped[Decimal]
    unrealized_pnl: Mapped[Decimal]
    fees_paid: Mapped[Decimal]
