"""`trading data import`, `trading data list` and `trading demo`, run in-process on a real
PostgreSQL (DATABASE_URL set to a fresh migrated database)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from trading_cli.main import app
from typer.testing import CliRunner, Result

runner = CliRunner()
ISO = "%Y-%m-%dT%H:%M:%SZ"
# For the tests that must fail before any database is touched: nothing listens on port 1.
UNREACHABLE_DATABASE = "postgresql://postgres@127.0.0.1:1/none"


def trading(database_url: str, *args: str, **env: str) -> Result:
    return runner.invoke(app, list(args), env={"DATABASE_URL": database_url, **env})


def listed(database_url: str) -> list[dict[str, Any]]:
    result = trading(database_url, "data", "list", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_importing_the_btc_1m_file_twice_keeps_71041_candles_and_reports_the_outage(
    migrated_database_url: str, shared_data: Path
) -> None:
    file = str(shared_data / "BTCUSDT-1m.csv.gz")  # symbol and interval from the name

    first = trading(migrated_database_url, "data", "import", file)
    second = trading(migrated_database_url, "data", "import", file)

    assert first.exit_code == 0, first.output
    assert "71,041 rows read, 71,041 new, 0 already present" in first.stdout
    assert second.exit_code == 0, second.output
    assert "71,041 rows read, 0 new, 71,041 already present" in second.stdout
    for result in (first, second):
        assert "1 (80 missing candles)" in result.stdout
        assert "2023-03-24 12:40 → 2023-03-24 13:59 UTC: 80 missing" in result.stdout
    assert listed(migrated_database_url) == [
        {
            "symbol": "BTCUSDT",
            "interval": "1m",
            "first": "2023-03-16T22:15:00Z",
            "last": "2023-05-05T07:35:00Z",
            "rows": 71041,
            "gaps": 1,
            "missing_candles": 80,
        }
    ]


def test_a_corrupt_row_aborts_with_its_line_and_leaves_the_table_unchanged(
    migrated_database_url: str, shared_data: Path, tmp_path: Path
) -> None:
    with gzip.open(shared_data / "ETHUSDT-1m.csv.gz", "rt") as file:
        lines = [next(file).rstrip("\n") for _ in range(1201)]
    before_file = tmp_path / "before.csv"
    before_file.write_text("\n".join(lines[:201]) + "\n")
    imported = trading(
        migrated_database_url, "data", "import", str(before_file), "--symbol", "ethusdt",
        "--interval", "1m",
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    before = listed(migrated_database_url)
    assert before[0]["rows"] == 200

    fields = lines[700].split(",")
    fields[5] = "-0.5"  # a negative volume on line 701
    lines[700] = ",".join(fields)
    corrupt = tmp_path / "ETHUSDT-1m.csv"
    corrupt.write_text("\n".join([lines[0], *lines[101:]]) + "\n")  # line 701 → line 601

    result = trading(migrated_database_url, "data", "import", str(corrupt))

    assert result.exit_code == 1
    assert "ETHUSDT-1m.csv: line 601: volume -0.5 is negative" in result.stderr
    assert "nothing of the file was stored" in result.stderr
    assert listed(migrated_database_url) == before


def test_data_list_json_has_one_entry_per_series(
    migrated_database_url: str, shared_data: Path, tmp_path: Path
) -> None:
    assert listed(migrated_database_url) == []
    expected = []
    for name, step_ms in (("BTCUSDT-15m.csv.gz", 900_000), ("ETHUSDT-1h.csv.gz", 3_600_000)):
        with gzip.open(shared_data / name, "rt") as file:
            lines = [next(file) for _ in range(97)]
        (tmp_path / name.removesuffix(".gz")).write_text("".join(lines))
        result = trading(migrated_database_url, "data", "import", str(tmp_path / name[:-3]))
        assert result.exit_code == 0, result.output
        times = [int(line.split(",")[0]) for line in lines[1:]]
        steps = [(later - earlier) // step_ms for earlier, later in pairwise(times)]
        expected.append(
            {
                "symbol": name.split("-")[0],
                "interval": name.split("-")[1].split(".")[0],
                "first": datetime.fromtimestamp(times[0] / 1000, UTC).strftime(ISO),
                "last": datetime.fromtimestamp(times[-1] / 1000, UTC).strftime(ISO),
                "rows": 96,
                "gaps": sum(step > 1 for step in steps),
                "missing_candles": sum(step - 1 for step in steps),
            }
        )

    assert listed(migrated_database_url) == expected
    assert expected[1]["gaps"] > 0  # ETHUSDT's first days of 2018 hold a real outage
    table = trading(migrated_database_url, "data", "list")
    assert "BTCUSDT" in table.stdout
    assert "ETHUSDT" in table.stdout


def test_demo_imports_the_bundled_sample_and_lists_it(migrated_database_url: str) -> None:
    first = trading(migrated_database_url, "demo")
    again = trading(migrated_database_url, "demo")

    assert first.exit_code == 0, first.output
    assert first.stdout.count("4,240 rows read, 4,240 new") == 2  # BTCUSDT and ETHUSDT
    assert "2023-03-24 12:40 → 2023-03-24 13:59 UTC: 80 missing" in first.stdout
    assert again.exit_code == 0, again.output
    assert "4,240 rows read, 0 new, 4,240 already present" in again.stdout
    assert [
        (s["symbol"], s["rows"], s["missing_candles"]) for s in listed(migrated_database_url)
    ] == [
        ("BTCUSDT", 4240, 80),
        ("ETHUSDT", 4240, 80),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "import", "{tmp}/missing.csv", "--symbol", "BTCUSDT", "--interval", "1m"],
         "missing.csv: no such file"),
        (["data", "import", "{tmp}/BTCUSDT-1m.csv", "--interval", "7m"],
         "unknown interval '7m': expected one of 1s, 1m"),
        (["data", "import", "{tmp}/candles.csv", "--interval", "1m"],
         "cannot tell the symbol from the file name 'candles.csv': pass it with --symbol"),
        (["data", "import", "{tmp}/candles.csv", "--symbol", "BTCUSDT"],
         "cannot tell the interval from the file name 'candles.csv': pass it with --interval"),
        (["data", "import", "{tmp}/BTCUSDT-1m.csv"],
         "BTCUSDT-1m.csv: is not a candle file"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_with_one_clear_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "BTCUSDT-1m.csv").write_bytes(b"\x00\x01binary junk\xff" * 10)
    (tmp_path / "candles.csv").write_text("open_time,open,high,low,close,volume\n")

    result = trading(UNREACHABLE_DATABASE, *(arg.format(tmp=tmp_path) for arg in args))

    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_setting_exits_2_naming_the_variable() -> None:
    result = trading(UNREACHABLE_DATABASE, "data", "list", LOG_FORMAT="xml")
    assert result.exit_code == 2
    assert "LOG_FORMAT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
