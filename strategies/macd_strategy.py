"""MACD crossover: trade when the histogram changes sign.

Indicators (TA-Lib's MACD, see `shared.indicators.Macd`): MACD = EMA(fast) − EMA(slow),
signal line = EMA(signal_period) of MACD, histogram = MACD − signal line.

Rules, edge-triggered on consecutive candles:
- BUY when the histogram goes from ≤ 0 to > 0 (MACD crosses above its signal line);
- SELL when it goes from ≥ 0 to < 0 (MACD crosses below its signal line).
A histogram that stays at 0 (flat prices) never fires. warmup_period = slow + signal.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from shared.indicators import Macd
from shared.models import Candle, Side
from shared.strategy import BaseStrategy, Decision, StrategyParams

_BUY: Decision = (Side.BUY, "MACD crossed above its signal line")
_SELL: Decision = (Side.SELL, "MACD crossed below its signal line")


class MacdParams(StrategyParams):
    fast_period: int = Field(default=12, ge=1, description="fast EMA period")
    slow_period: int = Field(default=26, ge=2, description="slow EMA period")
    signal_period: int = Field(default=9, ge=1, description="signal line EMA period")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> MacdParams:
        if self.fast_period >= self.slow_period:
            raise ValueError(
                f"fast_period ({self.fast_period}) must be less than "
                f"slow_period ({self.slow_period})"
            )
        return self


class MacdStrategy(BaseStrategy):
    """MACD histogram sign changes (see the module docstring)."""

    name: ClassVar[str] = "macd"
    params_model: ClassVar[type[StrategyParams]] = MacdParams

    @property
    def warmup_period(self) -> int:
        p = self.params
        assert isinstance(p, MacdParams)
        return p.slow_period + p.signal_period

    def _reset_state(self) -> None:
        p = self.params
        assert isinstance(p, MacdParams)
        self._macd = Macd(p.fast_period, p.slow_period, p.signal_period)
        self._prev: float | None = None

    def _step(self, candle: Candle) -> Decision | None:
        histogram = self._macd.update(float(candle.close))
        prev = self._prev
        self._prev = histogram
        if prev is None or histogram is None:
            return None
        if histogram > 0.0 >= prev:
            return _BUY
        if histogram < 0.0 <= prev:
            return _SELL
        return None
