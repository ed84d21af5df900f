"""`trading run` and `trading demo --live` refuse bad options before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from trading_cli.data_commands import EXIT_BAD_INPUT, EXIT_BAD_SETTING
from trading_cli.main import app
from typer.testing import CliRunner

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "BTCUSDT-1m.csv.gz"


def trading(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "collector"], "unknown service collector: choose from data-collector"),
        (["run", "--exchange", "kraken"], "--exchange 'kraken': choose 'binance' or 'sim'"),
        (["run", "--exchange", "sim"], "--exchange sim needs --data FILE"),
        (["run", "--data", str(SAMPLE)], "--data replays candles on the simulator"),
        (
            ["run", "--exchange", "sim", "--data", "/nonexistent/BTCUSDT-1m.csv.gz"],
            "no candle file at /nonexistent/BTCUSDT-1m.csv.gz",
        ),
        (
            ["run", "--exchange", "sim", "--data", str(SAMPLE), "--speed", "fast"],
            "speed 'fast' is not valid: give a multiple of real time such as 60",
        ),
        (
            ["run", "--exchange", "sim", "--data", str(SAMPLE), "--speed", "-5"],
            "speed must not be negative",
        ),
        (["demo", "--live", "--speed", "fast"], "speed 'fast' is not valid"),
    ],
)
def test_a_bad_option_is_one_error_line_and_nothing_starts(args: list[str], message: str) -> None:
    code, output = trading(*args)
    assert code == EXIT_BAD_INPUT, output
    assert output.startswith("Error: ")
    assert message in output
    assert output.count("\n") == 1  # one line: no traceback, no child's output


def test_a_bad_setting_is_one_error_line_not_a_simulator_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settings are read before anything starts; their error is reported as such (it was
    once caught as the simulator's start-up failure and shown as 'exchange-simulator | 2')."""
    monkeypatch.setenv("COLLECTOR_INTERVALS", "7m")
    code, output = trading("run", "--exchange", "sim", "--data", str(SAMPLE), "--no-status")
    assert code == EXIT_BAD_SETTING, output
    assert output.startswith("Error: Invalid setting COLLECTOR_INTERVALS='7m'")
    assert "exchange-simulator" not in output
    assert output.count("\n") == 1
