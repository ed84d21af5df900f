"""The engine's instances file: defaults layered under it, and one clear line per mistake."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from shared.config import load_settings
from strategy_engine.instances import DEFAULT_ENGINE_CONFIG, EngineConfigError, load_instances
from strategy_engine.main import uncollected


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "engine.yaml"
    path.write_text(text)
    return path


def test_default_config_runs_the_sample_series() -> None:
    instances = load_instances(DEFAULT_ENGINE_CONFIG)
    series = {(i.strategy.name, i.symbol, i.interval) for i in instances}
    assert series == {("ema_crossover", "BTCUSDT", "1m"), ("rsi", "ETHUSDT", "1m")}


def test_params_override_the_strategy_yaml_which_overrides_the_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "instances:\n  - {strategy: rsi, symbol: ETHUSDT, interval: 5m, params: {period: 7}}\n",
    )
    (instance,) = load_instances(path)
    params = instance.strategy.params.model_dump()
    assert params["period"] == 7  # engine.yaml
    assert params["overbought"] == 70  # strategies/config/rsi_strategy.yaml
    assert params["quantity"] == Decimal("0.001")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "instances:\n  - {strategy: ema_crosover, symbol: BTCUSDT, interval: 1m}\n",
            "instance 1 (ema_crosover BTCUSDT 1m): unknown strategy 'ema_crosover' "
            "(did you mean 'ema_crossover'?)",
        ),
        (
            "instances:\n  - {strategy: rsi, symbol: BTCUSDT, interval: 7m}\n",
            "instances.0.interval: Value error, unknown interval '7m'",
        ),
        (
            "instances:\n  - {strategy: rsi, symbol: BTCUSDT, interval: 1m,"
            " params: {period: -3}}\n",
            "parameter 'period'",
        ),
        ("instances: []\n", "instances: List should have at least 1 item"),
        ("instances: [\n", "not valid YAML"),
        (
            "instances:\n  - {strategy: rsi, symbol: BTCUSDT, interval: 1m}\n"
            "  - {strategy: rsi, symbol: BTCUSDT, interval: 1m}\n",
            "instance 2 (rsi BTCUSDT 1m): the same strategy, series and parameters as instance 1",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(EngineConfigError) as raised:
        load_instances(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_file_says_which_setting_to_fix(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="STRATEGY_ENGINE_CONFIG"):
        load_instances(tmp_path / "nope.yaml")


def test_instances_of_series_the_collector_does_not_collect_are_named() -> None:
    instances = load_instances(DEFAULT_ENGINE_CONFIG)  # ema BTCUSDT 1m, rsi ETHUSDT 1m
    both = load_settings(collector_symbols="BTCUSDT,ETHUSDT", collector_intervals="1m")
    assert uncollected(instances, both) == []
    btc_only = load_settings(collector_symbols="btcusdt", collector_intervals="1m,5m")
    assert [(i.symbol, i.interval) for i in uncollected(instances, btc_only)] == [("ETHUSDT", "1m")]
    other_interval = load_settings(collector_symbols="BTCUSDT,ETHUSDT", collector_intervals="5m")
    assert len(uncollected(instances, other_interval)) == 2


def test_the_default_collector_collects_every_default_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of the box (docker-compose, `trading run` on Binance) every instance of the
    default engine.yaml gets its candles."""
    for variable in ("COLLECTOR_SYMBOLS", "COLLECTOR_INTERVALS"):
        monkeypatch.delenv(variable, raising=False)
    defaults = load_settings(_env_file=None)
    assert uncollected(load_instances(DEFAULT_ENGINE_CONFIG), defaults) == []
