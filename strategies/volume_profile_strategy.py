"""Volume profile: trade rebounds off the value area's edges.

Indicator (`shared.indicators.VolumeProfile`): the volume of the last lookback_period
candles *before* this one, distributed over num_bins equal price bins between their lowest
low and highest high, each candle's volume in the bin of its typical price (high + low +
close) / 3; POC = the fullest bin; the value area grows from the POC towards the larger
neighbouring bin until it holds value_area_pct of the volume; VAL and VAH are its low and
high edges.

Rules, on each candle against the profile of the candles before it:
- BUY when the candle's low reaches VAL or below and it closes above VAL (support held);
- SELL when its high reaches VAH or above and it closes below VAH (resistance held);
- a candle that does both (spans the whole value area) is ambiguous and fires nothing;
- no profile, so no signal, while the window has no volume or no price range.
A close exactly on VAL or VAH is neither above nor below it. warmup_period = lookback_period.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from shared.indicators import VolumeProfile
from shared.models import Candle, Side
from shared.strategy import BaseStrategy, Decision, StrategyParams

_BUY: Decision = (Side.BUY, "bounced off the value area low")
_SELL: Decision = (Side.SELL, "rejected at the value area high")


class VolumeProfileParams(StrategyParams):
    lookback_period: int = Field(default=100, ge=2, description="candles in the profile")
    num_bins: int = Field(default=50, ge=2, description="price bins")
    value_area_pct: float = Field(
        default=0.7, gt=0, le=1, description="share of volume in the value area"
    )


class VolumeProfileStrategy(BaseStrategy):
    """Rebounds off the value area low/high (see the module docstring)."""

    name: ClassVar[str] = "volume_profile"
    params_model: ClassVar[type[StrategyParams]] = VolumeProfileParams

    @property
    def warmup_period(self) -> int:
        p = self.params
        assert isinstance(p, VolumeProfileParams)
        return p.lookback_period

    def _reset_state(self) -> None:
        p = self.params
        assert isinstance(p, VolumeProfileParams)
        self._profile = VolumeProfile(p.lookback_period, p.num_bins, p.value_area_pct)

    def _step(self, candle: Candle) -> Decision | None:
        high = float(candle.high)
        low = float(candle.low)
        close = float(candle.close)
        profile = self._profile
        decision: Decision | None = None
        if profile.full:
            # None too when the value area strictly contains the candle's range (VAL < low,
            # high < VAH): neither rule can fire then, and most of the walk is skipped.
            area = profile.value_area()
            if area is not None:
                val, vah, _ = area
                buy = low <= val < close
                sell = close < vah <= high
                if buy != sell:
                    decision = _BUY if buy else _SELL
        profile.push(high, low, (high + low + close) / 3.0, float(candle.volume))
        return decision
