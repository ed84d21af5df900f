"""EMA crossover: golden and death crosses of a short and a long EMA.

Indicators: EMA(short_period) and EMA(long_period), each seeded with the SMA of its first
inputs as TA-Lib's EMA.

Rules, edge-triggered on consecutive candles, once both EMAs are defined:
- BUY when the short EMA goes from ≤ the long EMA to > it (golden cross);
- SELL when it goes from ≥ the long EMA to < it (death cross).
Equal EMAs (flat prices) never fire. warmup_period = long_period.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from shared.indicators import EmaSpread
from shared.models import Candle, Side
from shared.strategy import BaseStrategy, Decision, StrategyParams

_BUY: Decision = (Side.BUY, "short EMA crossed above the long EMA")
_SELL: Decision = (Side.SELL, "short EMA crossed below the long EMA")


class EmaCrossoverParams(StrategyParams):
    short_period: int = Field(default=9, ge=1, description="short EMA period")
    long_period: int = Field(default=21, ge=2, description="long EMA period")

    @model_validator(mode="after")
    def _short_below_long(self) -> EmaCrossoverParams:
        if self.short_period >= self.long_period:
            raise ValueError(
                f"short_period ({self.short_period}) must be less than "
                f"long_period ({self.long_period})"
            )
        return self


class EmaCrossoverStrategy(BaseStrategy):
    """Short/long EMA crosses (see the module docstring)."""

    name: ClassVar[str] = "ema_crossover"
    params_model: ClassVar[type[StrategyParams]] = EmaCrossoverParams

    @property
    def warmup_period(self) -> int:
        p = self.params
        assert isinstance(p, EmaCrossoverParams)
        return p.long_period

    def _reset_state(self) -> None:
        p = self.params
        assert isinstance(p, EmaCrossoverParams)
        self._spread = EmaSpread(p.short_period, p.long_period)
        self._prev: float | None = None

    def _step(self, candle: Candle) -> Decision | None:
        diff = self._spread.update(float(candle.close))
        if diff is None:
            return None
        prev = self._prev
        self._prev = diff
        if prev is None:
            return None
        if diff > 0.0 >= prev:
            return _BUY
        if diff < 0.0 <= prev:
            return _SELL
        return None
