"""The strategy contract: `BaseStrategy`, its typed parameters and deterministic signal ids.

A strategy is pure: `on_candle(candle)` reads nothing but the candle and its own state (no IO,
no clock, no globals), so the strategy engine and the backtester get the same signals from the
same candles. Parameters are a frozen pydantic model (`extra="forbid"`) that `configure`
validates against; `reset()` returns the instance to its just-configured state.

Rules every strategy shares (implemented here, once):

- **Warm-up.** A strategy never signals on its first `warmup_period` candles: the earliest
  candle that can fire is number `warmup_period + 1`. Its indicators still take those candles
  in, so after feeding `warmup_period` historical candles the strategy is ready for the next.
  A signal also needs its indicators to be defined, which each strategy checks itself.
- **Closed candles only.** A candle with `closed=False` (still forming) is ignored.
- **Redelivery.** A candle whose open time is at or before the last one taken is ignored
  (returns None, state unchanged): the bus delivers at least once, and a late candle
  cannot be fitted back into the indicators.
- **Gaps.** After a gap in candle times (an exchange outage) the indicators run on over the
  gap, as TA-Lib does over an array, but the first candle after the gap never fires: its
  "previous candle" is not the one just before it, so no crossing can be judged.
- **One series.** An instance follows one symbol and interval, fixed by its first candle;
  the caller keeps one instance per strategy, symbol and interval. A candle of another
  series raises `ValueError` when it is not later than the last one taken or when a rule
  fires on it (the check is kept off the per-candle hot path).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, NoReturn

from pydantic import BaseModel, ConfigDict, Field

from shared.models import Candle, Side, Signal, interval_delta

SIGNAL_ID_LENGTH = 32
"""Hex characters in a signal id: leaves room for a prefix within Binance's 36-char limit."""


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: frozen, typed, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantity: Decimal = Field(default=Decimal("0.001"), gt=0, description="order size (base)")


