"""`trading db`: database migrations (upgrade, downgrade, current).

Commands that use the database bring it to head by themselves (`shared.db.open_database`);
these are for doing it by hand and for looking at where the schema stands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from shared.config import Settings, SettingsError, load_settings

app = typer.Typer(help="Database migrations.", no_args_is_help=True)

console = Console()
errors = Console(stderr=True)

EXIT_FAILED = 1
EXIT_BAD_SETTING = 2

T = TypeVar("T")


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    errors.print(f"Error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise _fail(str(exc), EXIT_BAD_SETTING) from None


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn the failures a person can fix into one line on stderr and exit 1."""
    # Imported here: SQLAlchemy and Alembic take a while to import, `trading --help` should not.
    from alembic.util import CommandError
    from shared.db import DatabaseConnectionError
    from shared.embedded import EmbeddedServerError

    try:
        yield
    except (DatabaseConnectionError, EmbeddedServerError, CommandError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def _database_url(settings: Settings) -> str:
    from shared.db import database_url_from_settings

    return database_url_from_settings(settings)


def _where(url: str) -> str:
    from shared.db import describe_database

    return describe_database(url)


def _run(step: Callable[[str], T]) -> tuple[str, T]:
    settings = _settings()
    with _one_line_errors():
        url = _database_url(settings)
        return url, step(url)


@app.command()
def upgrade() -> None:
    """Bring the schema to the newest migration (changes nothing when already there)."""
    from shared.db import head_revision, upgrade_to_head

    url, _ = _run(upgrade_to_head)
    console.print(
        f"{_where(url)}: schema at revision {head_revision()} (head)", markup=False, soft_wrap=True
    )


@app.command()
def downgrade(
    revision: Annotated[
        str, typer.Argument(help='Where to go: "-1" (one step back), a revision id, or "base".')
    ] = "-1",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Undo migrations. Dropped tables take their rows with them, so this asks first."""
    from shared.db import current_revision, downgrade_to

    settings = _settings()
    with _one_line_errors():
        url = _database_url(settings)
        if not yes:
            typer.confirm(
                f"Downgrade {_where(url)} to {revision}? Tables it drops lose their rows",
                abort=True,
            )
        downgrade_to(url, revision)
        now = asyncio.run(current_revision(url))
    console.print(
        f"{_where(url)}: schema at revision {now or 'base (no tables)'}",
        markup=False,
        soft_wrap=True,
    )


@app.command()
def current() -> None:
    """Show the database's revision and the newest one this code knows."""
    from shared.db import current_revision, head_revision

    url, revision = _run(lambda url: asyncio.run(current_revision(url)))
    head = head_revision()
    if revision == head:
        state = f"revision {revision} (head)"
    elif revision is None:
        state = f"not migrated (head is {head}): run `trading db upgrade`"
    else:
        state = f"revision {revision}, head is {head}: run `trading db upgrade`"
    console.print(f"{_where(url)}: {state}", markup=False, soft_wrap=True)
