"""`trading strategies list`, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

from trading_cli.main import app
from typer.testing import CliRunner

runner = CliRunner()
BUILTIN = ["bollinger", "ema_crossover", "grid", "macd", "rsi", "volume_profile", "vwap"]

PLUGIN = '''
from typing import ClassVar

from shared.models import Candle
from shared.strategy import BaseStrategy, Decision, StrategyParams


class NoopStrategy(BaseStrategy):
    """Never trades."""

    name: ClassVar[str] = "noop"
    params_model: ClassVar[type[StrategyParams]] = StrategyParams

    @property
    def warmup_period(self) -> int:
        return 0

    def _reset_state(self) -> None:
        pass

    def _step(self, candle: Candle) -> Decision | None:
        return None
'''


def test_list_json_shows_parameters_defaults_and_warmup() -> None:
    result = runner.invoke(app, ["strategies", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == BUILTIN
    assert rows["macd"]["parameters"] == {
        "quantity": "0.001",
        "fast_period": 12,
        "slow_period": 26,
        "signal_period": 9,
    }
    assert rows["macd"]["warmup_period"] == 35
    assert rows["rsi"]["warmup_period"] == 15
    assert rows["volume_profile"]["warmup_period"] == 100
    assert rows["vwap"]["parameters"]["deviation_threshold"] == 0.002
    assert rows["grid"]["description"].startswith("Grid trading")
    assert rows["bollinger"]["config"].endswith("strategies/config/bollinger_strategy.yaml")


def test_list_table_has_every_strategy_with_its_params() -> None:
    result = runner.invoke(app, ["strategies", "list"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for name in BUILTIN:
        assert name in result.stdout
    assert "lookback_period=100" in result.stdout
    assert "short_period=9" in result.stdout


def test_list_includes_plugins_from_the_extra_dir_setting(tmp_path: Path) -> None:
    (tmp_path / "noop_strategy.py").write_text(PLUGIN)
    result = runner.invoke(
        app, ["strategies", "list", "--json"], env={"STRATEGIES_EXTRA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["noop"]["warmup_period"] == 0
    assert rows["noop"]["config"] is None


def test_list_with_a_broken_plugin_yaml_fails_with_the_loader_message(tmp_path: Path) -> None:
    (tmp_path / "noop_strategy.py").write_text(PLUGIN)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "noop_strategy.yaml").write_text("quantiy: 1\n")
    result = runner.invoke(
        app,
        ["strategies", "list", "--extra-dir", str(tmp_path)],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: strategy 'noop': unknown parameter 'quantiy' in "
        f"{tmp_path / 'config' / 'noop_strategy.yaml'} (did you mean 'quantity'?); "
        "accepted parameters: quantity"
    )
