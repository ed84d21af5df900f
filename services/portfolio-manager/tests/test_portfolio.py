"""The portfolio's pure accounting: hand-computed cases and parity with the backtester."""

from __future__ import annotations

import csv
import gzip
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from backtester.engine import BacktestConfig, BacktestEngine
from portfolio_manager.portfolio import Portfolio
from shared.models import Candle, Side, Trade

from strategies.ema_crossover_strategy import EmaCrossoverStrategy

T0 = datetime(2024, 1, 1, tzinfo=UTC)
D = Decimal


def trade(
    n: int, side: Side, quantity: str, price: str, fee: str, symbol: str = "BTCUSDT"
) -> Trade:
    return Trade(
        trade_id=f"t{n}",
        client_order_id=f"o{n}",
        symbol=symbol,
        side=side,
        quantity=D(quantity),
        price=D(price),
        fee=D(fee),
        fee_asset="USDT",
        time=T0 + timedelta(minutes=n),
    )


def test_fifo_fills_give_the_hand_computed_position_and_pnl() -> None:
    portfolio = Portfolio(D(10000))
    portfolio.apply(trade(1, Side.BUY, "1", "100", "0.1"))
    portfolio.apply(trade(2, Side.BUY, "1", "200", "0.2"))
    portfolio.apply(trade(3, Side.SELL, "1.5", "300", "0.45"))
    portfolio.mark("BTCUSDT", D(250), T0 + timedelta(minutes=4))

    (position,) = portfolio.positions()
    # Lot 1 closes whole: 300 - 100 - 0.1 entry fee - 0.45 * 1/1.5 exit fee = 199.6;
    # half of lot 2: 150 - 100 - 0.2 * 0.5 - 0.45 * 0.5/1.5 = 49.75.
    assert position.realized_pnl == D("249.35")
    assert position.quantity == D("0.5")
    assert position.avg_entry_price == D(200)  # FIFO: only lot 2 is left
    # 0.5 * 250 - 0.5 * 200 - the remaining half of lot 2's fee (0.1)
    assert position.unrealized_pnl == D("24.9")
    assert position.fees_paid == D("0.75")
    assert position.last_price == D(250)
    assert portfolio.cash == D(10000) - D("100.1") - D("200.2") + D(450) - D("0.45")
    snapshot = portfolio.snapshot(T0)
    assert snapshot.positions_value == D(125)
    assert snapshot.total_value == D("10274.25")
    assert snapshot.total_value - D(10000) == snapshot.realized_pnl + snapshot.unrealized_pnl


def test_a_trade_booked_twice_changes_nothing() -> None:
    portfolio = Portfolio(D(10000))
    first = trade(1, Side.BUY, "0.5", "100", "0.05")
    assert portfolio.apply(first)
    before = (portfolio.cash, portfolio.positions())
    assert not portfolio.apply(first)
    assert (portfolio.cash, portfolio.positions()) == before


def test_symbols_are_booked_apart() -> None:
    portfolio = Portfolio(D(1000))
    portfolio.apply(trade(1, Side.BUY, "1", "100", "0", symbol="BTCUSDT"))
    portfolio.apply(trade(2, Side.BUY, "2", "10", "0", symbol="ETHUSDT"))
    portfolio.apply(trade(3, Side.SELL, "2", "12", "0", symbol="ETHUSDT"))
    btc, eth = portfolio.positions()
    assert (btc.quantity, btc.realized_pnl) == (D(1), D(0))
    assert (eth.quantity, eth.realized_pnl) == (D(0), D(4))
    assert portfolio.cash == D(1000) - 100 - 20 + 24


def read_candles(path: Path, count: int) -> list[Candle]:
    with gzip.open(path, "rt", newline="") as handle:
        return [
            Candle(
                symbol="BTCUSDT",
                interval="1m",
                open_time=datetime.fromtimestamp(int(row["open_time"]) / 1000, UTC),
                open=D(row["open"]),
                high=D(row["high"]),
                low=D(row["low"]),
                close=D(row["close"]),
                volume=D(row["volume"]),
            )
            for row in itertools.islice(csv.DictReader(handle), count)
        ]


def test_the_backtesters_fills_give_the_backtesters_pnl_and_final_value(
    shared_data: Path,
) -> None:
    candles = read_candles(shared_data / "BTCUSDT-1m.csv.gz", 2000)
    strategy = EmaCrossoverStrategy({"short_period": 5, "long_period": 13, "quantity": "0.05"})
    engine = BacktestEngine(
        strategy, BacktestConfig("BTCUSDT", "1m", slippage=D("0.0005"), fee=D("0.001"))
    )
    result = engine.run(candles)
    fills = engine.simulator.fills
    assert len(result.trades) >= 10

    portfolio = Portfolio(D(10000))
    for n, (time, fill) in enumerate(fills):
        portfolio.apply(
            Trade(
                trade_id=str(n),
                client_order_id=f"o{n}",
                symbol="BTCUSDT",
                side=fill.side,
                quantity=fill.quantity,
                price=fill.price,
                fee=fill.fee,
                time=time,
            )
        )
    last = candles[-1]
    portfolio.mark("BTCUSDT", last.close, last.open_time + timedelta(minutes=1))

    (position,) = portfolio.positions()
    assert portfolio.cash == engine.simulator.cash
    assert portfolio.total_value == result.final_equity
    assert position.realized_pnl == sum((t.pnl for t in result.trades), D(0))
    assert position.fees_paid == result.fees_paid
    held = result.open_position
    if held is None:
        assert position.quantity == 0
    else:
        assert position.quantity == held.quantity
        assert position.avg_entry_price == held.avg_entry_price
        assert position.unrealized_pnl == held.unrealized_pnl
