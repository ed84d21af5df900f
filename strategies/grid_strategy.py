"""Grid trading: buy as the price falls through grid levels, sell as it rises through them.

Levels: grid_count prices evenly spaced from lower_price to upper_price, both included
(computed in Decimal).

Rules, on consecutive candles (previous close p, this close c), at most one signal a candle:
- BUY when c crossed down through one or more levels: some level L with c < L ≤ p;
- SELL when c crossed up through one or more levels: some level L with p ≤ L < c.
A close landing exactly on a level has not gone through it yet; it does when the next close
is on the far side. Outside the grid nothing is crossed. warmup_period = 1.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
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
        self._prev: float | None = None

    def _step(self, candle: Candle) -> Decision | None:
        close = float(candle.close)
        prev = self._prev
        self._prev = close
        if prev is None or close == prev:
            return None
        levels = self._levels
        if close < prev:
            crossed = bisect_right(levels, prev) - bisect_right(levels, close)
            if crossed:
                return Side.BUY, f"close crossed down through {crossed} grid level(s)"
        else:
            crossed = bisect_left(levels, close) - bisect_left(levels, prev)
            if crossed:
                return Side.SELL, f"close crossed up through {crossed} grid level(s)"
        return None
