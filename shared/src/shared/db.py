"""The PostgreSQL layer: engine and sessions, schema migrations, and the repositories.

Everything talks to PostgreSQL through SQLAlchemy's async engine on asyncpg
(`postgresql+asyncpg://`). A service calls `open_database(settings)` once at start-up; it
resolves the URL (the embedded server when DATABASE_URL is unset), brings the schema to
the newest Alembic revision and hands back the engine and a session factory:

    db = await open_database(settings)
    async with db.sessions.begin() as session:  # commits at the end, rolls back on error
        await upsert_candles(session, candles)
    await db.close()

The repository functions (re-exported here from `shared.repositories`) take that session
first and never commit, so the caller decides what one transaction covers.
The services' per-event writes (a live candle, a signal, an order, a fill) go through
`Database.writer` instead (`shared.db_writer.Writer`, re-exported here): single statements in
autocommit on a connection of its own, without a session's round trips.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, pool
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.db_writer import Writer
from shared.models import CandleGap, CandleSeriesSummary
from shared.repositories.candles import (
    candle_series_summary,
    candles_between,
    find_gaps,
    latest_candle,
    latest_closes,
    recent_candles,
    upsert_candles,
)
from shared.repositories.orders import (
    OrderNotFoundError,
    add_trade,
    create_order,
    get_order,
    insert_order,
    list_orders,
    list_trades,
    update_order,
    update_order_with_trade,
)
from shared.repositories.portfolio import (
    add_snapshot,
    get_position,
    latest_snapshot,
    list_positions,
    snapshots_between,
    store_marks,
    upsert_position,
)
from shared.repositories.signals import add_signal, get_signal

if TYPE_CHECKING:
    from shared.config import Settings

__all__ = [
    "ALEMBIC_INI",
    "CandleGap",
    "CandleSeriesSummary",
    "Database",
    "DatabaseConnectionError",
    "OrderNotFoundError",
    "Writer",
    "add_signal",
    "add_snapshot",
    "add_trade",
    "alembic_config",
    "candle_series_summary",
    "candles_between",
    "create_engine",
    "create_order",
    "create_sessionmaker",
    "current_revision",
    "database_url_from_settings",
    "describe_database",
    "downgrade_to",
    "find_gaps",
    "get_order",
    "get_position",
    "get_signal",
    "head_revision",
    "insert_order",
    "latest_candle",
    "latest_closes",
    "latest_snapshot",
    "list_orders",
    "list_positions",
    "list_trades",
    "normalise_database_url",
    "open_database",
    "recent_candles",
    "snapshots_between",
    "store_marks",
    "update_order",
    "update_order_with_trade",
    "upgrade_to_head",
    "upgrade_to_head_async",
    "upsert_candles",
    "upsert_position",
]

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"
"""shared/alembic.ini: the one Alembic configuration, for `alembic -c` and for this module."""

_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg2"}
_POSTGRES_DRIVERS |= {"postgresql+psycopg", "postgres+asyncpg"}


class DatabaseConnectionError(RuntimeError):
    """PostgreSQL could not be reached; the one-line message says where and what to check."""


# --- URLs -------------------------------------------------------------------------------


def normalise_database_url(url: str) -> str:
    """The URL with SQLAlchemy's asyncpg driver: postgres:// and postgresql:// are accepted.

    Raises ValueError (never echoing the password) for anything that is not PostgreSQL.
    """
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise ValueError(
            "DATABASE_URL is not a valid URL: expected postgresql://user:password@host:port/db"
        ) from None
    if parsed.drivername not in _POSTGRES_DRIVERS:
        raise ValueError(
            f"DATABASE_URL uses {parsed.drivername!r}: only PostgreSQL is supported "
            "(postgresql://, postgres:// or postgresql+asyncpg://)"
        )
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def describe_database(url: str | URL) -> str:
    """Where a URL points, for messages: 'db at user@host:port', never the password."""
    parsed = make_url(url) if isinstance(url, str) else url
    host = parsed.host or parsed.query.get("host") or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    user = f"{parsed.username}@" if parsed.username else ""
    return f"database {parsed.database!r} at {user}{host}{port}"


def _connection_problem(url: str, exc: BaseException) -> str:
    """One line saying which server could not be reached, why, and what to check."""
    where = describe_database(url)
    if isinstance(exc, DBAPIError):
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        if "does not exist" in reason and "database" in reason:
            hint = "create the database (createdb) or fix DATABASE_URL"
        elif "password" in reason or "role" in reason or "authentication" in reason:
            hint = "check the user and password in DATABASE_URL"
        else:
            hint = "check DATABASE_URL and the server's log"
    elif (
        isinstance(exc, OSError)
        and not isinstance(exc, ConnectionRefusedError)
        and ("Name or service not known" in str(exc) or "nodename" in str(exc))
    ):
        reason, hint = "host name not found", "check the host in DATABASE_URL"
    else:
        reason = str(exc) or type(exc).__name__
        hint = (
            "check that PostgreSQL is running and listening there, and that DATABASE_URL "
            "is right (unset it to use the embedded server)"
        )
    message = f"Cannot connect to PostgreSQL ({where}): {reason}; {hint}"
    password = make_url(url).password
    return message.replace(str(password), "***") if password else message


def database_url_from_settings(settings: Settings) -> str:
    """The asyncpg URL to use: DATABASE_URL when set, otherwise the embedded server's."""
    if settings.database_url:
        return normalise_database_url(settings.database_url)
    # Imported here: starting an embedded server is only wanted when no URL is configured.
    from shared.embedded import resolve_database_url

    return normalise_database_url(resolve_database_url(settings))


