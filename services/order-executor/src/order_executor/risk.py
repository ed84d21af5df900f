"""Risk rules, one implementation for the live order executor and the backtester.

Pure code: no IO, no clock. The caller passes the time, prices and portfolio value it knows,
and persists `RiskManager.state` (a JSON-friendly dict via `RiskState.to_dict`) if it must
survive a restart.

Rules (a limit of 0 disables its rule):
- max position size: one symbol's position may reach at most `max_position_size` × portfolio
  value; a BUY that would exceed it is reduced to fit, or rejected when nothing fits.
- stop loss: a position whose price is `stop_loss_pct` percent or more below its average entry
  price is to be sold in full; the caller checks it on every candle.
- daily loss limit: once the UTC day's loss — realized plus unrealized, i.e. the fall of the
  portfolio value since the day began — reaches `daily_loss_limit_pct` percent of the value at
  the day's start, no BUY passes for the rest of that UTC day. SELLs always pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from typing import Any

from shared.fill_model import QUANTITY_STEP
from shared.models import Side

HUNDRED = Decimal(100)


class RiskReason(StrEnum):
    """The `reason` label of `risk_rejections_total`."""

    MAX_POSITION_SIZE = "max_position_size"
    DAILY_LOSS_LIMIT = "daily_loss_limit"


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The three limits; 0 disables a rule. Percentages are in percent (5 = 5 %)."""

    max_position_size: Decimal = Decimal(0)
    stop_loss_pct: Decimal = Decimal(0)
    daily_loss_limit_pct: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if not Decimal(0) <= self.max_position_size <= 1:
            raise ValueError(f"max position size {self.max_position_size} must be in [0, 1]")
        for name in ("stop_loss_pct", "daily_loss_limit_pct"):
            value = getattr(self, name)
            if not Decimal(0) <= value <= HUNDRED:
                raise ValueError(f"{name} {value} must be a percentage in [0, 100]")

    @classmethod
    def disabled(cls) -> RiskLimits:
        """Every rule off (`--no-risk`)."""
        return cls()

    @classmethod
    def from_settings(cls, settings: Any) -> RiskLimits:
        """The limits of a `shared.config.Settings` (its RISK_* variables)."""
        return cls(
            max_position_size=Decimal(settings.risk_max_position_size),
            stop_loss_pct=Decimal(settings.risk_stop_loss_pct),
            daily_loss_limit_pct=Decimal(settings.risk_daily_loss_limit_pct),
        )

    def as_dict(self) -> dict[str, str]:
        """Decimal strings, for manifests and logs."""
        return {
            "max_position_size": str(self.max_position_size),
            "stop_loss_pct": str(self.stop_loss_pct),
            "daily_loss_limit_pct": str(self.daily_loss_limit_pct),
        }


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """The outcome of one order check.

    `quantity` is what may be traded (0 when rejected). `reason` names the rule that reduced or
    rejected the order, or is None when it passed untouched.
    """

    quantity: Decimal
    reason: RiskReason | None = None

    @property
    def approved(self) -> bool:
        return self.quantity > 0

    @property
    def reduced(self) -> bool:
        return self.reason is not None and self.quantity > 0


@dataclass(slots=True)
class RiskState:
    """What the rules remember between calls: the current UTC day and its starting value."""

    day: date | None = None
    day_start_value: Decimal | None = None
    last_value: Decimal | None = None
    buys_halted: bool = False
    rejections: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (Decimals as strings, the day as ISO date)."""
        return {
            "day": self.day.isoformat() if self.day else None,
            "day_start_value": _str_or_none(self.day_start_value),
            "last_value": _str_or_none(self.last_value),
            "buys_halted": self.buys_halted,
            "rejections": dict(sorted(self.rejections.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RiskState:
        """The inverse of `to_dict`."""
        return cls(
            day=date.fromisoformat(data["day"]) if data.get("day") else None,
            day_start_value=_decimal_or_none(data.get("day_start_value")),
            last_value=_decimal_or_none(data.get("last_value")),
            buys_halted=bool(data.get("buys_halted", False)),
            rejections={str(k): int(v) for k, v in (data.get("rejections") or {}).items()},
        )


class RiskManager:
    """Applies `RiskLimits` to orders; its `state` is all it remembers."""

    def __init__(self, limits: RiskLimits, state: RiskState | None = None) -> None:
        self.limits = limits
        self.state = state if state is not None else RiskState()

    def reset(self) -> None:
        """Forget the day and the counts (a new backtest run)."""
        self.state = RiskState()

    def observe_portfolio_value(self, time: datetime, value: Decimal) -> None:
        """Record the portfolio value at `time` (UTC); rolls the day and applies the daily limit.

        The day's starting value is the last value seen before the day began (or the first value
        of the day when there is none), so a loss made in the day's first candle counts.
        """
        state = self.state
        today = time.date()
        if state.day != today:
            state.day = today
            state.day_start_value = state.last_value if state.last_value is not None else value
            state.buys_halted = False
        state.last_value = value
        limit = self.limits.daily_loss_limit_pct
        start = state.day_start_value
        if (
            limit > 0
            and start is not None
            and start > 0
            and (start - value) * HUNDRED >= limit * start
        ):
            state.buys_halted = True

    def check_order(
        self,
        side: Side,
        quantity: Decimal,
        price: Decimal,
        *,
        position_quantity: Decimal,
        portfolio_value: Decimal,
    ) -> RiskDecision:
        """Check one order of `quantity` at about `price`, given the symbol's current position
        and the whole portfolio's value; counts every rejection or reduction by reason."""
        if side is Side.SELL or quantity <= 0:
            return RiskDecision(quantity)
        if self.state.buys_halted:
            return self._count(RiskDecision(Decimal(0), RiskReason.DAILY_LOSS_LIMIT))
        max_fraction = self.limits.max_position_size
        if max_fraction > 0:
            room = max_fraction * portfolio_value - position_quantity * price
            allowed = Decimal(0)
            if price > 0 and room > 0:
                allowed = (room / price).quantize(QUANTITY_STEP, ROUND_DOWN)
            if allowed <= 0:
                return self._count(RiskDecision(Decimal(0), RiskReason.MAX_POSITION_SIZE))
            if allowed < quantity:
                return self._count(RiskDecision(allowed, RiskReason.MAX_POSITION_SIZE))
        return RiskDecision(quantity)

    def stop_loss_triggered(
        self, *, position_quantity: Decimal, avg_entry_price: Decimal, price: Decimal
    ) -> bool:
        """True when a held position has fallen `stop_loss_pct` percent below its entry."""
        pct = self.limits.stop_loss_pct
        if pct <= 0 or position_quantity <= 0 or avg_entry_price <= 0:
            return False
        return (avg_entry_price - price) * HUNDRED >= pct * avg_entry_price

    def _count(self, decision: RiskDecision) -> RiskDecision:
        assert decision.reason is not None
        key = decision.reason.value
        self.state.rejections[key] = self.state.rejections.get(key, 0) + 1
        return decision


def _str_or_none(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal_or_none(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))
