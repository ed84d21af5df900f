"""`trading db upgrade | downgrade | current`, run in-process on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import socket

from shared.db import current_revision, head_revision
from trading_cli.main import app
from typer.testing import CliRunner, Result

runner = CliRunner()


def trading(database_url: str, *args: str, stdin: str | None = None, **env: str) -> Result:
    return runner.invoke(app, ["db", *args], input=stdin, env={"DATABASE_URL": database_url, **env})


def revision_of(database_url: str) -> str | None:
    return asyncio.run(current_revision(database_url))


def test_upgrade_then_current_report_the_head_revision(database_url: str) -> None:
    before = trading(database_url, "current")
    assert before.exit_code == 0, before.output
    assert "not migrated" in before.stdout and "run `trading db upgrade`" in before.stdout

    upgraded = trading(database_url, "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert f"schema at revision {head_revision()} (head)" in upgraded.stdout
    assert revision_of(database_url) == head_revision()

    after = trading(database_url, "current")
    assert after.exit_code == 0, after.output
    assert after.stdout.strip().endswith(f"revision {head_revision()} (head)")


def test_downgrade_asks_first_and_changes_nothing_when_declined(
    migrated_database_url: str,
) -> None:
    declined = trading(migrated_database_url, "downgrade", stdin="n\n")

    assert declined.exit_code == 1
    assert "Tables it drops lose their rows" in declined.output
    assert revision_of(migrated_database_url) == head_revision()


def test_downgrade_to_base_with_yes_removes_the_schema(migrated_database_url: str) -> None:
    result = trading(migrated_database_url, "downgrade", "--yes", "base")

    assert result.exit_code == 0, result.output
    assert "base (no tables)" in result.stdout
    assert revision_of(migrated_database_url) is None


def test_downgrade_to_an_unknown_revision_is_one_clear_line(migrated_database_url: str) -> None:
    result = trading(migrated_database_url, "downgrade", "-y", "nonsense")

    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: Can't locate revision identified by 'nonsense'"


def test_an_unreachable_database_names_the_host_never_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = trading(f"postgresql://trader:hunter2@127.0.0.1:{port}/trading", "upgrade")

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"Error: Cannot connect to PostgreSQL (database 'trading' at trader@127.0.0.1:{port})"
    )
    assert "hunter2" not in result.output


def test_a_bad_setting_exits_2_naming_it(database_url: str) -> None:
    result = trading(database_url, "current", HEALTH_PORT="http")

    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: Invalid setting HEALTH_PORT='http': expected a whole number from 1 to 65535"
    )
