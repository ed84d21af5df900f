"""RSI mean reversion: trade when RSI leaves the oversold or overbought zone.

Indicator: Wilder's RSI(period) as TA-Lib's (see `shared.indicators.Rsi`).

Rules, edge-triggered on consecutive candles:
- BUY when RSI goes from < oversold to ≥ oversold (leaving the oversold zone);
- SELL when RSI goes from > overbought to ≤ overbought (leaving the overbought zone).
While prices do not move at all over the averaging window (average gain and loss both 0,
where TA-Lib reports RSI 0) RSI counts as undefined: nothing fires into or out of it.
warmup_period = period + 1 (RSI needs period changes, i.e. period + 1 closes).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from shared.indicators import Rsi
from shared.models import Candle, Side
from shared.strategy import BaseStrategy, Decision, StrategyParams


class RsiParams(StrategyParams):
    period: int = Field(default=14, ge=2, description="RSI period")
    oversold: float = Field(default=30.0, gt=0, lt=100, description="oversold level")
    overbought: float = Field(default=70.0, gt=0, lt=100, description="overbought level")

    @model_validator(mode="after")
    def _levels_ordered(self) -> RsiParams:
        if self.oversold >= self.overbought:
            raise ValueError(
                f"oversold ({self.oversold:g}) must be less than overbought ({self.overbought:g})"
            )
        return self


class RsiStrategy(BaseStrategy):
    """RSI leaving its oversold/overbought zones (see the module docstring)."""

    name: ClassVar[str] = "rsi"
    params_model: ClassVar[type[StrategyParams]] = RsiParams

    @property
    def warmup_period(self) -> int:
        p = self.params
        assert isinstance(p, RsiParams)
        return p.period + 1

    def _reset_state(self) -> None:
        p = self.params
        assert isinstance(p, RsiParams)
        self._rsi = Rsi(p.period)
        self._oversold = p.oversold
        self._overbought = p.overbought
        self._buy: Decision = (Side.BUY, f"RSI rose back to {p.oversold:g} from oversold")
        self._sell: Decision = (Side.SELL, f"RSI fell back to {p.overbought:g} from overbought")
        self._zone: int | None = None

    def _step(self, candle: Candle) -> Decision | None:
        rsi_ind = self._rsi
        rsi = rsi_ind.update(float(candle.close))
        if rsi is None or (rsi == 0.0 and rsi_ind.is_flat):
            self._zone = None
            return None
        # -1: oversold (< oversold), 1: overbought (> overbought), 0: between
        zone = -1 if rsi < self._oversold else (1 if rsi > self._overbought else 0)
        prev = self._zone
        self._zone = zone
        if prev is None or prev == 0 or zone == prev:
            return None
        # left oversold (now >= oversold) or left overbought (now <= overbought)
        return self._buy if prev < 0 else self._sell
