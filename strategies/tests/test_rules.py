"""Each strategy's rules fire on small hand-built candle sequences, and not on edge cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import talib
from shared.models import Candle

from strategies.bollinger_strategy import BollingerStrategy
from strategies.ema_crossover_strategy import EmaCrossoverStrategy
from strategies.grid_strategy import GridStrategy
from strategies.macd_strategy import MacdStrategy
from strategies.rsi_strategy import RsiStrategy
from strategies.tests.helpers import make_candle, run, series, sides
from strategies.volume_profile_strategy import VolumeProfileStrategy
from strategies.vwap_strategy import VwapStrategy


def with_gap_before(candles: list[Candle], index: int) -> list[Candle]:
    """The same candles with every open time from `index` on moved one interval later."""
    step = timedelta(hours=1) if candles[0].interval == "1h" else timedelta(minutes=1)
    return [
        c if i < index else c.model_copy(update={"open_time": c.open_time + step})
        for i, c in enumerate(candles)
    ]


# -- EMA crossover ------------------------------------------------------------------------


def ema() -> EmaCrossoverStrategy:
    return EmaCrossoverStrategy({"short_period": 2, "long_period": 4})


def test_ema_crossover_buys_on_golden_cross_and_sells_on_death_cross() -> None:
    candles = series([10] * 6 + [12, 12, 8, 8])
    # at 12 the short EMA (11.33) goes above the long (10.8); at 8 it drops below (9.11 < 9.68)
    assert sides(ema(), candles) == [(6, "BUY"), (8, "SELL")]


def test_ema_crossover_fires_once_while_the_short_ema_stays_above() -> None:
    assert sides(ema(), series([10] * 6 + [12, 13, 14, 15])) == [(6, "BUY")]


def test_ema_crossover_flat_prices_never_fire() -> None:
    assert sides(ema(), series([10] * 30)) == []


def test_ema_crossover_does_not_fire_across_a_gap() -> None:
    assert sides(ema(), with_gap_before(series([10] * 6 + [12, 12]), 6)) == []


# -- MACD -----------------------------------------------------------------------------------


def _expected_macd_flips(closes: list[float], warmup: int) -> list[tuple[int, str]]:
    hist = talib.MACD(np.array(closes, dtype=float), 2, 3, 2)[2]
    out = []
    for i in range(1, len(closes)):
        prev, now = hist[i - 1], hist[i]
        if i < warmup or np.isnan(prev):
            continue
        if prev <= 0 < now:
            out.append((i, "BUY"))
        elif prev >= 0 > now:
            out.append((i, "SELL"))
    return out


def macd() -> MacdStrategy:
    return MacdStrategy({"fast_period": 2, "slow_period": 3, "signal_period": 2})


def test_macd_fires_where_talib_histogram_changes_sign() -> None:
    closes = [10.0] * 6 + [11, 12, 13, 12, 11, 10, 9, 10, 11, 12, 12, 12]
    expected = _expected_macd_flips(closes, macd().warmup_period)
    assert {side for _, side in expected} == {"BUY", "SELL"}
    assert sides(macd(), series(closes)) == expected


def test_macd_histogram_from_exactly_zero_to_positive_buys() -> None:
    # flat prices keep the histogram at exactly 0; the first rise makes it positive
    assert sides(macd(), series([10] * 8 + [11])) == [(8, "BUY")]


def test_macd_flat_prices_never_fire() -> None:
    assert sides(macd(), series([10] * 40)) == []


def test_macd_sign_change_inside_warmup_does_not_fire() -> None:
    # the histogram is defined from candle 4 (index 3) and turns positive on index 4,
    # but warm-up (slow + signal = 5 candles) has not ended there
    closes = [10, 10, 10, 10, 11]
    assert _expected_macd_flips(closes, warmup=4) == [(4, "BUY")]
    assert sides(macd(), series(closes)) == []


def test_macd_does_not_fire_across_a_gap() -> None:
    assert sides(macd(), with_gap_before(series([10] * 8 + [11]), 8)) == []


# -- Bollinger --------------------------------------------------------------------------------


def bollinger(**params: object) -> BollingerStrategy:
    return BollingerStrategy({"period": 3, "num_std": 1.0, "min_bandwidth": 0.0, **params})


def test_bollinger_buys_when_a_close_returns_above_the_lower_band() -> None:
    # index 4: 5 < lower 6.04; index 5: 10 >= lower 6.04
    assert sides(bollinger(), series([10, 11, 10, 11, 5, 10])) == [(5, "BUY")]


def test_bollinger_sells_when_a_close_returns_below_the_upper_band() -> None:
    # index 4: 16 > upper 14.96; index 5: 11 <= upper 15.02
    assert sides(bollinger(), series([10, 11, 10, 11, 16, 11])) == [(5, "SELL")]


def test_bollinger_close_exactly_on_a_band_is_not_outside_it() -> None:
    # over two closes the bands are exactly the lower and the higher close
    strategy = bollinger(period=2)
    assert sides(strategy, series([10, 11, 5, 10, 16, 11, 4, 12])) == []


def test_bollinger_narrow_bands_are_ignored() -> None:
    assert sides(bollinger(min_bandwidth=2.0), series([10, 11, 10, 11, 5, 10])) == []


def test_bollinger_flat_prices_never_fire() -> None:
    assert sides(bollinger(), series([10] * 30)) == []


def test_bollinger_does_not_fire_across_a_gap() -> None:
    assert sides(bollinger(), with_gap_before(series([10, 11, 10, 11, 5, 10]), 5)) == []


# -- RSI --------------------------------------------------------------------------------------


def rsi(**params: object) -> RsiStrategy:
    return RsiStrategy({"period": 2, "oversold": 30, "overbought": 70, **params})


def test_rsi_buys_when_leaving_oversold() -> None:
    # RSI 0 after two falls, 33.3 after a rise of half a fall
    assert sides(rsi(), series([10, 9, 8, 8.5])) == [(3, "BUY")]


def test_rsi_sells_when_leaving_overbought() -> None:
    assert sides(rsi(), series([10, 11, 12, 11.5])) == [(3, "SELL")]


def test_rsi_exactly_on_a_level_is_not_beyond_it() -> None:
    # RSI is exactly 50 (= oversold), then exactly 75 (= overbought), then 50 again
    strategy = rsi(oversold=50, overbought=75)
    candles = series([100, 99, 100, 101, 100.5])
    assert [strategy.on_candle(c) for c in candles] == [None] * 5
    assert strategy._rsi.value == 50.0


def test_rsi_flat_prices_never_fire_even_when_they_start_moving() -> None:
    assert sides(rsi(), series([10] * 10 + [11, 12, 11])) == [(12, "SELL")]
    assert sides(rsi(), series([10] * 30)) == []


def test_rsi_does_not_fire_across_a_gap() -> None:
    assert sides(rsi(), with_gap_before(series([10, 9, 8, 8.5]), 3)) == []


# -- Grid ---------------------------------------------------------------------------------------


def grid() -> GridStrategy:
    return GridStrategy({"lower_price": "100", "upper_price": "110", "grid_count": 3})


def test_grid_levels_are_evenly_spaced_and_include_both_ends() -> None:
    assert [str(x) for x in grid().params.levels()] == ["100", "105", "110"]  # type: ignore[attr-defined]


def test_grid_buys_crossing_down_and_sells_crossing_up_once_a_candle() -> None:
    # 107 -> 104 crosses 105 down; 104 -> 111 crosses 105 and 110 up: one SELL
    assert sides(grid(), series([107, 104, 111])) == [(1, "BUY"), (2, "SELL")]


def test_grid_landing_exactly_on_a_level_is_not_a_crossing_until_it_goes_through() -> None:
    assert sides(grid(), series([107, 105, 107, 105, 104])) == [(4, "BUY")]


def test_grid_outside_the_range_and_flat_prices_never_fire() -> None:
    assert sides(grid(), series([120, 115, 125, 111])) == []
    assert sides(grid(), series([95, 90, 99, 91])) == []
    assert sides(grid(), series([104] * 10)) == []


def test_grid_jump_across_the_whole_grid_is_one_signal() -> None:
    signals = [s for _, s in run(grid(), series([120, 95]))]
    assert [(s.side.value, s.reason) for s in signals] == [
        ("BUY", "close crossed down through 3 grid level(s)")
    ]


def test_grid_does_not_fire_across_a_gap() -> None:
    assert sides(grid(), with_gap_before(series([107, 104]), 1)) == []


# -- VWAP ---------------------------------------------------------------------------------------

MINUTES = {"interval": "1m"}


def vwap() -> VwapStrategy:
    return VwapStrategy({"deviation_threshold": 0.5})


def flat_minutes(count: int, start: datetime | None = None) -> list[Candle]:
    kwargs = {"start": start} if start else {}
    return [make_candle(i, 100, interval="1m", **kwargs) for i in range(count)]  # type: ignore[arg-type]


def test_vwap_buys_when_a_close_returns_to_the_lower_band() -> None:
    # VWAP stays 100 (zero-volume candles do not move it); the lower band is 50
    candles = [
        *flat_minutes(31),
        make_candle(31, 40, volume=0, **MINUTES),
        make_candle(32, 50, volume=0, **MINUTES),
    ]
    assert sides(vwap(), candles) == [(32, "BUY")]


def test_vwap_sells_when_a_close_returns_to_the_upper_band() -> None:
    candles = [
        *flat_minutes(31),
        make_candle(31, 160, volume=0, **MINUTES),
        make_candle(32, 150, volume=0, **MINUTES),
    ]
    assert sides(vwap(), candles) == [(32, "SELL")]


def test_vwap_close_exactly_on_the_band_is_not_outside_it() -> None:
    candles = [
        *flat_minutes(31),
        make_candle(31, 50, volume=0, **MINUTES),
        make_candle(32, 60, volume=0, **MINUTES),
        make_candle(33, 150, volume=0, **MINUTES),
        make_candle(34, 140, volume=0, **MINUTES),
    ]
    assert sides(vwap(), candles) == []


def test_vwap_warms_up_for_30_candles() -> None:
    candles = [
        *flat_minutes(29),
        make_candle(29, 40, volume=0, **MINUTES),
        make_candle(30, 50, volume=0, **MINUTES),
    ]
    assert sides(vwap(), candles) == [(30, "BUY")]
    candles = [
        *flat_minutes(28),
        make_candle(28, 40, volume=0, **MINUTES),
        make_candle(29, 50, volume=0, **MINUTES),
    ]
    assert sides(vwap(), candles) == []


def test_vwap_zero_volume_day_never_fires() -> None:
    closes = [100] * 31 + [40, 50, 160, 150]
    candles = [make_candle(i, c, volume=0, **MINUTES) for i, c in enumerate(closes)]
    assert sides(vwap(), candles) == []


def test_vwap_restarts_at_midnight_utc_and_does_not_fire_on_the_new_days_first_candle() -> None:
    start = datetime(2024, 1, 1, 23, 20, tzinfo=UTC)  # candle 40 opens at 00:00
    below = make_candle(39, 40, volume=0, start=start, **MINUTES)
    back = make_candle(40, 100, volume=1, start=start, **MINUTES)
    assert back.open_time == datetime(2024, 1, 2, tzinfo=UTC)
    assert sides(vwap(), [*flat_minutes(39, start), below, back]) == []
    # the same closes within one day do fire
    same_day = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    below = make_candle(39, 40, volume=0, start=same_day, **MINUTES)
    back = make_candle(40, 100, volume=1, start=same_day, **MINUTES)
    assert sides(vwap(), [*flat_minutes(39, same_day), below, back]) == [(40, "BUY")]


def test_vwap_does_not_fire_across_a_gap() -> None:
    candles = [
        *flat_minutes(31),
        make_candle(31, 40, volume=0, **MINUTES),
        make_candle(33, 50, volume=0, **MINUTES),
    ]
    assert sides(vwap(), candles) == []


# -- Volume profile --------------------------------------------------------------------------


def profile() -> VolumeProfileStrategy:
    return VolumeProfileStrategy({"lookback_period": 4, "num_bins": 4, "value_area_pct": 0.5})


def window() -> list[Candle]:
    # bins of 0.75 from 100 to 103; 10 of the 13 units at 102: VAL 101.5, VAH 102.25
    return [
        make_candle(i, c, volume=v)
        for i, (c, v) in enumerate([(100, 1), (101, 1), (102, 10), (103, 1)])
    ]


def test_volume_profile_value_area_of_the_hand_built_window() -> None:
    strategy = profile()
    for candle in window():
        strategy.on_candle(candle)
    assert strategy._profile.value_area() == (101.5, 102.25, 2)


def test_volume_profile_buys_a_bounce_off_the_value_area_low() -> None:
    bounce = make_candle(4, 102, low=101, high=102)
    assert sides(profile(), [*window(), bounce]) == [(4, "BUY")]


def test_volume_profile_sells_a_rejection_at_the_value_area_high() -> None:
    rejection = make_candle(4, 102, low=102, high=103)
    assert sides(profile(), [*window(), rejection]) == [(4, "SELL")]


def test_volume_profile_close_exactly_on_a_level_or_spanning_both_does_not_fire() -> None:
    on_val = make_candle(4, 101.5, low=101, high=101.5)
    on_vah = make_candle(4, 102.25, low=102.25, high=103)
    both = make_candle(4, 102, low=101, high=103)
    for candle in (on_val, on_vah, both):
        assert sides(profile(), [*window(), candle]) == []


def test_volume_profile_flat_prices_and_zero_volume_never_fire() -> None:
    flat = [make_candle(i, 100, volume=5) for i in range(4)]
    assert sides(profile(), [*flat, make_candle(4, 101, low=99, high=101)]) == []
    silent = [c.model_copy(update={"volume": 0}) for c in window()]
    assert sides(profile(), [*silent, make_candle(4, 102, low=101, high=102)]) == []


def test_volume_profile_does_not_fire_across_a_gap() -> None:
    bounce = make_candle(5, 102, low=101, high=102)
    assert sides(profile(), [*window(), bounce]) == []
