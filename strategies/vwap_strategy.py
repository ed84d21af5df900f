"""VWAP reversion: trade when a close returns to the day's VWAP band from outside it.

Indicator: VWAP = Σ(typical × volume) / Σ(volume) over the UTC day so far, this candle
included, with typical = (high + low + close) / 3; it restarts at 00:00 UTC. Around it the
band VWAP × (1 ∓ deviation_threshold).

Rules, on consecutive candles of the same UTC day, each close against its own candle's VWAP:
- BUY when the previous close was below VWAP × (1 − deviation_threshold) and this close is
  at or above this candle's VWAP × (1 − deviation_threshold);
- SELL when the previous close was above VWAP × (1 + deviation_threshold) and this close is
  at or below this candle's VWAP × (1 + deviation_threshold).
No signal while the day's cumulative volume is 0 (VWAP undefined), and none on a day's first
candle (the previous close was measured against yesterday's VWAP). warmup_period = 30.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from shared.indicators import SessionVwap
from shared.models import Candle, Side
from shared.strategy import BaseStrategy, Decision, StrategyParams

_BUY: Decision = (Side.BUY, "close returned to VWAP from below its band")
_SELL: Decision = (Side.SELL, "close returned to VWAP from above its band")
# the previous close against its own candle's band
_BELOW, _INSIDE, _ABOVE = "below", "inside", "above"


class VwapParams(StrategyParams):
    deviation_threshold: float = Field(
        default=0.002, ge=0, lt=1, description="band half-width as a fraction of VWAP"
    )


class VwapStrategy(BaseStrategy):
    """Closes returning to the session VWAP band (see the module docstring)."""

    name: ClassVar[str] = "vwap"
    params_model: ClassVar[type[StrategyParams]] = VwapParams

    @property
    def warmup_period(self) -> int:
        return 30

    def _reset_state(self) -> None:
        p = self.params
        assert isinstance(p, VwapParams)
        self._vwap = SessionVwap()
        self._low_factor = 1.0 - p.deviation_threshold
        self._high_factor = 1.0 + p.deviation_threshold
        self._side_of_band = _INSIDE  # where the previous close was against its band

    def _step(self, candle: Candle) -> Decision | None:
        close_exact = candle.close
        close = float(close_exact)
        # The three prices are summed as Decimals (exact) and converted to float once: one
        # Decimal → float conversion costs about six Decimal additions, on the hot path.
        typical = float(candle.high + candle.low + close_exact) / 3.0
        vwap_ind = self._vwap
        vwap = vwap_ind.update(candle.open_time, typical, float(candle.volume))
        previous = self._side_of_band
        if vwap is None:
            self._side_of_band = _INSIDE
            return None
        lower = vwap * self._low_factor
        upper = vwap * self._high_factor
        self._side_of_band = _BELOW if close < lower else _ABOVE if close > upper else _INSIDE
        if previous is _INSIDE or vwap_ind.session_candles == 1:
            return None
        if previous is _BELOW and close >= lower:
            return _BUY
        if previous is _ABOVE and close <= upper:
            return _SELL
        return None
