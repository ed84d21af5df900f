"""Backtest speed: our engine vs backtesting.py vs backtrader, EMA crossover on real candles.

    uv run --frozen python bench/bench_backtest.py [--files BTCUSDT-1m.csv.gz ...] [--repeat N]

Each engine runs in its own subprocess (so peak memory, ru_maxrss, is its own) on the same
file: EMA(9)/EMA(21) crossover, buy 0.01 BTC on the golden cross, close on the death cross,
0.1 % fee per side, market orders filled at the next candle's open, 10,000 USDT.
"load excluded" times the backtest alone; "load included" adds reading the file into what the
engine consumes (our `load_file_candles`; pandas.read_csv for the two peers).
Reported: candles/s (best of --repeat runs), peak RSS, and trades and final equity, which show
the three did the same work.
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

DATA = Path("/work/shared/data")
DEFAULT_FILES = ("BTCUSDT-1m.csv.gz", "BTCUSDT-15m.csv.gz")
ENGINES = ("ours", "backtesting.py", "backtrader")
SHORT, LONG, QUANTITY, FEE, CASH = 9, 21, 0.01, 0.001, 10_000


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
    started = time.perf_counter()
    data = load_file_candles(path, symbol, interval)
    load = time.perf_counter() - started
    strategy = load_strategy(
        "ema_crossover",
        [f"quantity={QUANTITY}", f"short_period={SHORT}", f"long_period={LONG}"],
    )
    engine = BacktestEngine(strategy, BacktestConfig(symbol, interval, fee=Decimal(str(FEE))))
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = engine.run(data.candles)
        runs.append(time.perf_counter() - started)
    return {
        "candles": len(data.candles),
        "load": load,
        "run": min(runs),
        "trades": result.metrics.total_trades,
        "final_equity": float(result.final_equity),
    }


def child_backtesting(path: Path, repeat: int) -> dict[str, Any]:
    import warnings

    import talib
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest, crossover

    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    frame = read_frame(path)
    load = time.perf_counter() - started

    class EmaCross(Strategy):
        def init(self) -> None:
            close = self.data.Close
            self.short = self.I(talib.EMA, close, SHORT)
            self.long = self.I(talib.EMA, close, LONG)

        def next(self) -> None:
            if crossover(self.short, self.long):
                self.buy(size=round(QUANTITY / 1e-8))
            elif crossover(self.long, self.short) and self.position:
                self.position.close()

    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        backtest = FractionalBacktest(
            frame, EmaCross, cash=CASH, commission=FEE, fractional_unit=1e-8
        )
        stats = backtest.run()
        runs.append(time.perf_counter() - started)
    return {
        "candles": len(frame),
        "load": load,
        "run": min(runs),
        "trades": int(stats["# Trades"]),
        "final_equity": float(stats["Equity Final [$]"]),
    }


def child_backtrader(path: Path, repeat: int) -> dict[str, Any]:
    import backtrader as bt

    started = time.perf_counter()
    frame = read_frame(path)
    load = time.perf_counter() - started

    class EmaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            short = bt.indicators.EMA(self.data.close, period=SHORT)
            long = bt.indicators.EMA(self.data.close, period=LONG)
            self.cross = bt.indicators.CrossOver(short, long)

        def next(self) -> None:
            if self.cross[0] > 0:
                self.buy(size=QUANTITY)
            elif self.cross[0] < 0 and self.position:
                self.close()

    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(bt.feeds.PandasData(dataname=frame.tz_convert(None)))
        cerebro.addstrategy(EmaCross)
        cerebro.broker.setcash(CASH)
        cerebro.broker.setcommission(commission=FEE)
        analyzer = cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
        del analyzer
        [strategy] = cerebro.run()
        runs.append(time.perf_counter() - started)
    closed = strategy.analyzers.trades.get_analysis().get("total", {}).get("closed", 0)
    return {
        "candles": len(frame),
        "load": load,
        "run": min(runs),
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
        "| file | engine | candles | candles/s (load excluded) | candles/s (load included) "
        "| peak RSS (MB) | trades | final equity |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.files:
        path = DATA / name
        results = {engine: run_child(engine, path, args.repeat) for engine in ENGINES}
        for engine, r in results.items():
            print(
                f"| {name} | {engine} | {r['candles']:,} | {r['candles'] / r['run']:,.0f} "
                f"| {r['candles'] / (r['run'] + r['load']):,.0f} | {r['peak_rss_mb']:,.0f} "
                f"| {r['trades']} | {r['final_equity']:,.2f} |"
            )
        ours = results["ours"]
        for peer in ENGINES[1:]:
            other = results[peer]
            print(
                f"| {name} | ours ÷ {peer} | | "
                f"{other['run'] / ours['run']:.1f}× "
                f"| {(other['run'] + other['load']) / (ours['run'] + ours['load']):.1f}× | | | |"
            )


if __name__ == "__main__":
    main()
