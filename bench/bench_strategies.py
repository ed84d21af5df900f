"""on_candle throughput of every strategy beside a bare Python EMA loop, in the same run.

    uv run --frozen python bench/bench_strategies.py [--repeat 3] [--file PATH]

The floor for per-candle Python is a loop doing only `ema += alpha * (float(close) − ema)`
over the same Candle objects (one Decimal → float conversion and one EMA update a candle).
Each strategy, loaded by the plugin loader with its YAML defaults, runs `on_candle` over
all candles (signals included). Times are CPU time of this process (`time.process_time`,
steadier than wall time on a shared machine); each row is the best of --repeat runs,
baseline included, interleaved so that load on the machine hits every row alike.
Goal: every strategy within 4× of the loop's time a candle, the volume profile
(O(num_bins) a candle) within 20×.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table
from shared.models import Candle, Side, Signal
from shared.strategy import StrategyParams, make_signal_id
from strategy_engine.plugin_loader import discover_strategies, load_strategy

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "BTCUSDT-1m.csv.gz"
GOAL = {"volume_profile": 20.0}
DEFAULT_GOAL = 4.0


def read_candles(path: Path, symbol: str = "BTCUSDT", interval: str = "1m") -> list[Candle]:
    """Every row of a shared/data CSV as a Candle."""
    candles = []
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for row in reader:
            candles.append(
                Candle(
                    symbol=symbol,
                    interval=interval,
                    open_time=datetime.fromtimestamp(int(row[0]) / 1000, UTC),
                    open=Decimal(row[1]),
                    high=Decimal(row[2]),
                    low=Decimal(row[3]),
                    close=Decimal(row[4]),
                    volume=Decimal(row[5]),
                )
            )
    return candles


def bare_ema_loop(candles: list[Candle]) -> int:
    """The floor: one float conversion and one EMA update a candle, nothing else."""
    alpha = 2.0 / (12 + 1)
    ema = float(candles[0].close)
    for candle in candles:
        ema += alpha * (float(candle.close) - ema)
    return 0


def strategy_loop(name: str) -> Callable[[list[Candle]], int]:
    strategy = load_strategy(name)

    def run(candles: list[Candle]) -> int:
        strategy.reset()
        on_candle = strategy.on_candle
        signals = 0
        for candle in candles:
            if on_candle(candle) is not None:
                signals += 1
        return signals

    return run


def timed(run: Callable[[list[Candle]], int], candles: list[Candle]) -> tuple[float, int]:
    start = time.process_time()
    signals = run(candles)
    return time.process_time() - start, signals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    with console.status(f"reading {args.file.name}"):
        candles = read_candles(args.file)
    runs: dict[str, Callable[[list[Candle]], int]] = {"bare EMA loop": bare_ema_loop}
    runs.update({name: strategy_loop(name) for name in sorted(discover_strategies())})
    best: dict[str, float] = {}
    signals: dict[str, int] = {}
    with console.status("timing") as status:
        for rep in range(args.repeat):
            for name, run in runs.items():
                status.update(f"run {rep + 1}/{args.repeat}: {name}")
                seconds, count = timed(run, candles)
                best[name] = min(best.get(name, seconds), seconds)
                signals[name] = count
    floor = best["bare EMA loop"]
    table = Table(title=f"on_candle over {len(candles):,} candles of {args.file.name}")
    for column in ("strategy", "candles/s", "ns/candle", "× bare loop", "goal", "signals"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for name, seconds in best.items():
        ratio = seconds / floor
        goal = None if name == "bare EMA loop" else GOAL.get(name, DEFAULT_GOAL)
        verdict = "" if goal is None else ("✓ " if ratio <= goal else "✗ ") + f"≤{goal:g}×"
        table.add_row(
            name,
            f"{len(candles) / seconds:,.0f}",
            f"{seconds / len(candles) * 1e9:,.0f}",
            f"{ratio:.2f}",
            verdict,
            "" if goal is None else f"{signals[name]:,}",
        )
    console.print(table)
    floor_ns = floor / len(candles) * 1e9
    per_signal = signal_cost(candles[-1])
    console.print(
        f"validating one Signal model (pydantic) costs {per_signal:,.0f} ns "
        f"= {per_signal / floor_ns:.0f} bare-loop candles"
    )
    per_fired = fired_signal_cost(candles)
    console.print(
        f"a strategy's signal as built (id + prevalidated model) costs {per_fired:,.0f} ns "
        f"= {per_fired / floor_ns:.0f} bare-loop candles"
    )


def signal_cost(candle: Candle, count: int = 2000) -> float:
    """ns to validate one Signal as a strategy does when a rule fires (its id precomputed)."""
    params = StrategyParams()
    signal_id = make_signal_id(
        "macd", params, candle.symbol, candle.interval, candle.open_time, "BUY"
    )
    start = time.process_time()
    for _ in range(count):
        Signal(
            id=signal_id,
            strategy="macd",
            symbol=candle.symbol,
            interval=candle.interval,
            side=Side.BUY,
            quantity=params.quantity,
            price=candle.close,
            candle_time=candle.open_time,
            reason="MACD crossed above its signal line",
        )
    return (time.process_time() - start) / count * 1e9


def fired_signal_cost(candles: list[Candle], count: int = 2000) -> float:
    """ns for `BaseStrategy._signal` (the id and the Signal) once a MACD rule has fired."""
    strategy = load_strategy("macd")
    for candle in candles[:100]:
        strategy.on_candle(candle)
    candle = candles[99]
    decision = (Side.BUY, "MACD crossed above its signal line")
    start = time.process_time()
    for _ in range(count):
        strategy._signal(candle, decision)
    return (time.process_time() - start) / count * 1e9


if __name__ == "__main__":
    main()
