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

from datetime import UTC, datetime, timedelta
from typing import ClassVar

from pydantic import Field
from shared.models import Candle, Side
from shared.strategy import BaseStrategy, Decision, StrategyParams

_BUY: Decision = (Side.BUY, "close returned to VWAP from below its band")
_SELL: Decision = (Side.SELL, "close returned to VWAP from above its band")
# the previous close against its own candle's band
_BELOW, _INSIDE, _ABOVE = "below", "inside", "above"
# before any candle: every open time is at or after it, so the first candle opens a session
_NO_SESSION = datetime.min.replace(tzinfo=UTC)


class VwapParams(StrategyParams):
    deviation_threshold: float = Field(
        default=0.002, ge=0, lt=1, description="band half-width as a fraction of VWAP"
    )


class VwapStrategy(BaseStrategy):
    """Closes returning to the session VWAP band (see the module docstring).

    The session sums live here, not in an indicator object of their own, and the typical
    price's /3 is folded into the band factors: a method call and two float operations a
    candle were ~8 % of this strategy's time, most of which is three Decimal → float
    conversions (close, high + low, volume) that it cannot avoid (docs/BENCHMARKS.md).
    """

    name: ClassVar[str] = "vwap"
    params_model: ClassVar[type[StrategyParams]] = VwapParams

    @property
    def warmup_period(self) -> int:
        return 30

    @property
    def vwap(self) -> float | None:
        """The session's VWAP including the last candle taken; None while its volume is 0."""
        return self._sum_pv / self._sum_v / 3.0 if self._sum_v > 0.0 else None

    def _reset_state(self) -> None:
        p = self.params
        assert isinstance(p, VwapParams)
        self._session_end = _NO_SESSION  # 00:00 UTC after the current session's day
        # Σ (high + low + close) × volume over the session, i.e. 3 × Σ typical × volume
        self._sum_pv = 0.0
        self._sum_v = 0.0  # Σ volume over the session
        # the band's edges as multiples of Σ pv / Σ v, the /3 of the typical price folded in
        self._low_factor = (1.0 - p.deviation_threshold) / 3.0
        self._high_factor = (1.0 + p.deviation_threshold) / 3.0
        self._side_of_band = _INSIDE  # where the previous close was against its band

    def _start_session(self, open_time: datetime) -> None:
        day = open_time.astimezone(UTC).date()
        self._session_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        self._sum_pv = 0.0
        self._sum_v = 0.0
        # yesterday's band says nothing about today's: no signal on a day's first candle
        self._side_of_band = _INSIDE

    def _step(self, candle: Candle) -> Decision | None:
        close = float(candle.close)
        volume = float(candle.volume)
        if candle.open_time >= self._session_end:
            self._start_session(candle.open_time)
        sum_v = self._sum_v + volume
        if sum_v <= 0.0:  # no volume yet today: VWAP undefined (and the sums unchanged)
            self._side_of_band = _INSIDE
            return None
        self._sum_v = sum_v
        # high + low summed as Decimals (exact) and converted once: a Decimal → float
        # conversion costs about five Decimal additions, on the hot path.
        sum_pv = self._sum_pv + (float(candle.high + candle.low) + close) * volume
        self._sum_pv = sum_pv
        vwap_x3 = sum_pv / sum_v
        lower = vwap_x3 * self._low_factor
        upper = vwap_x3 * self._high_factor
        previous = self._side_of_band
        # The rules of the module docstring, branched on where this close is (most candles
        # decide with one or two comparisons).
        if close < lower:
            self._side_of_band = _BELOW
            return _SELL if previous is _ABOVE and close <= upper else None
        if close > upper:
            self._side_of_band = _ABOVE
            return _BUY if previous is _BELOW and close >= lower else None
        self._side_of_band = _INSIDE
        if previous is _BELOW:
            return _BUY
        if previous is _ABOVE:
            return _SELL
        return None
