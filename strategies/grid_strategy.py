"""Grid trading: buy as the price falls through grid levels, sell as it rises through them.

Levels: grid_count prices evenly spaced from lower_price to upper_price, both included
(computed in Decimal).

The close's zone is the number of levels below it; a close exactly on a level stays in the
zone it came from (it has reached the level, not gone through it; a first close on a level
counts as above the levels below it only). Rules, on consecutive candles, at most one signal
a candle:
- BUY when the zone falls: the close went down through one or more levels since the last
  candle;
- SELL when the zone rises: it went up through one or more levels.
So 107 → 105 → 107 around a level at 105 fires nothing, and 107 → 105 → 104 buys on 104.
Moves outside the grid cross nothing; a jump from above it to below crosses every level.
warmup_period = 1.
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal
from typing import ClassVar

from pydantic import Field, model_validator
from shared.models import Candle, Side
from shared.strategy import BaseStrategy, Decision, StrategyParams


class GridParams(StrategyParams):
    lower_price: Decimal = Field(default=Decimal("25000"), gt=0, description="lowest level")
    upper_price: Decimal = Field(default=Decimal("35000"), gt=0, description="highest level")
    grid_count: int = Field(default=11, ge=2, description="number of levels")

    @model_validator(mode="after")
    def _range_ordered(self) -> GridParams:
        if self.lower_price >= self.upper_price:
            raise ValueError(
                f"lower_price ({self.lower_price}) must be less than "
                f"upper_price ({self.upper_price})"
            )
        return self

    def levels(self) -> list[Decimal]:
        """The grid's price levels, lowest first."""
        step = (self.upper_price - self.lower_price) / (self.grid_count - 1)
        inner = [self.lower_price + step * i for i in range(1, self.grid_count - 1)]
        return [self.lower_price, *inner, self.upper_price]


class GridStrategy(BaseStrategy):
    """Grid level crossings (see the module docstring)."""

    name: ClassVar[str] = "grid"
    params_model: ClassVar[type[StrategyParams]] = GridParams

    @property
    def warmup_period(self) -> int:
        return 1

    def _reset_state(self) -> None:
        p = self.params
        assert isinstance(p, GridParams)
        self._levels = [float(level) for level in p.levels()]
        self._zone: int | None = None

    def _step(self, candle: Candle) -> Decision | None:
        close = float(candle.close)
        levels = self._levels
        zone = bisect_left(levels, close)  # levels strictly below the close
        prev = self._zone
        # On a level: still on the side it came from until a close passes it.
        if zone < len(levels) and levels[zone] == close and prev is not None and prev > zone:
            zone += 1
        self._zone = zone
        if prev is None or zone == prev:
            return None
        if zone < prev:
            return Side.BUY, f"close crossed down through {prev - zone} grid level(s)"
        return Side.SELL, f"close crossed up through {zone - prev} grid level(s)"
