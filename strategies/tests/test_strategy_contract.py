"""What every strategy shares: warm-up, ids, reset, redelivery, gaps, one series, no look-ahead."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from shared.models import Candle, Side, Signal
from shared.strategy import BaseStrategy, make_signal_id

from strategies.bollinger_strategy import BollingerStrategy
from strategies.ema_crossover_strategy import EmaCrossoverStrategy
from strategies.grid_strategy import GridStrategy
from strategies.macd_strategy import MacdStrategy
from strategies.rsi_strategy import RsiStrategy
from strategies.tests.helpers import make_candle, read_candles, run
from strategies.volume_profile_strategy import VolumeProfileStrategy
from strategies.vwap_strategy import VwapStrategy

# Small periods so that short generated series give signals; defaults for the real candles.
FACTORIES: dict[str, Callable[[], BaseStrategy]] = {
    "rsi": lambda: RsiStrategy({"period": 3}),
    "grid": lambda: GridStrategy({"lower_price": "90", "upper_price": "110", "grid_count": 9}),
    "macd": lambda: MacdStrategy({"fast_period": 2, "slow_period": 4, "signal_period": 2}),
    "bollinger": lambda: BollingerStrategy({"period": 4, "min_bandwidth": 0.0, "num_std": 1}),
    "ema_crossover": lambda: EmaCrossoverStrategy({"short_period": 2, "long_period": 4}),
    "vwap": lambda: VwapStrategy({"deviation_threshold": 0.001}),
    "volume_profile": lambda: VolumeProfileStrategy(
        {"lookback_period": 6, "num_bins": 4, "value_area_pct": 0.6}
    ),
}
DEFAULTS: dict[str, Callable[[], BaseStrategy]] = {
    "rsi": RsiStrategy,
    "grid": lambda: GridStrategy(
        {"lower_price": "3000", "upper_price": "120000", "grid_count": 60}
    ),
    "macd": MacdStrategy,
    "bollinger": BollingerStrategy,
    "ema_crossover": EmaCrossoverStrategy,
    "vwap": VwapStrategy,
    "volume_profile": VolumeProfileStrategy,
}
NAMES = sorted(FACTORIES)
REAL = "BTCUSDT-1h.csv.gz"


@pytest.fixture(scope="module")
def real_candles() -> tuple[Candle, ...]:
    return read_candles(REAL, "1h", 6000)


def test_every_strategy_is_covered() -> None:
    assert {f().name for f in FACTORIES.values()} == set(NAMES)


# -- generated candles -------------------------------------------------------------------------


@st.composite
def candle_series(draw: st.DrawFn, interval: str = "1m") -> list[Candle]:
    """A random walk around 100 with wicks, zero volumes, flat runs and the odd gap."""
    n = draw(st.integers(min_value=0, max_value=120))
    steps = draw(st.lists(st.integers(-6, 6), min_size=n, max_size=n))
    volumes = draw(st.lists(st.sampled_from([0, 0.5, 1, 2, 7]), min_size=n, max_size=n))
    gaps = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    price = 100.0
    candles = []
    index = 0
    for step, volume, gap in zip(steps, volumes, gaps, strict=True):
        price = max(1.0, price + step / 2)
        index += 2 if gap == 0 else 1  # about one gap in 40 candles
        candles.append(
            make_candle(
                index,
                price,
                high=price + abs(step) / 4,
                low=price - 0.5,
                volume=volume,
                interval=interval,
            )
        )
    return candles


def signal_keys(strategy: BaseStrategy, candles: Any) -> list[tuple[int, str, str]]:
    return [(i, s.id, s.side.value) for i, s in run(strategy, candles)]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candles=candle_series(), data=st.data())
def test_no_look_ahead_on_generated_candles(
    name: str, candles: list[Candle], data: st.DataObject
) -> None:
    whole = signal_keys(FACTORIES[name](), candles)
    cut = data.draw(st.integers(0, len(candles)))
    assert signal_keys(FACTORIES[name](), candles[:cut]) == [s for s in whole if s[0] < cut]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_look_ahead_on_real_candles(
    name: str, data: st.DataObject, real_candles: tuple[Candle, ...]
) -> None:
    start = data.draw(st.integers(0, len(real_candles) - 800))
    candles = real_candles[start : start + 800]
    cut = data.draw(st.integers(0, len(candles)))
    whole = signal_keys(DEFAULTS[name](), candles)
    assert signal_keys(DEFAULTS[name](), candles[:cut]) == [s for s in whole if s[0] < cut]


# -- the shared rules on real candles ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_real_candles_give_both_sides_and_nothing_during_warmup(
    name: str, real_candles: tuple[Candle, ...]
) -> None:
    strategy = DEFAULTS[name]()
    signals = run(strategy, real_candles)
    assert {s.side for _, s in signals} == {Side.BUY, Side.SELL}
    assert min(i for i, _ in signals) >= strategy.warmup_period


@pytest.mark.parametrize("name", NAMES)
def test_reset_gives_identical_signals_and_ids(name: str, real_candles: tuple[Candle, ...]) -> None:
    strategy = DEFAULTS[name]()
    first = run(strategy, real_candles[:3000])
    strategy.reset()
    second = run(strategy, real_candles[:3000])
    assert first and first == second
    assert [s.id for _, s in first] == [s.id for _, s in second]
    assert run(DEFAULTS[name](), real_candles[:3000]) == first  # a fresh instance too


@pytest.mark.parametrize("name", NAMES)
def test_no_signal_on_the_first_candle_after_a_gap(name: str) -> None:
    candles = read_candles(REAL, "1h")
    after_gap = {
        i
        for i in range(1, len(candles))
        if candles[i].open_time - candles[i - 1].open_time != timedelta(hours=1)
    }
    assert len(after_gap) == 27
    fired_anywhere = 0
    for gap in sorted(after_gap):
        start = max(0, gap - 300)  # warmed up well before the gap, a while after it
        fired = {start + i for i, _ in run(DEFAULTS[name](), candles[start : gap + 300])}
        assert gap not in fired
        fired_anywhere += len(fired)
    assert fired_anywhere > 50


@pytest.mark.parametrize("name", NAMES)
def test_redelivered_and_unfinished_candles_change_nothing(
    name: str, real_candles: tuple[Candle, ...]
) -> None:
    candles = real_candles[:1500]
    expected = run(DEFAULTS[name](), candles)
    strategy = DEFAULTS[name]()
    noisy = []
    for i, candle in enumerate(candles):
        noisy.append((i, strategy.on_candle(candle.model_copy(update={"closed": False}))))
        noisy.append((i, strategy.on_candle(candle)))
        noisy.append((i, strategy.on_candle(candle)))  # redelivered
        if i > 0:
            noisy.append((i, strategy.on_candle(candles[i - 1])))  # late, out of order
    assert [(i, s) for i, s in noisy if s is not None] == expected


def test_signal_carries_the_candle_params_and_a_deterministic_id() -> None:
    strategy = GridStrategy(
        {"lower_price": "100", "upper_price": "110", "grid_count": 3, "quantity": "0.25"}
    )
    candles = [make_candle(0, 107), make_candle(1, "104.5")]
    [(index, signal)] = run(strategy, candles)
    assert index == 1
    assert signal.strategy == "grid"
    assert (signal.symbol, signal.interval, signal.side) == ("BTCUSDT", "1h", Side.BUY)
    assert signal.quantity == Decimal("0.25")
    assert signal.price == Decimal("104.5")
    assert signal.candle_time == candles[1].open_time
    assert signal.reason == "close crossed down through 1 grid level(s)"
    assert re.fullmatch(r"[0-9a-f]{32}", signal.id)
    assert signal.id == make_signal_id(
        "grid", strategy.params, "BTCUSDT", "1h", candles[1].open_time, Side.BUY
    )
    # equal parameters written differently give the same id; other parameters another one
    same = GridStrategy(
        {"lower_price": "100.0", "upper_price": 110, "grid_count": 3, "quantity": "0.250"}
    )
    assert run(same, candles)[0][1].id == signal.id
    other = GridStrategy(
        {"lower_price": "100", "upper_price": "110", "grid_count": 3, "quantity": "0.5"}
    )
    assert run(other, candles)[0][1].id != signal.id
    assert (
        make_signal_id("grid", strategy.params, "BTCUSDT", "1h", candles[1].open_time, "SELL")
        != signal.id
    )


def test_a_candle_of_another_series_is_refused() -> None:
    strategy = GridStrategy({"lower_price": "100", "upper_price": "110", "grid_count": 3})
    strategy.on_candle(make_candle(2, 107))
    with pytest.raises(ValueError, match="follows BTCUSDT 1h, got a ETHUSDT 1h candle"):
        strategy.on_candle(make_candle(0, 107, symbol="ETHUSDT"))  # not later: checked
    with pytest.raises(ValueError, match="follows BTCUSDT 1h, got a BTCUSDT 1m candle"):
        strategy.on_candle(make_candle(2, 107, interval="1m"))
    with pytest.raises(ValueError, match="follows BTCUSDT 1h, got a ETHUSDT 1h candle"):
        strategy.on_candle(make_candle(3, 104, symbol="ETHUSDT"))  # a rule fires: checked


def test_configure_validates_and_resets() -> None:
    strategy = EmaCrossoverStrategy({"short_period": 2, "long_period": 4})
    with pytest.raises(ValidationError):
        strategy.configure({"short_period": 2, "long_period": 4, "nope": 1})
    with pytest.raises(ValidationError):
        strategy.configure({"short_period": 5, "long_period": 4})
    candles = [make_candle(i, c) for i, c in enumerate([10] * 6 + [12])]
    run(strategy, candles[:6])
    strategy.configure({"short_period": 2, "long_period": 4})
    assert [i for i, _ in run(strategy, candles)] == [6]
    assert strategy.warmup_period == 4
    assert strategy.params.model_dump() == {
        "quantity": Decimal("0.001"),
        "short_period": 2,
        "long_period": 4,
    }
    with pytest.raises(ValidationError):
        strategy.params.short_period = 3  # type: ignore[attr-defined]


def test_default_warmup_periods_follow_the_spec() -> None:
    warmups = {name: cls().warmup_period for name, cls in DEFAULT_CLASSES.items()}
    assert warmups == {
        "bollinger": 20,  # period
        "ema_crossover": 21,  # long_period
        "grid": 1,  # one previous close
        "macd": 26 + 9,  # slow_period + signal_period
        "rsi": 14 + 1,  # period changes need period + 1 closes
        "volume_profile": 100,  # lookback_period
        "vwap": 30,
    }


DEFAULT_CLASSES: dict[str, type[BaseStrategy]] = {
    "bollinger": BollingerStrategy,
    "ema_crossover": EmaCrossoverStrategy,
    "grid": GridStrategy,
    "macd": MacdStrategy,
    "rsi": RsiStrategy,
    "volume_profile": VolumeProfileStrategy,
    "vwap": VwapStrategy,
}


@pytest.mark.parametrize("name", NAMES)
def test_signals_equal_validated_signal_models(name: str, real_candles: tuple[Candle, ...]) -> None:
    """Signals are built without re-validation; they must be what validation would build."""
    signals = [s for _, s in run(DEFAULTS[name](), real_candles[:1500])]
    assert signals
    for signal in signals:
        validated = Signal.model_validate(signal.model_dump())
        assert signal == validated
        assert signal.model_fields_set == validated.model_fields_set
        assert signal.model_dump_json() == validated.model_dump_json()
        assert list(signal.model_dump()) == list(Signal.model_fields)
        assert Signal.model_validate_json(signal.model_dump_json()) == signal
    changed = signals[0].model_copy(update={"reason": "edited"})
    assert changed.reason == "edited" and signals[0].reason != "edited"
    assert signals[0].model_fields_set == set(Signal.model_fields)