def _canonical(value: Any) -> Any:
    """A JSON-ready form that does not depend on how an equal value was written."""
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in {"-0", "0"} else text
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def params_fingerprint(params: StrategyParams | Mapping[str, Any]) -> str:
    """Canonical JSON of a parameter set: equal parameters give equal text."""
    data = params.model_dump() if isinstance(params, BaseModel) else dict(params)
    return json.dumps(_canonical(data), sort_keys=True, separators=(",", ":"))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WARMING_UP = datetime.max.replace(tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _id_prefix(strategy: str, fingerprint: str) -> Any:
    """A sha256 already fed with the strategy and its parameters (copied for each id)."""
    return hashlib.sha256(f"{strategy}|{fingerprint}|".encode())


def _signal_id(prefix: Any, symbol: str, interval: str, candle_time: datetime, side: str) -> str:
    digest = prefix.copy()
    millis = (candle_time - _EPOCH) // _MILLISECOND
    digest.update(f"{symbol}|{interval}|{millis}|{side}".encode())
    return str(digest.hexdigest()[:SIGNAL_ID_LENGTH])


def make_signal_id(
    strategy: str,
    params: StrategyParams | Mapping[str, Any],
    symbol: str,
    interval: str,
    candle_time: datetime,
    side: Side | str,
) -> str:
    """The deterministic id of a signal: 32 lower-case hex characters.

    The same strategy, parameters, symbol, interval, candle open time and side always give
    the same id, so a replayed candle yields the same id and the order executor can derive an
    idempotent Binance client order id from it (≤ 36 characters of [.A-Z:/a-z0-9_-]).
    """
    prefix = _id_prefix(strategy, params_fingerprint(params))
    return _signal_id(prefix, symbol, interval, candle_time, str(side))


_SIGNAL_FIELDS = frozenset(Signal.model_fields)
_new_object = object.__new__
_set_slot = object.__setattr__


def _prevalidated_signal(fields: dict[str, Any]) -> Signal:
    """A Signal from values that already passed the same checks, without validating again.

    Every value `_signal` passes is already what Signal's validation would return: symbol,
    interval, price and candle time come from a validated Candle (same validators), the
    quantity from the validated params (> 0), the side is a `Side`, the id is 32 hex
    characters. Validating them again cost ~7 µs a signal (≈ 14 bare-loop candles; MACD fires
    on 8 % of 1m candles) and `model_construct` is slower still in pydantic 2.14, so the
    instance's four slots are set as pydantic's own `__setstate__` (unpickling) sets them,
    without its dict lookups (~1.8 µs instead of ~3.3 µs; `test_strategy_contract` checks the
    result equals, dumps and re-validates as `Signal(...)` does). The dict must list every
    field, in field order (the order `model_dump` keeps).
    """
    signal = _new_object(Signal)
    _set_slot(signal, "__dict__", fields)
    # a set of its own, as validation makes (model_copy(update=...) adds to it in place)
    _set_slot(signal, "__pydantic_fields_set__", set(_SIGNAL_FIELDS))
    _set_slot(signal, "__pydantic_extra__", None)
    _set_slot(signal, "__pydantic_private__", None)
    return signal


Decision = tuple[Side, str]
"""What `_step` returns when a rule fires: the side and a short reason."""


class BaseStrategy(ABC):
    """A strategy over one symbol's candles; see the module docstring for the shared rules.

    Subclasses set the ClassVars `name` and `params_model`, implement `warmup_period`,
    `_reset_state()` (build indicators from `self.params`) and `_step(candle)` (update the
    indicators with one candle and return a `Decision` when a rule fires).
    """

    name: ClassVar[str]
    params_model: ClassVar[type[StrategyParams]]

    def __init__(self, params: Mapping[str, Any] | StrategyParams | None = None) -> None:
        """Configure with `params` (defaults when None); raises pydantic's ValidationError."""
        self.configure({} if params is None else params)

    # -- configuration ------------------------------------------------------------------

    def configure(self, params: Mapping[str, Any] | StrategyParams) -> None:
        """Validate `params` against `params_model`, store them and reset all state."""
        if isinstance(params, self.params_model):
            validated = params
        elif isinstance(params, BaseModel):
            validated = self.params_model.model_validate(params.model_dump())
        else:
            validated = self.params_model.model_validate(dict(params))
        self._params = validated
        self._id_prefix = _id_prefix(self.name, params_fingerprint(validated))
        self.reset()

    @property
    def params(self) -> StrategyParams:
        """The validated, frozen parameters."""
        return self._params

    @property
    @abstractmethod
    def warmup_period(self) -> int:
        """Candles taken in before the first one that may signal (see the module docstring)."""

    def reset(self) -> None:
        """Forget every candle: back to the just-configured state."""
        self._seen = 0  # candles taken while warming up
        self._symbol: str | None = None
        self._interval: str | None = None
        self._delta = timedelta(0)
        self._warm_time: datetime | None = None  # the last candle taken while warming up
        # The last candle taken once warmed up; _WARMING_UP (later than any candle) until
        # then, which sends every candle to the slower path (the hot path keeps no count).
        self._last_time: datetime = _WARMING_UP
        self._quantity = self._params.quantity
        self._reset_state()
        self._warmup = self.warmup_period  # read once: on_candle is the hot path

    # -- the candle loop ----------------------------------------------------------------

    def on_candle(self, candle: Candle) -> Signal | None:
        """Take one closed candle; return a Signal when a rule fires on it, else None."""
        # The hot path, kept to a few attribute reads (each pydantic attribute read costs
        # about a fifth of a bare EMA step): warm-up, the series and gaps are handled on the
        # warm-up candles, on irregular ones, and when a rule fires.
        time = candle.open_time
        last = self._last_time
        if time <= last or not candle.closed:
            return self._on_irregular_candle(candle)
        self._last_time = time
        decision = self._step(candle)
        if decision is None:
            return None
        if time - last != self._delta:
            return None  # the first candle after a gap: no crossing can be judged
        if candle.symbol != self._symbol or candle.interval != self._interval:
            self._refuse(candle)
        return self._signal(candle, decision)

    def _on_irregular_candle(self, candle: Candle) -> Signal | None:
        """A warm-up candle (the first included), or a redelivered, late or unfinished one."""
        if not candle.closed:
            return None
        time = candle.open_time
        last = self._warm_time if self._last_time is _WARMING_UP else self._last_time
        if last is None:
            self._symbol = candle.symbol
            self._interval = candle.interval
            self._delta = interval_delta(candle.interval)
        elif time <= last:
            if candle.symbol != self._symbol or candle.interval != self._interval:
                self._refuse(candle)
            return None  # at or before the last candle taken: a redelivery
        # A new candle while warming up: indicators take it in, no rule may fire on it (a
        # candle of another series is refused when a rule fires, as on the hot path).
        self._warm_time = time
        self._seen += 1
        self._step(candle)
        if self._seen >= self._warmup:
            self._last_time = time  # warmed up: the next candles take the hot path
        return None

    def _refuse(self, candle: Candle) -> NoReturn:
        raise ValueError(
            f"strategy {self.name!r} follows {self._symbol} {self._interval}, "
            f"got a {candle.symbol} {candle.interval} candle: use one instance per series"
        )

    def _signal(self, candle: Candle, decision: Decision) -> Signal:
        side, reason = decision
        time = candle.open_time
        symbol = candle.symbol
        interval = candle.interval
        return _prevalidated_signal(
            {
                "id": _signal_id(self._id_prefix, symbol, interval, time, side.value),
                "strategy": self.name,
                "symbol": symbol,
                "interval": interval,
                "side": side,
                "quantity": self._quantity,
                "price": candle.close,
                "candle_time": time,
                "reason": reason,
            }
        )

    @abstractmethod
    def _reset_state(self) -> None:
        """Build fresh indicators and rule state from `self.params`."""

    @abstractmethod
    def _step(self, candle: Candle) -> Decision | None:
        """Update the indicators with `candle`; return a Decision when a rule fires."""
