"""The incremental indicators equal TA-Lib and direct numpy computations on real candles."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from shared.indicators import BollingerBands, Ema, EmaSpread, Macd, Rsi, VolumeProfile

from shared import indicators
from strategies.tests.helpers import read_candles, read_ohlcv
from strategies.vwap_strategy import VwapStrategy

BTC_1H = "BTCUSDT-1h.csv.gz"


@pytest.fixture(scope="module")
def closes() -> np.ndarray:
    return read_ohlcv(BTC_1H).close


def _run(update, values: np.ndarray, read=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.full(len(values), np.nan)
    for i, x in enumerate(values.tolist()):
        result = update(x)
        if result is not None:
            out[i] = result if read is None else read()
    return out


def _assert_same(ours: np.ndarray, ta: np.ndarray, rtol: float, atol: float = 0.0) -> None:
    # Defined from the same index on, then equal to rounding from the first value.
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ta))
    assert not np.isnan(ta).all()
    np.testing.assert_allclose(ours, ta, rtol=rtol, atol=atol)


@pytest.mark.parametrize("period", [2, 9, 21, 50])
def test_ema_equals_talib(closes: np.ndarray, period: int) -> None:
    _assert_same(_run(Ema(period).update, closes), talib.EMA(closes, period), rtol=1e-9)


@pytest.mark.parametrize(("short", "long"), [(9, 21), (1, 2), (12, 26)])
def test_ema_spread_is_exactly_the_difference_of_two_emas(
    closes: np.ndarray, short: int, long: int
) -> None:
    # The same floats as two `Ema`s (the strategies' signals depend on the sign of it).
    spread, short_ema, long_ema = EmaSpread(short, long), Ema(short), Ema(long)
    for x in closes.tolist():
        s, lo = short_ema.update(x), long_ema.update(x)
        expected = None if s is None or lo is None else s - lo
        assert spread.update(x) == expected
        assert (spread.short, spread.long) == ((s, lo) if expected is not None else (None, None))


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (5, 35, 5), (3, 4, 2)])
def test_macd_all_three_lines_equal_talib(
    closes: np.ndarray, fast: int, slow: int, signal: int
) -> None:
    macd = Macd(fast, slow, signal)
    lines = {name: np.full(len(closes), np.nan) for name in ("macd", "signal", "histogram")}
    for i, x in enumerate(closes.tolist()):
        if macd.update(x) is not None:
            lines["macd"][i] = macd.macd
            lines["signal"][i] = macd.signal
            lines["histogram"][i] = macd.histogram
    ta_macd, ta_signal, ta_hist = talib.MACD(closes, fast, slow, signal)
    assert np.flatnonzero(~np.isnan(ta_macd))[0] == slow + signal - 2
    # The histogram crosses zero: compare it absolutely there, relatively elsewhere.
    _assert_same(lines["macd"], ta_macd, rtol=1e-9, atol=1e-9)
    _assert_same(lines["signal"], ta_signal, rtol=1e-9, atol=1e-9)
    _assert_same(lines["histogram"], ta_hist, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("period", [2, 14, 30])
def test_rsi_equals_talib(closes: np.ndarray, period: int) -> None:
    _assert_same(_run(Rsi(period).update, closes), talib.RSI(closes, period), rtol=1e-9)


@pytest.mark.parametrize(("period", "num_std"), [(20, 2.0), (10, 1.5), (2, 1.0)])
def test_bollinger_bands_equal_talib(closes: np.ndarray, period: int, num_std: float) -> None:
    bands = BollingerBands(period, num_std)
    upper = _run(bands.update, closes, lambda: bands.upper)
    bands = BollingerBands(period, num_std)
    middle = _run(bands.update, closes)
    bands = BollingerBands(period, num_std)
    lower = _run(bands.update, closes, lambda: bands.lower)
    ta_upper, ta_middle, ta_lower = talib.BBANDS(closes, period, num_std, num_std, 0)
    _assert_same(middle, ta_middle, rtol=1e-9)
    _assert_same(upper, ta_upper, rtol=1e-6)
    _assert_same(lower, ta_lower, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "interval"), [("BTCUSDT-1h.csv.gz", "1h"), ("BTCUSDT-1m.csv.gz", "1m")]
)
def test_session_vwap_equals_numpy_per_utc_day(name: str, interval: str) -> None:
    data = read_ohlcv(name)
    typical = (data.high + data.low + data.close) / 3.0
    # numpy: cumulative sums restarted on each UTC day
    day = data.open_time // 86_400_000
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    sum_pv = np.concatenate([np.cumsum(a) for a in np.split(typical * data.volume, starts[1:])])
    sum_v = np.concatenate([np.cumsum(a) for a in np.split(data.volume, starts[1:])])
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(sum_v > 0, sum_pv / sum_v, np.nan)

    # the VWAP strategy keeps the session sums itself (its hot path); read them candle by candle
    strategy = VwapStrategy()
    ours = np.full(len(expected), np.nan)
    for i, candle in enumerate(read_candles(name, interval)):
        strategy.on_candle(candle)
        value = strategy.vwap
        if value is not None:
            ours[i] = value
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def _numpy_value_areas(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    lookback: int,
    num_bins: int,
    pct: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Histogram, POC, VAL bin and VAH bin of every full window, all windows at once."""
    typical = (high + low + close) / 3.0
    units = np.round(volume * 1e8).astype(np.int64)
    hi = sliding_window_view(high, lookback).max(axis=1)
    lo = sliding_window_view(low, lookback).min(axis=1)
    windows = len(hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = num_bins / (hi - lo)
        bins = (sliding_window_view(typical, lookback) - lo[:, None]) * scale[:, None]
    flat = ~(hi > lo)
    bins = np.where(flat[:, None], 0, bins).astype(np.int64)
    bins = np.minimum(bins, num_bins - 1)
    hist = np.zeros((windows, num_bins), dtype=np.int64)
    rows = np.repeat(np.arange(windows), lookback)
    np.add.at(hist, (rows, bins.ravel()), sliding_window_view(units, lookback).ravel())
    total = hist.sum(axis=1)
    poc = hist.argmax(axis=1)
    target = np.minimum(pct * total, total)
    padded = np.pad(hist, ((0, 0), (1, 1)), constant_values=-1)
    low_bin = poc + 1
    high_bin = poc + 1
    acc = hist[np.arange(windows), poc]
    index = np.arange(windows)
    for _ in range(num_bins):
        active = acc < target
        below = padded[index, low_bin - 1]
        above = padded[index, high_bin + 1]
        up = active & (above > below)
        down = active & ~(above > below)
        acc = acc + np.where(up, above, 0) + np.where(down, below, 0)
        high_bin = high_bin + up
        low_bin = low_bin - down
    return hist, poc, low_bin - 1, high_bin - 1, ~flat & (total > 0)


@pytest.mark.parametrize(
    ("name", "rows", "lookback", "num_bins", "pct"),
    [
        ("BTCUSDT-1h.csv.gz", 4000, 100, 50, 0.7),
        ("BTCUSDT-1h.csv.gz", 2000, 24, 12, 0.5),
        ("BTCUSDT-1m.csv.gz", 3000, 100, 50, 0.7),
    ],
)
def test_volume_profile_equals_numpy(
    name: str, rows: int, lookback: int, num_bins: int, pct: float
) -> None:
    data = read_ohlcv(name)
    high, low, close, volume = (a[:rows] for a in (data.high, data.low, data.close, data.volume))
    hist, poc, val_bin, vah_bin, defined = _numpy_value_areas(
        high, low, close, volume, lookback, num_bins, pct
    )
    hi = sliding_window_view(high, lookback).max(axis=1)
    lo = sliding_window_view(low, lookback).min(axis=1)
    width = (hi - lo) / num_bins
    expected_val = lo + val_bin * width
    expected_vah = np.where(vah_bin == num_bins - 1, hi, lo + (vah_bin + 1) * width)

    profile = VolumeProfile(lookback, num_bins, pct)
    typical = ((high + low + close) / 3.0).tolist()
    checked = 0
    for i in range(rows):
        if profile.full:
            window = i - lookback  # the window of candles i − lookback … i − 1
            area = profile.value_area()
            assert (area is not None) == defined[window]
            if area is not None:
                assert profile.histogram() == hist[window].tolist()
                assert area[2] == poc[window]
                assert area[0] == pytest.approx(expected_val[window], rel=1e-12)
                assert area[1] == pytest.approx(expected_vah[window], rel=1e-12)
                checked += 1
        profile.push(float(high[i]), float(low[i]), typical[i], float(volume[i]))
    assert checked > rows // 2


def test_volume_profile_compiled_kernels_equal_the_python_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled kernels (float64 histogram) put every candle in the same bin and find the
    same value area as the Python path (Python ints), on real candles."""
    data = read_ohlcv("BTCUSDT-1h.csv.gz")
    rows = 3000
    high, low, close, volume = (a[:rows] for a in (data.high, data.low, data.close, data.volume))
    typical = ((high + low + close) / 3.0).tolist()
    vectorised = VolumeProfile(100, 50, 0.7)
    plain = VolumeProfile(100, 50, 0.7)
    compared = 0
    for i in range(rows):
        if vectorised.full:
            with monkeypatch.context() as patch:
                patch.setattr(indicators, "_EXACT_FLOAT_INT", 0)  # always the loop
                expected_hist = plain.histogram()
                expected_area = plain.value_area()
            assert vectorised.histogram() == expected_hist
            assert vectorised.value_area() == expected_area
            compared += 1
        for profile in (vectorised, plain):
            profile.push(float(high[i]), float(low[i]), typical[i], float(volume[i]))
    assert compared == rows - 100


@settings(max_examples=300, deadline=None)
@given(
    candles=st.lists(
        st.tuples(
            st.integers(0, 12),  # typical price in steps of 0.5: candles share bins
            st.sampled_from([0.0, 1e-8, 0.5, 1.0, 2.0]),  # few volumes: bins tie often
        ),
        min_size=1,
        max_size=40,
    ),
    lookback=st.integers(1, 8),
    num_bins=st.integers(1, 7),
    pct=st.sampled_from([0.1, 0.5, 0.7, 1.0]),
)
def test_volume_profile_compiled_kernels_equal_the_python_path_on_ties(
    candles: list[tuple[int, float]], lookback: int, num_bins: int, pct: float
) -> None:
    """Equal bins (POC ties, neighbour ties), empty bins and zero volumes: the compiled walk
    takes the same steps as the Python one, candle after candle."""
    compiled = VolumeProfile(lookback, num_bins, pct)
    python = VolumeProfile(lookback, num_bins, pct)
    for step, volume in candles:
        typical = 100.0 + step / 2
        for profile in (compiled, python):
            profile.push(typical + 0.25 * (step % 3), typical - 0.25 * (step % 2), typical, volume)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(indicators, "_EXACT_FLOAT_INT", 0)  # Python ints, Python walk
            expected = python.histogram(), python.value_area()
        assert (compiled.histogram(), compiled.value_area()) == expected
        if expected[0] is not None:  # both built a histogram, each its own kind
            assert isinstance(python._hist, list)
            assert isinstance(compiled._hist, np.ndarray)


def test_volume_profile_turns_to_python_ints_when_the_window_outgrows_float64() -> None:
    """A window whose units pass 2**53 after its histogram was built (same low and high)
    switches to Python ints instead of letting float64 round its sums."""
    profile = VolumeProfile(8, 2, 0.7)
    for price in (100.0, 103.0):  # the range 99..104 stays put from here on
        profile.push(price + 1.0, price - 1.0, price, 1.0)
    assert profile.histogram() == [100_000_000, 100_000_000]  # float64 bins, exact
    volumes = [90_000_001.0, 90_000_003.0, 1e-8]
    for volume in volumes:
        profile.push(101.0, 100.0, 100.5, volume)  # bin 0, inside the same range
    units = [round(v * 1e8) for v in volumes]
    low_bin = 100_000_000 + sum(units)
    assert low_bin > 2**53 and float(low_bin) != low_bin
    assert profile.histogram() == [low_bin, 100_000_000]
    assert profile.value_area() == (99.0, 101.5, 0)


def test_volume_profile_stays_exact_beyond_float_integers() -> None:
    """Volumes whose units pass 2**53 (where float64 sums round) are summed exactly."""
    profile = VolumeProfile(4, 2, 0.7)
    volumes = [90_000_001.0, 90_000_003.0, 1e-8, 90_000_007.0]  # ~9e15 units, and 1 unit
    prices = [100.0, 100.5, 101.0, 103.0]  # bins 0, 0, 0, 1 of [99, 104]
    for price, volume in zip(prices, volumes, strict=True):
        profile.push(price + 1.0, price - 1.0, price, volume)
    units = [round(v * 1e8) for v in volumes]
    low_bin = units[0] + units[1] + units[2]
    assert low_bin > 2**53 and float(low_bin) != low_bin  # a float64 sum would round it
    assert profile.histogram() == [low_bin, units[3]]


def test_volume_profile_takes_a_typical_price_outside_the_candles_range_as_the_loop_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A malformed candle (close outside low..high) puts its typical price outside the window's
    range: the vectorised rebuild must give the loop's histogram, not fail or differ."""
    candles = [(101.0, 99.0, 100.0, 1.0), (102.0, 100.0, 101.0, 2.0), (103.0, 101.0, 102.0, 3.0)]
    for malformed in ((101.0, 100.0, 90.0, 4.0), (101.0, 100.0, 120.0, 5.0)):
        profiles = VolumeProfile(4, 5, 0.7), VolumeProfile(4, 5, 0.7)
        for profile in profiles:
            for high, low, close, volume in (*candles, malformed):
                profile.push(high, low, (high + low + close) / 3.0, volume)
        vectorised, plain = profiles
        with monkeypatch.context() as patch:
            patch.setattr(indicators, "_EXACT_FLOAT_INT", 0)  # always the loop
            expected = plain.histogram(), plain.value_area()
        assert (vectorised.histogram(), vectorised.value_area()) == expected
        assert sum(expected[0] or []) == sum(round(c[3] * 1e8) for c in (*candles, malformed))


def test_volume_profile_loads_numba_only_when_a_profile_is_first_built() -> None:
    """Listing or configuring strategies (`trading strategies list`) does not pay numba's
    ~0.5 s import; the first histogram does."""
    script = (
        "import sys\n"
        "from strategy_engine.plugin_loader import load_strategy\n"
        "from shared.indicators import VolumeProfile\n"
        "load_strategy('volume_profile')\n"
        "profile = VolumeProfile(2, 2, 0.7)\n"
        "profile.push(2.0, 1.0, 1.5, 1.0)\n"
        "print('numba' in sys.modules)\n"
        "profile.histogram()\n"
        "print('numba' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["False", "True"]
