"""`trading strategies`: List strategies and their parameters."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from shared.config import SettingsError, load_settings
from strategy_engine.plugin_loader import (
    StrategyConfigError,
    find_strategy_files,
    load_strategy,
)

app = typer.Typer(help="List strategies and their parameters.", no_args_is_help=True)


def describe_strategies(extra_dir: Path | None) -> list[dict[str, Any]]:
    """Each strategy with its parameters as loaded (model defaults, then its YAML)."""
    rows = []
    for name, found in find_strategy_files(extra_dir).items():
        strategy = load_strategy(name, extra_dir=extra_dir)
        module = inspect.getmodule(found.cls)
        doc = ((module.__doc__ if module else None) or found.cls.__doc__ or "").strip().splitlines()
        rows.append(
            {
                "name": name,
                "description": doc[0] if doc else "",
                "parameters": strategy.params.model_dump(mode="json"),
                "warmup_period": strategy.warmup_period,
                "file": str(found.path),
                "config": str(found.config_path) if found.config_path.is_file() else None,
            }
        )
    return rows


def _extra_dir(option: Path | None) -> Path | None:
    if option is not None:
        return option
    try:
        return load_settings().strategies_extra_dir
    except SettingsError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("list")
def list_strategies(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    extra_dir: Annotated[
        Path | None,
        typer.Option(
            "--extra-dir",
            help="Another folder of *_strategy.py plugins (default: STRATEGIES_EXTRA_DIR).",
        ),
    ] = None,
) -> None:
    """Show each strategy with its parameters (YAML defaults) and warm-up."""
    try:
        rows = describe_strategies(_extra_dir(extra_dir))
    except StrategyConfigError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Strategies")
    table.add_column("name", style="bold")
    table.add_column("parameters (defaults)", no_wrap=True)
    table.add_column("warm-up", justify="right")
    table.add_column("description")
    for row in rows:
        params = "\n".join(f"{key}={value}" for key, value in row["parameters"].items())
        table.add_row(row["name"], params, str(row["warmup_period"]), row["description"])
    Console().print(table)
