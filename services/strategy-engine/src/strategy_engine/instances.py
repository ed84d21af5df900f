"""The strategy engine's configuration: which strategy instances run on which series.

The engine reads one YAML file (STRATEGY_ENGINE_CONFIG, by default
``services/strategy-engine/config/engine.yaml``)::

    instances:
      - strategy: ema_crossover      # a name `trading strategies list` shows
        symbol: BTCUSDT
        interval: 1m
        params: {short_period: 5}    # over strategies/config/ema_crossover_strategy.yaml

Each instance's parameters are the strategy's model defaults, then its
``strategies/config`` YAML, then ``params`` here, validated by the strategy's params model.
Any problem is one `EngineConfigError` line naming the file, the instance and the key.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from shared.models import Interval, Symbol
from shared.strategy import BaseStrategy, params_fingerprint

from strategy_engine.plugin_loader import (
    PROJECT_ROOT,
    StrategyConfigError,
    find_strategy_files,
    read_parameters,
)

DEFAULT_ENGINE_CONFIG = PROJECT_ROOT / "services" / "strategy-engine" / "config" / "engine.yaml"


class EngineConfigError(ValueError):
    """The engine's configuration cannot be used; the message is one line saying why."""


class InstanceConfig(BaseModel):
    """One entry of ``instances:``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str = Field(min_length=1)
    symbol: Symbol
    interval: Interval
    params: dict[str, Any] = Field(default_factory=dict)


class EngineConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instances: list[InstanceConfig] = Field(min_length=1)


@dataclass(frozen=True)
class StrategyInstance:
    """A configured strategy following one series.

    `key` is unique and stable across restarts (strategy, series and a hash of the
    parameters), so progress stored under it survives a restart but not a parameter change.
    """

    key: str
    strategy: BaseStrategy
    symbol: str
    interval: str

    @property
    def name(self) -> str:
        """The strategy's name (the metrics label)."""
        return self.strategy.name


def read_engine_config(path: Path) -> EngineConfig:
    """Parse and validate the file; raises `EngineConfigError`."""
    if not path.is_file():
        raise EngineConfigError(
            f"strategy engine config {path} does not exist; create it or set "
            "STRATEGY_ENGINE_CONFIG to an existing file"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise EngineConfigError(f"{path}: not valid YAML ({_first_line(exc)})") from None
    try:
        return EngineConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the file"
        example = "instances: [{strategy: rsi, symbol: BTCUSDT, interval: 1m}]"
        raise EngineConfigError(
            f"{path}: {where}: {error['msg']} (expected e.g. {example})"
        ) from None


def build_instances(
    config: EngineConfig, *, source: Path, extra_dir: Path | None = None
) -> list[StrategyInstance]:
    """Configured strategy instances, one per entry; raises `EngineConfigError`."""
    try:
        strategies = find_strategy_files(extra_dir)
    except StrategyConfigError as exc:
        raise EngineConfigError(str(exc)) from None
    instances: list[StrategyInstance] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(config.instances, start=1):
        where = f"{source}: instance {number} ({entry.strategy} {entry.symbol} {entry.interval})"
        found = strategies.get(entry.strategy.removesuffix("_strategy"))
        if found is None:
            close = difflib.get_close_matches(entry.strategy, list(strategies), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EngineConfigError(
                f"{where}: unknown strategy {entry.strategy!r}{hint}; "
                f"known strategies: {', '.join(strategies)}"
            )
        accepted = list(found.cls.params_model.model_fields)
        for key in entry.params:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise EngineConfigError(
                    f"{where}: unknown parameter {key!r}{hint}; "
                    f"accepted parameters: {', '.join(accepted)}"
                )
        try:
            values, _ = read_parameters(found)
        except StrategyConfigError as exc:
            raise EngineConfigError(f"{where}: {exc}") from None
        values.update(entry.params)
        try:
            strategy = found.cls(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            key = str(error["loc"][0]) if error["loc"] else "params"
            got = f", got {values[key]!r}" if key in values else ""
            raise EngineConfigError(f"{where}: parameter {key!r}: {error['msg']}{got}") from None
        digest = hashlib.sha256(params_fingerprint(strategy.params).encode()).hexdigest()[:8]
        key = f"{strategy.name}:{entry.symbol}:{entry.interval}:{digest}"
        if key in seen:
            raise EngineConfigError(
                f"{where}: the same strategy, series and parameters as instance {seen[key]}; "
                "remove one of them"
            )
        seen[key] = number
        instances.append(StrategyInstance(key, strategy, entry.symbol, entry.interval))
    return instances


def load_instances(
    path: Path | None = None, extra_dir: Path | None = None
) -> list[StrategyInstance]:
    """Read the engine config at `path` (the default file when None) and build its instances."""
    source = path or DEFAULT_ENGINE_CONFIG
    return build_instances(read_engine_config(source), source=source, extra_dir=extra_dir)


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
