"""Fixtures of the backtester tests: a scripted strategy and a candle factory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import ClassVar

import pytest
from shared.models import Candle, Side
from shared.strategy import BaseStrategy, Decision, StrategyParams

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class ScriptedParams(StrategyParams):
    buys: tuple[int, ...] = ()
    sells: tuple[int, ...] = ()
    warmup: int = 0


class ScriptedStrategy(BaseStrategy):
    """BUY on the candles numbered in `buys`, SELL on those in `sells` (1 = the first seen)."""

    name: ClassVar[str] = "scripted"
    params_model: ClassVar[type[StrategyParams]] = ScriptedParams

    @property
    def warmup_period(self) -> int:
        p = self.params
        assert isinstance(p, ScriptedParams)
        return p.warmup

    def _reset_state(self) -> None:
        self.seen_closes: list[Decimal] = []

    def _step(self, candle: Candle) -> Decision | None:
        p = self.params
        assert isinstance(p, ScriptedParams)
        self.seen_closes.append(candle.close)
        number = len(self.seen_closes)
        if number in p.buys:
            return (Side.BUY, "scripted buy")
        if number in p.sells:
            return (Side.SELL, "scripted sell")
        return None


def candles(
    prices: list[tuple[str, str]],
    start: datetime = T0,
    step: timedelta = timedelta(hours=1),
    symbol: str = "BTCUSDT",
    interval: str = "1h",
) -> list[Candle]:
    """Candles (hourly unless told) from (open, close) pairs."""
    out = []
    for i, (open_, close) in enumerate(prices):
        o, c = Decimal(open_), Decimal(close)
        out.append(
            Candle(
                symbol=symbol,
                interval=interval,
                open_time=start + i * step,
                open=o,
                high=max(o, c),
                low=min(o, c),
                close=c,
                volume=Decimal(1),
            )
        )
    return out


@pytest.fixture
def scripted() -> type[ScriptedStrategy]:
    return ScriptedStrategy


@pytest.fixture
def make_candles() -> Callable[..., list[Candle]]:
    return candles
