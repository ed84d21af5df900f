"""The plugin loader: discovery, YAML defaults, typed --param overrides, and its messages."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from shared.strategy import BaseStrategy
from strategy_engine.plugin_loader import (
    PROJECT_ROOT,
    STRATEGIES_DIR,
    StrategyConfigError,
    discover_strategies,
    load_strategy,
)

import strategies.rsi_strategy

BUILTIN = ["bollinger", "ema_crossover", "grid", "macd", "rsi", "volume_profile", "vwap"]
RSI_KEYS = "accepted parameters: quantity, period, oversold, overbought"
ECHO_KEYS = "accepted parameters: quantity, window, threshold"

ECHO_PLUGIN = '''
from typing import ClassVar

from pydantic import Field

from shared.models import Candle
from shared.strategy import BaseStrategy, Decision, StrategyParams


class EchoParams(StrategyParams):
    window: int = Field(default=3, ge=1)
    threshold: float = Field(default=0.5, gt=0, lt=1)


class EchoStrategy(BaseStrategy):
    """A plugin from the extra folder."""

    name: ClassVar[str] = "{name}"
    params_model: ClassVar[type[StrategyParams]] = EchoParams

    @property
    def warmup_period(self) -> int:
        return self.params.window  # type: ignore[attr-defined, no-any-return]

    def _reset_state(self) -> None:
        pass

    def _step(self, candle: Candle) -> Decision | None:
        return None
'''


@pytest.fixture
def extra_dir(tmp_path: Path) -> Path:
    """An extra strategies folder holding the `echo` plugin (no YAML yet)."""
    (tmp_path / "echo_strategy.py").write_text(ECHO_PLUGIN.format(name="echo"))
    (tmp_path / "config").mkdir()
    return tmp_path


def write_config(extra_dir: Path, text: str) -> Path:
    path = extra_dir / "config" / "echo_strategy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load_error(name: str, overrides: tuple[str, ...] = (), extra: Path | None = None) -> str:
    with pytest.raises(StrategyConfigError) as caught:
        load_strategy(name, overrides, extra)
    return str(caught.value)


# -- discovery ----------------------------------------------------------------------------


def test_strategies_folder_is_found_beside_shared_not_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert STRATEGIES_DIR == PROJECT_ROOT / "strategies"
    assert (PROJECT_ROOT / "shared" / "src" / "shared").is_dir()
    assert list(discover_strategies()) == BUILTIN


def test_discovered_classes_are_the_importable_modules_classes() -> None:
    found = discover_strategies()
    assert found["rsi"] is strategies.rsi_strategy.RsiStrategy
    assert all(issubclass(cls, BaseStrategy) and cls.name == n for n, cls in found.items())


def test_extra_folder_adds_its_plugins(extra_dir: Path) -> None:
    found = discover_strategies(extra_dir)
    assert list(found) == sorted([*BUILTIN, "echo"])
    assert load_strategy("echo", extra_dir=extra_dir).warmup_period == 3


def test_every_builtin_has_a_yaml_with_exactly_its_models_defaults() -> None:
    for name, cls in discover_strategies().items():
        path = STRATEGIES_DIR / "config" / f"{name}_strategy.yaml"
        raw = yaml.safe_load(path.read_text())
        assert set(raw) == set(cls.params_model.model_fields), name
        assert cls.params_model.model_validate(raw) == cls.params_model(), name


# -- loading ------------------------------------------------------------------------------


def test_name_and_file_stem_load_the_same_configured_strategy() -> None:
    short = load_strategy("ema_crossover")
    long = load_strategy("ema_crossover_strategy")
    assert type(short) is type(long)
    assert short.params == long.params
    assert short.warmup_period == 21


def test_yaml_values_configure_the_strategy(extra_dir: Path) -> None:
    write_config(extra_dir, "window: 7\nthreshold: 0.25\nquantity: 0.002\n")
    strategy = load_strategy("echo", extra_dir=extra_dir)
    assert strategy.params.model_dump() == {
        "quantity": Decimal("0.002"),
        "window": 7,
        "threshold": 0.25,
    }
    assert strategy.warmup_period == 7


def test_param_overrides_win_over_yaml_and_are_parsed_to_the_fields_type(
    extra_dir: Path,
) -> None:
    write_config(extra_dir, "window: 7\n")
    strategy = load_strategy("echo", ["window=9", "threshold=0.75", "quantity=0.01"], extra_dir)
    params = strategy.params.model_dump()
    assert params == {"quantity": Decimal("0.01"), "window": 9, "threshold": 0.75}
    assert [type(v) for v in params.values()] == [Decimal, int, float]


def test_empty_yaml_means_the_models_defaults(extra_dir: Path) -> None:
    write_config(extra_dir, "# nothing set\n")
    assert load_strategy("echo", extra_dir=extra_dir).params.model_dump()["window"] == 3


# -- messages, as the user sees them ------------------------------------------------------------


def test_unknown_param_suggests_the_closest_key() -> None:
    assert load_error("rsi", ("periood=3",)) == (
        "strategy 'rsi': unknown parameter 'periood' in --param periood=3 "
        f"(did you mean 'period'?); {RSI_KEYS}"
    )
    assert load_error("rsi", ("colour=red",)) == (
        f"strategy 'rsi': unknown parameter 'colour' in --param colour=red; {RSI_KEYS}"
    )


def test_param_of_the_wrong_type() -> None:
    assert load_error("rsi", ("period=abc",)) == (
        "strategy 'rsi': parameter 'period' in --param period=abc: expected a whole number, "
        f"got 'abc'; {RSI_KEYS}"
    )
    assert load_error("rsi", ("period=2.5",)) == (
        "strategy 'rsi': parameter 'period' in --param period=2.5: expected a whole number, "
        f"got '2.5'; {RSI_KEYS}"
    )
    assert load_error("rsi", ("quantity=lots",)) == (
        "strategy 'rsi': parameter 'quantity' in --param quantity=lots: expected a number, "
        f"got 'lots'; {RSI_KEYS}"
    )


def test_param_out_of_range() -> None:
    assert load_error("rsi", ("period=1",)) == (
        f"strategy 'rsi': parameter 'period' in --param period=1: must be at least 2, got '1'; "
        f"{RSI_KEYS}"
    )
    assert load_error("rsi", ("quantity=0",)) == (
        "strategy 'rsi': parameter 'quantity' in --param quantity=0: must be greater than 0, "
        f"got '0'; {RSI_KEYS}"
    )


def test_params_that_contradict_each_other_name_both_and_where_they_came_from() -> None:
    assert load_error("macd", ("fast_period=30",)) == (
        "strategy 'macd': invalid parameters: fast_period (30) must be less than slow_period "
        "(26) (fast_period in --param fast_period=30, slow_period in "
        "strategies/config/macd_strategy.yaml); "
        "accepted parameters: quantity, fast_period, slow_period, signal_period"
    )


def test_param_that_is_not_key_value() -> None:
    assert load_error("rsi", ("period",)) == (
        f"strategy 'rsi': --param 'period' is not key=value (e.g. --param period=...); {RSI_KEYS}"
    )


def test_unknown_strategy_lists_the_known_ones() -> None:
    known = "known strategies: bollinger, ema_crossover, grid, macd, rsi, volume_profile, vwap"
    assert load_error("rsii") == f"unknown strategy 'rsii' (did you mean 'rsi'?); {known}"
    assert load_error("turtle") == f"unknown strategy 'turtle'; {known}"


def test_yaml_syntax_error_names_its_line(extra_dir: Path) -> None:
    path = write_config(extra_dir, "window: 3\n  threshold: 0.2\n")
    assert load_error("echo", extra=extra_dir) == (
        f"strategy 'echo': YAML syntax error in {path} at line 2, column 12: "
        f"mapping values are not allowed here; {ECHO_KEYS}"
    )


def test_yaml_unknown_key_wrong_type_and_out_of_range(extra_dir: Path) -> None:
    path = write_config(extra_dir, "windw: 3\n")
    assert load_error("echo", extra=extra_dir) == (
        f"strategy 'echo': unknown parameter 'windw' in {path} (did you mean 'window'?); "
        f"{ECHO_KEYS}"
    )
    write_config(extra_dir, "window: many\n")
    assert load_error("echo", extra=extra_dir) == (
        f"strategy 'echo': parameter 'window' in {path}: expected a whole number, got 'many'; "
        f"{ECHO_KEYS}"
    )
    write_config(extra_dir, "threshold: 1.5\n")
    assert load_error("echo", extra=extra_dir) == (
        f"strategy 'echo': parameter 'threshold' in {path}: must be less than 1.0, got 1.5; "
        f"{ECHO_KEYS}"
    )


def test_a_bad_yaml_value_fixed_by_a_param_loads(extra_dir: Path) -> None:
    write_config(extra_dir, "threshold: 1.5\n")
    assert (
        load_strategy("echo", ["threshold=0.5"], extra_dir).params.model_dump()["threshold"] == 0.5
    )


def test_yaml_that_is_not_a_mapping(extra_dir: Path) -> None:
    path = write_config(extra_dir, "- 1\n- 2\n")
    assert load_error("echo", extra=extra_dir) == (
        f"strategy 'echo': {path} must be a mapping of parameter: value, got list; {ECHO_KEYS}"
    )


def test_yaml_key_that_is_not_a_name(extra_dir: Path) -> None:
    path = write_config(extra_dir, "3: window\n")
    assert load_error("echo", extra=extra_dir) == (
        f"strategy 'echo': parameter names in {path} must be text, got 3; {ECHO_KEYS}"
    )


def test_plugin_clashing_with_a_builtin_name(extra_dir: Path) -> None:
    (extra_dir / "rsi_strategy.py").write_text(ECHO_PLUGIN.format(name="rsi"))
    with pytest.raises(StrategyConfigError) as caught:
        discover_strategies(extra_dir)
    assert str(caught.value) == (
        "strategy 'rsi' is defined twice: in strategies/rsi_strategy.py and in "
        f"{extra_dir / 'rsi_strategy.py'}; rename one file"
    )


def test_plugin_whose_name_does_not_match_its_file(extra_dir: Path) -> None:
    (extra_dir / "other_strategy.py").write_text(ECHO_PLUGIN.format(name="echo2"))
    with pytest.raises(StrategyConfigError) as caught:
        discover_strategies(extra_dir)
    assert str(caught.value) == (
        f"strategy 'other': EchoStrategy.name is 'echo2' in {extra_dir / 'other_strategy.py'}; "
        "set it to 'other' (the file name without '_strategy')"
    )


def test_plugin_that_cannot_be_imported(extra_dir: Path) -> None:
    (extra_dir / "broken_strategy.py").write_text("import no_such_module_here\n")
    with pytest.raises(StrategyConfigError) as caught:
        discover_strategies(extra_dir)
    assert str(caught.value) == (
        f"strategy 'broken': cannot import {extra_dir / 'broken_strategy.py'}: "
        "ModuleNotFoundError: No module named 'no_such_module_here'"
    )


def test_missing_extra_folder(tmp_path: Path) -> None:
    with pytest.raises(StrategyConfigError) as caught:
        discover_strategies(tmp_path / "nowhere")
    assert str(caught.value) == f"strategy folder {tmp_path / 'nowhere'} does not exist"
