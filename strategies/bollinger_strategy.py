"""Bollinger Bands reversion: trade when a close returns inside a band it had left.

Indicators (TA-Lib's BBANDS): middle = SMA(period), upper/lower = middle ± num_std ×
population standard deviation of the last `period` closes (this close included).

Rules, on consecutive candles, each close against the bands of its own candle:
- BUY when the previous close was below its lower band and this close is at or above this
  candle's lower band;
- SELL when the previous close was above its upper band and this close is at or below this
  candle's upper band;
- no signal while this candle's bandwidth (upper − lower) / middle < min_bandwidth
  (a quiet, ranging market). A close exactly on a band is not outside it.
warmup_period = period.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from shared.indicators import BollingerBands
from shared.models import Candle, Side
from shared.strategy import BaseStrategy, Decision, StrategyParams

_BUY: Decision = (Side.BUY, "close returned above the lower Bollinger band")
_SELL: Decision = (Side.SELL, "close returned below the upper Bollinger band")


class BollingerParams(StrategyParams):
    period: int = Field(default=20, ge=2, description="SMA and deviation window")
    num_std: float = Field(default=2.0, gt=0, description="band width in standard deviations")
    min_bandwidth: float = Field(
        default=0.02, ge=0, description="no signal below this (upper − lower) / middle"
    )


class BollingerStrategy(BaseStrategy):
    """Closes returning inside the Bollinger Bands (see the module docstring)."""

    name: ClassVar[str] = "bollinger"
    params_model: ClassVar[type[StrategyParams]] = BollingerParams

    @property
    def warmup_period(self) -> int:
        p = self.params
        assert isinstance(p, BollingerParams)
        return p.period

    def _reset_state(self) -> None:
        p = self.params
        assert isinstance(p, BollingerParams)
        self._bands = BollingerBands(p.period, p.num_std)
        self._min_bandwidth = p.min_bandwidth
        self._zone = 0  # -1: last close below the lower band, 1: above the upper, 0: inside

    def _step(self, candle: Candle) -> Decision | None:
        close = float(candle.close)
        bands = self._bands
        middle = bands.update(close)
        if middle is None:
            return None
        lower: float = bands.lower  # type: ignore[assignment]
        upper: float = bands.upper  # type: ignore[assignment]
        zone = -1 if close < lower else (1 if close > upper else 0)
        prev = self._zone
        self._zone = zone
        if prev == 0 or zone == prev:
            return None  # nearly every candle: nothing left a band, nothing came back
        if middle <= 0.0 or (upper - lower) / middle < self._min_bandwidth:
            return None
        # was below and now at or above the lower band, or was above and now at or below
        return _BUY if prev < 0 else _SELL
