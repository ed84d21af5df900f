"""Backtest speed: our engine vs backtesting.py vs backtrader, EMA crossover on real candles.

    uv run --frozen python bench/bench_backtest.py [--files BTCUSDT-1m.csv.gz ...] [--repeat N]

Each engine runs in its own subprocess (so peak memory, ru_maxrss, is its own) on the same
file: EMA(9)/EMA(21) crossover, buy 0.01 BTC on the golden cross, sell 0.01 BTC (at most what
is held) on the death cross,
0.1 % fee per side, market orders filled at the next candle's open, 10,000 USDT.
"load excluded" times the backtest alone; "load included" adds reading the file into what the
engine consumes (our `load_file_candles`; pandas.read_csv for the two peers).
Reported: candles per CPU-second (best of --repeat runs; the machine is shared, and CPU time
is far steadier than wall time under load), candles per wall-second, peak RSS, and trades and
final equity, which show the three did the same work.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_FILES = ("BTCUSDT-1m.csv.gz", "BTCUSDT-15m.csv.gz")
ENGINES = ("ours", "backtesting.py", "backtrader")
SHORT, LONG, QUANTITY, FEE, CASH = 9, 21, 0.01, 0.001, 10_000


class Clock:
    """Wall and CPU time of a block: on a shared machine CPU time is the steadier measure."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def best(clocks: list[Clock]) -> dict[str, float]:
    return {"run_wall": min(c.wall for c in clocks), "run_cpu": min(c.cpu for c in clocks)}


def read_frame(path: Path) -> Any:
    import pandas as pd

    frame = pd.read_csv(path, usecols=["open_time", "open", "high", "low", "close", "volume"])
    frame.index = pd.to_datetime(frame.pop("open_time"), unit="ms", utc=True)
    frame.columns = ["Open", "High", "Low", "Close", "Volume"]
    return frame


def child_ours(path: Path, repeat: int) -> dict[str, Any]:
    from backtester.data import load_file_candles
    from backtester.engine import BacktestConfig, BacktestEngine
    from strategy_engine.plugin_loader import load_strategy

    symbol, interval = path.name.split(".")[0].split("-")
    with Clock() as load:
        data = load_file_candles(path, symbol, interval)
    strategy = load_strategy(
        "ema_crossover",
        [f"quantity={QUANTITY}", f"short_period={SHORT}", f"long_period={LONG}"],
    )
    engine = BacktestEngine(strategy, BacktestConfig(symbol, interval, fee=Decimal(str(FEE))))
    runs = []
    for _ in range(repeat):
        with Clock() as clock:
            result = engine.run(data.candles)
        runs.append(clock)
    return {
        "candles": len(data.candles),
        "load_wall": load.wall,
        "load_cpu": load.cpu,
        **best(runs),
        "trades": result.metrics.total_trades,
        "final_equity": float(result.final_equity),
    }


def child_backtesting(path: Path, repeat: int) -> dict[str, Any]:
    import warnings

    import talib
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest, crossover

    warnings.filterwarnings("ignore")
    with Clock() as load:
        frame = read_frame(path)

    class EmaCross(Strategy):
        def init(self) -> None:
            close = self.data.Close
            self.short = self.I(talib.EMA, close, SHORT)
            self.long = self.I(talib.EMA, close, LONG)

        def next(self) -> None:
            if crossover(self.short, self.long):
                self.buy(size=round(QUANTITY / 1e-8))
            elif crossover(self.long, self.short) and self.position:
                self.sell(size=min(round(QUANTITY / 1e-8), self.position.size))

    runs = []
    for _ in range(repeat):
        with Clock() as clock:
            backtest = FractionalBacktest(
                frame, EmaCross, cash=CASH, commission=FEE, fractional_unit=1e-8
            )
            stats = backtest.run()
        runs.append(clock)
    return {
        "candles": len(frame),
        "load_wall": load.wall,
        "load_cpu": load.cpu,
        **best(runs),
        "trades": int(stats["# Trades"]),
        "final_equity": float(stats["Equity Final [$]"]),
    }


def child_backtrader(path: Path, repeat: int) -> dict[str, Any]:
    import backtrader as bt

    with Clock() as load:
        frame = read_frame(path)

    class EmaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            short = bt.indicators.EMA(self.data.close, period=SHORT)
            long = bt.indicators.EMA(self.data.close, period=LONG)
            self.cross = bt.indicators.CrossOver(short, long)

        def next(self) -> None:
            if self.cross[0] > 0:
                self.buy(size=QUANTITY)
            elif self.cross[0] < 0 and self.position:
                self.sell(size=min(QUANTITY, self.position.size))

    runs = []
    for _ in range(repeat):
        with Clock() as clock:
            cerebro = bt.Cerebro(stdstats=False)
            cerebro.adddata(bt.feeds.PandasData(dataname=frame.tz_convert(None)))
            cerebro.addstrategy(EmaCross)
            cerebro.broker.setcash(CASH)
            cerebro.broker.setcommission(commission=FEE)
            cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
            [strategy] = cerebro.run()
        runs.append(clock)
    closed = strategy.analyzers.trades.get_analysis().get("total", {}).get("closed", 0)
    return {
        "candles": len(frame),
        "load_wall": load.wall,
        "load_cpu": load.cpu,
        **best(runs),
        "trades": int(closed),
        "final_equity": float(cerebro.broker.getvalue()),
    }


CHILDREN = {"ours": child_ours, "backtesting.py": child_backtesting, "backtrader": child_backtrader}


def run_child(engine: str, path: Path, repeat: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", engine, "--path", str(path)]
    command += ["--repeat", str(repeat)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} on {path.name} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=ENGINES)
    parser.add_argument("--path", type=Path)
    args = parser.parse_args()
    if args.child:
        result = CHILDREN[args.child](args.path, args.repeat)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    print(
        "| file | engine | candles | candles/CPU-s, load excluded | candles/CPU-s, load included "
        "| candles/s wall, load excluded | peak RSS (MB) | trades | final equity |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.files:
        path = DATA / name
        results = {engine: run_child(engine, path, args.repeat) for engine in ENGINES}
        for engine, r in results.items():
            n = r["candles"]
            print(
                f"| {name} | {engine} | {n:,} | {n / r['run_cpu']:,.0f} "
                f"| {n / (r['run_cpu'] + r['load_cpu']):,.0f} | {n / r['run_wall']:,.0f} "
                f"| {r['peak_rss_mb']:,.0f} | {r['trades']} | {r['final_equity']:,.2f} |"
            )
        ours = results["ours"]
        for peer in ENGINES[1:]:
            other = results[peer]
            excluded = other["run_cpu"] / ours["run_cpu"]
            included = (other["run_cpu"] + other["load_cpu"]) / (ours["run_cpu"] + ours["load_cpu"])
            wall = other["run_wall"] / ours["run_wall"]
            print(
                f"| {name} | ours ÷ {peer} | | {excluded:.1f}× | {included:.1f}× "
                f"| {wall:.1f}× | | | |"
            )


if __name__ == "__main__":
    main()