# --- Engine and sessions ----------------------------------------------------------------


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """An async engine on asyncpg for this URL (postgres:// and postgresql:// accepted).

    `options` go to `create_async_engine` (e.g. `poolclass`, `echo`).
    """
    options.setdefault("pool_pre_ping", True)
    return create_async_engine(normalise_database_url(url), **options)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on this engine; objects stay readable after commit (expire_on_commit=False)."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def _connect(url: str) -> AsyncIterator[AsyncConnection]:
    """One connection in one transaction, on an engine of its own that is disposed after."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        try:
            connection = await engine.connect()
        except (OSError, DBAPIError, TimeoutError) as exc:
            raise DatabaseConnectionError(_connection_problem(url, exc)) from None
        try:
            async with connection.begin():
                yield connection
        finally:
            await connection.close()
    finally:
        await engine.dispose()


# --- Migrations -------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration from shared/alembic.ini.

    With `connection`, env.py migrates on that connection (inside its transaction) instead
    of opening its own, and leaves the application's logging configuration alone.
    """
    if not ALEMBIC_INI.is_file():
        raise FileNotFoundError(
            f"{ALEMBIC_INI} is missing: the migrations ship with the source tree, "
            "so run from a checkout of the project"
        )
    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logging"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


# Alembic keeps its running migration in module globals (`alembic.context`), so two
# migrations in one process must not overlap, even on different connections; across
# processes, env.py's advisory lock does the same.
_MIGRATION_LOCK = threading.Lock()


def _migrate(url: str, action: Callable[[Config], None]) -> None:
    """Run one Alembic command on its own connection, in its own event loop (no loop may
    be running in this thread), and commit."""

    async def run() -> None:
        async with _connect(url) as connection:
            await connection.run_sync(lambda sync: action(alembic_config(sync)))

    with _MIGRATION_LOCK:
        asyncio.run(run())


def _off_the_loop(url: str, action: Callable[[Config], None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _migrate(url, action)
        return
    # A sync API called from async code: a loop cannot be nested, so use a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(_migrate, url, action).result()


def _to_head(config: Config) -> None:
    command.upgrade(config, "head")


def upgrade_to_head(url: str) -> None:
    """Bring the database's schema to the newest migration (does nothing when already there).

    Synchronous; safe from plain code and from inside a running event loop (it then
    blocks that loop: prefer `upgrade_to_head_async` there). Safe to call from several
    processes at once: env.py serialises migrations with an advisory lock.
    Raises DatabaseConnectionError when the server cannot be reached.
    """
    _off_the_loop(url, _to_head)


async def upgrade_to_head_async(url: str) -> None:
    """`upgrade_to_head` for async code: the migration runs in a worker thread."""
    await asyncio.to_thread(_migrate, url, _to_head)


def downgrade_to(url: str, revision: str = "-1") -> None:
    """Migrate the schema down to `revision` ("-1" is one step, "base" drops every table)."""
    _off_the_loop(url, lambda config: command.downgrade(config, revision))


def head_revision() -> str | None:
    """The newest migration's revision id in shared/alembic/versions."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(url: str) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    async with _connect(url) as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


# --- The application's handle -----------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """An open database: the engine, its session factory and the (asyncpg) URL it uses.

    `url` may hold a password: it is left out of the repr, and messages should show
    `describe_database(url)` instead.
    """

    url: str = field(repr=False)
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    writer: Writer

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.writer.close()
        await self.engine.dispose()
        if self.writer.engine is not self.engine:
            await self.writer.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


async def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """Open the configured database (the embedded one when DATABASE_URL is unset).

    With `migrate` (the default) the schema is brought to head first, so a service or
    command can rely on every table existing. Raises DatabaseConnectionError when the
    server cannot be reached.
    """
    url = await asyncio.to_thread(database_url_from_settings, settings)
    if migrate:
        await upgrade_to_head_async(url)
    engine = create_engine(url)
    # The writer's pool of its own skips the pre-ping (see `Writer`); it holds a connection
    # or two, since a service's events are handled one at a time.
    writer = Writer(create_engine(url, pool_pre_ping=False, pool_size=2), hold=True)
    # Connected now, not on the first event: a new engine's first connection also runs the
    # dialect's start-up queries (~15 ms here), which would land on the first candle's path.
    try:
        await writer.warm_up()
    except (OSError, DBAPIError, TimeoutError) as exc:
        await writer.close()
        await writer.engine.dispose()
        await engine.dispose()
        raise DatabaseConnectionError(_connection_problem(url, exc)) from None
    return Database(url=url, engine=engine, sessions=create_sessionmaker(engine), writer=writer)
