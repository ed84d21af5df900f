"""The backtest loop: candles → strategy → risk rules → fill model → simulator → metrics.

No look-ahead: a signal of candle t (and a stop loss seen at t's close) is an order that fills
at the open of candle t + 1; an order still pending after the last candle is not filled and is
counted. Warm-up candles before the start are fed to the strategy without trading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from order_executor.risk import RiskLimits, RiskManager
from shared.fill_model import BINANCE_SPOT_TAKER_FEE, FillModel
from shared.gc_pause import no_cyclic_gc
from shared.models import Candle, Side, interval_delta
from shared.strategy import BaseStrategy

from backtester.equity import EquityCurve
from backtester.metrics import DetailedMetrics, compute_metrics
from backtester.simulator import OpenPosition, Simulator, TradeRecord

DEFAULT_INITIAL_BALANCE = Decimal(10000)
PROGRESS_EVERY = 2048


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """How to simulate: the market, the money, the fill model's terms and the risk limits."""

    symbol: str
    interval: str
    initial_balance: Decimal = DEFAULT_INITIAL_BALANCE
    fee: Decimal = BINANCE_SPOT_TAKER_FEE
    slippage: Decimal = Decimal(0)
    risk: RiskLimits = field(default_factory=RiskLimits.disabled)


@dataclass(frozen=True, slots=True)
class ExecutionCounts:
    """What happened to the orders besides the fills."""

    signals: int
    buys_reduced_by_cash: int
    buys_skipped_no_cash: int
    sells_with_nothing_held: int
    stop_losses: int
    risk_rejections: dict[str, int]
    unfilled_at_end: int


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Everything a run produced."""

    config: BacktestConfig
    strategy: str
    params: dict[str, object]
    start: datetime
    end: datetime
    candles: int
    warmup_candles: int
    final_equity: Decimal
    fees_paid: Decimal
    metrics: DetailedMetrics
    equity_curve: EquityCurve
    open_position: OpenPosition | None
    counts: ExecutionCounts

    @property
    def trades(self) -> list[TradeRecord]:
        return self.metrics.trades


class BacktestEngine:
    """Runs one strategy instance over candles; `reset()` (done by `run`) between runs."""

    def __init__(self, strategy: BaseStrategy, config: BacktestConfig) -> None:
        self.strategy = strategy
        self.config = config
        self.fill_model = FillModel(fee_rate=config.fee, slippage=config.slippage)
        self.simulator = Simulator(config.symbol, config.initial_balance, self.fill_model)
        self.risk = RiskManager(config.risk)

    def reset(self) -> None:
        """Fresh strategy state, account and risk state."""
        self.strategy.reset()
        self.simulator.reset()
        self.risk.reset()

    def run(
        self,
        candles: Sequence[Candle],
        warmup: Sequence[Candle] = (),
        progress: Callable[[int], None] | None = None,
    ) -> BacktestResult:
        """Simulate over `candles` (sorted, one symbol and interval) after feeding `warmup`.

        `progress(n)` is called with the number of candles done every few thousand candles.
        """
        if not candles:
            raise ValueError("no candles to backtest")
        self.reset()
        strategy, sim, risk = self.strategy, self.simulator, self.risk
        for candle in warmup:
            strategy.on_candle(candle)

        limits = self.config.risk
        risk_on = limits != RiskLimits.disabled()
        stop_loss_on = limits.stop_loss_pct > 0
        equities: list[Decimal] = []  # after each candle's close (see EquityCurve)
        pending: list[tuple[Side, Decimal]] = []
        signals = stop_losses = 0
        # Hot loop: the account is read into locals and refreshed only after a fill, and
        # progress is reported between chunks rather than tested on every candle.
        cash, held = sim.cash, sim.position_quantity
        on_candle = strategy.on_candle
        append = equities.append
        total = len(candles)
        # The loop makes a few short-lived objects a candle and no reference cycles; the
        # cycle collector those allocations set off would walk every candle model (~8 %).
        # A plugin strategy that did make cycles would only hold them until the run ends.
        with no_cyclic_gc():
            for chunk_start in range(0, total, PROGRESS_EVERY):
                for candle in candles[chunk_start : chunk_start + PROGRESS_EVERY]:
                    if pending:
                        time, price = candle.open_time, candle.open
                        for side, quantity in pending:
                            if side is Side.BUY:
                                sim.buy(time, quantity, price)
                            else:
                                sim.sell(time, quantity, price)
                        pending.clear()
                        cash, held = sim.cash, sim.position_quantity
                    # (a pydantic attribute read costs about as much as a Decimal add: the
                    # close is read where it is needed)
                    equity = cash + held * candle.close if held else cash
                    append(equity)
                    stopping = False
                    if risk_on:
                        risk.observe_portfolio_value(candle.close_time, equity)
                        if (
                            stop_loss_on
                            and held
                            and risk.stop_loss_triggered(
                                position_quantity=held,
                                avg_entry_price=sim.avg_entry_price,
                                price=candle.close,
                            )
                        ):
                            pending.append((Side.SELL, held))
                            stop_losses += 1
                            stopping = True
                    signal = on_candle(candle)
                    if signal is not None:
                        signals += 1
                        quantity = signal.quantity
                        if signal.side is Side.BUY and risk_on:
                            quantity = risk.check_order(
                                Side.BUY,
                                quantity,
                                candle.close,
                                position_quantity=held,
                                portfolio_value=equity,
                            ).quantity
                        # The stop loss already sells everything held at the next open.
                        if quantity > 0 and not (stopping and signal.side is Side.SELL):
                            pending.append((signal.side, quantity))
                if progress is not None:
                    progress(min(chunk_start + PROGRESS_EVERY, total))

        last = candles[-1]
        step = interval_delta(self.config.interval)
        span: timedelta = last.open_time + step - candles[0].open_time
        curve = EquityCurve(candles, equities)
        metrics = compute_metrics(sim.trades, curve, self.config.initial_balance, span)
        return BacktestResult(
            config=self.config,
            strategy=strategy.name,
            params=strategy.params.model_dump(mode="json"),
            start=candles[0].open_time,
            end=last.open_time + step,
            candles=len(candles),
            warmup_candles=len(warmup),
            final_equity=equities[-1],
            fees_paid=sim.fees_paid,
            metrics=metrics,
            equity_curve=curve,
            open_position=sim.open_position(last.close),
            counts=ExecutionCounts(
                signals=signals,
                buys_reduced_by_cash=sim.buys_reduced,
                buys_skipped_no_cash=sim.buys_skipped,
                sells_with_nothing_held=sim.sells_ignored,
                stop_losses=stop_losses,
                risk_rejections=dict(sorted(risk.state.rejections.items())),
                unfilled_at_end=len(pending),
            ),
        )
