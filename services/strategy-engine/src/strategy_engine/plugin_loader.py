"""Find strategy classes, load their YAML parameters and `--param` overrides, configure them.

One loader for the strategy engine, the backtester and the CLI. Strategies live in files
`<name>_strategy.py` in the project's `strategies/` folder (beside `shared/`, found from the
installed `shared` package, not the working directory) and in an optional extra folder (the
`strategies_extra_dir` setting). A strategy's name is its file stem without `_strategy`
("ema_crossover"); the full stem is accepted too. Its parameters start from the model's
defaults, then `config/<file stem>.yaml` beside the file, then `key=value` overrides, and the
whole set is validated by the strategy's params model.

Every failure is a `StrategyConfigError` with one message naming the strategy, the key and
the accepted keys, e.g.::

    strategy 'rsi': unknown parameter 'periood' in --param periood=3 (did you mean 'period'?);
    accepted parameters: period, oversold, overbought, quantity
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from shared.strategy import BaseStrategy

import shared

PROJECT_ROOT = Path(shared.__file__).resolve().parents[3]
STRATEGIES_DIR = PROJECT_ROOT / "strategies"
_SUFFIX = "_strategy"


class StrategyConfigError(ValueError):
    """A strategy cannot be found, loaded or configured; the message says why and how to fix."""


@dataclass(frozen=True)
class StrategyFile:
    """Where a discovered strategy comes from."""

    name: str
    cls: type[BaseStrategy]
    path: Path
    config_path: Path


def discover_strategies(extra_dir: Path | None = None) -> dict[str, type[BaseStrategy]]:
    """Every strategy class by name, from `strategies/` and `extra_dir`."""
    return {name: found.cls for name, found in find_strategy_files(extra_dir).items()}


def find_strategy_files(extra_dir: Path | None = None) -> dict[str, StrategyFile]:
    """Every strategy by name with its file and YAML path; names sorted."""
    found: dict[str, StrategyFile] = {}
    folders = [STRATEGIES_DIR] if extra_dir is None else [STRATEGIES_DIR, Path(extra_dir)]
    for folder in folders:
        if not folder.is_dir():
            raise StrategyConfigError(f"strategy folder {_show(folder)} does not exist")
        for path in sorted(folder.glob(f"*{_SUFFIX}.py")):
            strategy = _load_file(path, builtin=folder == STRATEGIES_DIR)
            if strategy.name in found:
                raise StrategyConfigError(
                    f"strategy {strategy.name!r} is defined twice: in "
                    f"{_show(found[strategy.name].path)} and in {_show(path)}; rename one file"
                )
            found[strategy.name] = strategy
    return dict(sorted(found.items()))


def load_strategy(
    name: str, overrides: Sequence[str] = (), extra_dir: Path | None = None
) -> BaseStrategy:
    """A configured instance of strategy `name`: YAML defaults, then `key=value` overrides."""
    strategies = find_strategy_files(extra_dir)
    found = strategies.get(name.removesuffix(_SUFFIX))
    if found is None:
        hint = _did_you_mean(name.removesuffix(_SUFFIX), list(strategies))
        raise StrategyConfigError(
            f"unknown strategy {name!r}{hint}; known strategies: {', '.join(strategies)}"
        )
    values, sources = read_parameters(found, overrides)
    try:
        return found.cls(values)
    except ValidationError as exc:
        raise StrategyConfigError(_explain(found, exc, values, sources)) from None


def read_parameters(
    found: StrategyFile, overrides: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw parameter values (YAML then overrides) and where each came from."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in _read_yaml(found).items():
        values[key] = value
        sources[key] = f"in {_show(found.config_path)}"
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.strip()
        if not sep or not key:
            example = key if key in _accepted(found) else _accepted(found)[-1]
            raise StrategyConfigError(
                f"strategy {found.name!r}: --param {override!r} is not key=value "
                f"(e.g. --param {example}=...); {_accepted_text(found)}"
            )
        values[key] = value.strip()
        sources[key] = f"in --param {override}"
    for key, source in sources.items():
        if key not in found.cls.params_model.model_fields:
            hint = _did_you_mean(key, _accepted(found))
            raise StrategyConfigError(
                f"strategy {found.name!r}: unknown parameter {key!r} {source}{hint}; "
                f"{_accepted_text(found)}"
            )
    return values, sources


# -- reading files ------------------------------------------------------------------------


def _read_yaml(found: StrategyFile) -> dict[str, Any]:
    path = found.config_path
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StrategyConfigError(
            f"strategy {found.name!r}: YAML syntax error in {_show(path)}{where}: "
            f"{exc.problem}; {_accepted_text(found)}"
        ) from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise StrategyConfigError(
            f"strategy {found.name!r}: cannot read {_show(path)}: {exc}; {_accepted_text(found)}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StrategyConfigError(
            f"strategy {found.name!r}: {_show(path)} must be a mapping of parameter: value, "
            f"got {type(data).__name__}; {_accepted_text(found)}"
        )
    for key in data:
        if not isinstance(key, str):
            raise StrategyConfigError(
                f"strategy {found.name!r}: parameter names in {_show(path)} must be text, "
                f"got {key!r}; {_accepted_text(found)}"
            )
    return data


def _load_file(path: Path, *, builtin: bool) -> StrategyFile:
    name = path.stem.removesuffix(_SUFFIX)
    try:
        module = _import_builtin(path) if builtin else _import_extra(path)
    except Exception as exc:
        raise StrategyConfigError(
            f"strategy {name!r}: cannot import {_show(path)}: {type(exc).__name__}: {exc}"
        ) from None
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseStrategy)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
    if len(classes) != 1:
        found = ", ".join(cls.__name__ for cls in classes) or "none"
        raise StrategyConfigError(
            f"strategy {name!r}: {_show(path)} must define exactly one BaseStrategy "
            f"subclass, found {found}"
        )
    cls = classes[0]
    if getattr(cls, "name", None) != name:
        raise StrategyConfigError(
            f"strategy {name!r}: {cls.__name__}.name is {getattr(cls, 'name', None)!r} in "
            f"{_show(path)}; set it to {name!r} (the file name without {_SUFFIX!r})"
        )
    return StrategyFile(name, cls, path, path.parent / "config" / f"{path.stem}.yaml")


def _import_builtin(path: Path) -> ModuleType:
    """Import as `strategies.<stem>`, the same module the tests and the backtester import."""
    package = sys.modules.get("strategies")
    if package is None:
        spec = importlib.util.spec_from_file_location(
            "strategies",
            STRATEGIES_DIR / "__init__.py",
            submodule_search_locations=[str(STRATEGIES_DIR)],
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["strategies"] = package
        spec.loader.exec_module(package)
    if str(STRATEGIES_DIR) not in [str(Path(p).resolve()) for p in package.__path__]:
        raise ImportError(f"another package named 'strategies' is imported: {package}")
    return importlib.import_module(f"strategies.{path.stem}")


def _import_extra(path: Path) -> ModuleType:
    """Import a plugin file under a name unique to its folder, once."""
    folder_key = hashlib.sha256(str(path.parent.resolve()).encode()).hexdigest()[:12]
    module_name = f"_strategy_plugins_{folder_key}.{path.stem}"
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


# -- messages -----------------------------------------------------------------------------


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _accepted(found: StrategyFile) -> list[str]:
    return list(found.cls.params_model.model_fields)


def _accepted_text(found: StrategyFile) -> str:
    return f"accepted parameters: {', '.join(_accepted(found))}"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _explain(
    found: StrategyFile,
    exc: ValidationError,
    values: Mapping[str, Any],
    sources: Mapping[str, str],
) -> str:
    problems = []
    for error in exc.errors():
        if error["loc"]:
            key = str(error["loc"][0])
            source = f" {sources[key]}" if key in sources else " (default)"
            got = f", got {values[key]!r}" if key in values else ""
            problems.append(f"parameter {key!r}{source}: {_describe(error)}{got}")
        else:
            message = _describe(error)
            named = [key for key in sources if re.search(rf"\b{re.escape(key)}\b", message)]
            where = ", ".join(f"{key} {sources[key]}" for key in named)
            problems.append(f"invalid parameters: {message}" + (f" ({where})" if where else ""))
    return f"strategy {found.name!r}: {'; '.join(problems)}; {_accepted_text(found)}"


def _describe(error: ErrorDetails) -> str:
    """Pydantic's error as what the parameter accepts."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    bounds = {
        "greater_than": "must be greater than",
        "greater_than_equal": "must be at least",
        "less_than": "must be less than",
        "less_than_equal": "must be at most",
    }
    if kind in bounds:
        bound = next(iter(ctx.values()), "")
        return f"{bounds[kind]} {bound}"
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return "expected a whole number"
    if kind in {"float_parsing", "float_type", "decimal_parsing", "decimal_type"}:
        return "expected a number"
    if kind in {"bool_parsing", "bool_type"}:
        return "expected true or false"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])
