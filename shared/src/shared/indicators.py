"""Incremental indicators with TA-Lib's definitions, in floats, O(1) a value.

Each `update` takes the next input and returns the indicator's value, or None while it is not
yet defined. The first defined value lands on the same input index as TA-Lib's first output,
and the arithmetic follows TA-Lib's order of operations, so the values equal TA-Lib's to
rounding (see ../shared/TALIB.md). Money stays Decimal outside; these are the float insides
of the strategies, kept lean because the backtester calls them once per candle.
"""

from __future__ import annotations

from collections import deque
from math import sqrt
from types import ModuleType

import numpy as np

_TA_ZERO = 1e-14  # TA-Lib's TA_IS_ZERO threshold
_EXACT_FLOAT_INT = 2**53  # float64 holds every integer below this exactly


class Ema:
    """EMA(period), alpha = 2/(period+1), seeded with the SMA of its first `period` inputs.

    First value on input index period − 1, as TA-Lib's EMA.
    """

    __slots__ = ("_count", "_sum", "alpha", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"EMA period must be at least 1, got {period}")
        self.period = period
        self.alpha = 2.0 / (period + 1)
        self.value: float | None = None
        self._count = 0
        self._sum = 0.0

    def update(self, x: float) -> float | None:
        value = self.value
        if value is not None:
            value = (x - value) * self.alpha + value
            self.value = value
            return value
        self._count += 1
        self._sum += x
        if self._count == self.period:
            self.value = self._sum / self.period
        return self.value


class EmaSpread:
    """EMA(short) − EMA(long) of the same inputs, each exactly `Ema` (TA-Lib's EMA).

    Defined from the input on which both EMAs are; `short` and `long` hold their values.
    Once both are seeded their values live in plain float fields and one `update` steps both
    (one call a candle instead of two, as `Macd` does; the EMA step is `Ema.update`'s own
    expression, so the values are the same floats).
    """

    __slots__ = ("_k_long", "_k_short", "_long", "_short", "long", "short", "value")

    def __init__(self, short: int, long: int) -> None:
        self._short = Ema(short)
        self._long = Ema(long)
        self._k_short = self._short.alpha
        self._k_long = self._long.alpha
        self.short: float | None = None
        self.long: float | None = None
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        short = self.short
        long = self.long
        if short is None or long is None:
            return self._seed(x)
        short = (x - short) * self._k_short + short
        long = (x - long) * self._k_long + long
        self.short = short
        self.long = long
        value = short - long
        self.value = value
        return value

    def _seed(self, x: float) -> float | None:
        short = self._short.update(x)
        long = self._long.update(x)
        if short is None or long is None:
            return None
        self.short = short
        self.long = long
        self.value = short - long
        return self.value


class Macd:
    """MACD seeded as TA-Lib's: both EMAs start on input slow − 1.

    The slow EMA is seeded with the SMA of inputs 0 … slow−1, the fast one with the SMA of the
    `fast` inputs ending at slow − 1; the signal line is an EMA of MACD seeded with the average
    of its first `signal` values. `update` returns the histogram (MACD − signal) and sets
    `macd`, `signal`, `histogram`; all three are defined from input slow + signal − 2 on.
    """

    __slots__ = (
        "_count",
        "_fast",
        "_fast_from",
        "_fast_value",
        "_k_fast",
        "_k_signal",
        "_k_slow",
        "_signal",
        "_slow",
        "_slow_value",
        "histogram",
        "macd",
        "signal",
    )

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        if not 1 <= fast < slow:
            raise ValueError(f"MACD needs 1 <= fast < slow, got fast={fast}, slow={slow}")
        self._fast = Ema(fast)
        self._slow = Ema(slow)
        self._signal = Ema(signal)
        self._k_fast = self._fast.alpha
        self._k_slow = self._slow.alpha
        self._k_signal = self._signal.alpha
        self._fast_from = slow - fast  # the fast EMA's first input index
        self._count = 0
        self._fast_value = 0.0  # the EMAs once the signal line is defined
        self._slow_value = 0.0
        self.macd: float | None = None
        self.signal: float | None = None
        self.histogram: float | None = None

    @property
    def fast_ema(self) -> float | None:
        """The fast EMA as TA-Lib's MACD seeds it."""
        return self._fast.value if self.signal is None else self._fast_value

    @property
    def slow_ema(self) -> float | None:
        return self._slow.value if self.signal is None else self._slow_value

    def update(self, x: float) -> float | None:
        signal = self.signal
        if signal is None:
            return self._seed(x)
        # Seeded: the EMAs' values live in plain float fields here (fewer lookups a candle).
        fast = self._fast_value
        slow = self._slow_value
        fast = (x - fast) * self._k_fast + fast
        slow = (x - slow) * self._k_slow + slow
        self._fast_value = fast
        self._slow_value = slow
        macd = fast - slow
        signal = (macd - signal) * self._k_signal + signal
        self.macd = macd
        self.signal = signal
        histogram = macd - signal
        self.histogram = histogram
        return histogram

    def _seed(self, x: float) -> float | None:
        index = self._count
        self._count += 1
        slow = self._slow.update(x)
        fast = self._fast.update(x) if index >= self._fast_from else None
        if slow is None or fast is None:
            return None
        macd = fast - slow
        signal = self._signal.update(macd)
        if signal is None:
            return None
        self._fast_value = fast
        self._slow_value = slow
        self.macd = macd
        self.signal = signal
        self.histogram = macd - signal
        return self.histogram


class Rsi:
    """Wilder's RSI(period) as TA-Lib's: seeded with the simple averages of the first `period`
    gains and losses, then avg = (avg × (period − 1) + new) / period. First value on input
    index `period`. When both averages are (near) zero TA-Lib gives 0; `is_flat` says so.
    """

    __slots__ = ("_count", "_n1", "_prev", "avg_gain", "avg_loss", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"RSI period must be at least 1, got {period}")
        self.period = period
        self._n1 = float(period - 1)
        self.value: float | None = None
        self.avg_gain = 0.0
        self.avg_loss = 0.0
        self._prev: float | None = None
        self._count = 0

    @property
    def is_flat(self) -> bool:
        """True when prices did not move over the averaging window (TA-Lib then gives 0)."""
        return self.avg_gain + self.avg_loss < _TA_ZERO

    def update(self, x: float) -> float | None:
        prev = self._prev
        self._prev = x
        if self.value is None:
            return None if prev is None else self._seed(x - prev)
        change = x - prev  # type: ignore[operator]
        n = self.period
        # TA-Lib's order: avg × (n − 1), add the new gain or loss, divide by n.
        if change < 0:
            gain = self.avg_gain * self._n1 / n
            loss = (self.avg_loss * self._n1 - change) / n
        else:
            gain = (self.avg_gain * self._n1 + change) / n
            loss = self.avg_loss * self._n1 / n
        self.avg_gain = gain
        self.avg_loss = loss
        total = gain + loss
        value = 100.0 * (gain / total) if total >= _TA_ZERO else 0.0
        self.value = value
        return value

    def _seed(self, change: float) -> float | None:
        if change < 0:
            self.avg_loss -= change
        else:
            self.avg_gain += change
        self._count += 1
        if self._count < self.period:
            return None
        gain = self.avg_gain / self.period
        loss = self.avg_loss / self.period
        self.avg_gain = gain
        self.avg_loss = loss
        total = gain + loss
        value = 100.0 * (gain / total) if total >= _TA_ZERO else 0.0
        self.value = value
        return value


class BollingerBands:
    """SMA(period) ± num_std × population std, from running sums of x and x² as TA-Lib.

    `update` returns the middle band and sets `middle`, `upper`, `lower`; defined from input
    index period − 1. A variance below TA-Lib's zero threshold counts as 0.
    """

    __slots__ = ("_sum", "_sum_sq", "_window", "lower", "middle", "num_std", "period", "upper")

    def __init__(self, period: int, num_std: float) -> None:
        if period < 1:
            raise ValueError(f"Bollinger period must be at least 1, got {period}")
        self.period = period
        self.num_std = num_std
        self._window: deque[float] = deque()
        # Sums of the last period − 1 inputs: TA-Lib adds the new input, averages, then
        # drops the oldest, and the same order keeps the rounding equal to its own.
        self._sum = 0.0
        self._sum_sq = 0.0
        self.middle: float | None = None
        self.upper: float | None = None
        self.lower: float | None = None

    def update(self, x: float) -> float | None:
        total = self._sum + x
        total_sq = self._sum_sq + x * x
        window = self._window
        window.append(x)
        n = self.period
        if len(window) < n:
            self._sum = total
            self._sum_sq = total_sq
            return None
        mean = total / n
        variance = total_sq / n - mean * mean
        oldest = window.popleft()
        self._sum = total - oldest
        self._sum_sq = total_sq - oldest * oldest
        width = self.num_std * sqrt(variance) if variance >= _TA_ZERO else 0.0
        self.middle = mean
        self.upper = mean + width
        self.lower = mean - width
        return mean


def _import_volume_profile_kernels() -> ModuleType:
    from shared import volume_profile_kernels  # numba: ~0.5 s to import, so only when used

    return volume_profile_kernels


class VolumeProfile:
    """Volume by price over the last `lookback` candles, with its POC and value area.

    Bins: `num_bins` equal bins between the window's lowest low `lo` and highest high `hi`;
    a candle's whole volume goes to the bin of its typical price,
    bin = min(num_bins − 1, int((typical − lo) × (num_bins / (hi − lo)))), and 0 for a typical
    price below lo (possible only for a malformed candle whose close is below its low).
    Volumes are counted in integer units of 1e-8 (Binance's precision), so the rolling
    histogram stays exact however long it runs. POC: the fullest bin (the lowest on a tie).
    The value area starts at the POC and grows one bin at a time towards the larger
    neighbouring bin (the lower one on a tie, the only one at an edge) until it holds at
    least value_area_pct of the window's volume. VAL = lo + k_low × ((hi − lo) / num_bins);
    VAH the upper edge of its highest bin, computed the same way (hi itself for the top bin).

    `push` is O(1) amortised while the window's low and high stay put (the rolling extremes
    are monotonic deques); when either moves, the histogram is rebuilt from the window
    (O(lookback)) on the next `value_area()`, which is O(num_bins).

    The histogram is a float64 array handled by compiled kernels (`volume_profile_kernels`)
    while the window holds fewer than 2**53 units, where float64 counts whole units exactly;
    beyond that (some 90 million base units in a window) it is rebuilt as Python ints and the
    same walk runs in Python.
    """

    __slots__ = (
        "_count",
        "_highs",
        "_hist",
        "_kernels",
        "_lows",
        "_ring_typical",
        "_ring_units",
        "_scale",
        "_total",
        "_valid",
        "_window",
        "hi",
        "lo",
        "lookback",
        "num_bins",
        "value_area_pct",
    )

    UNIT = 1e8  # volume units per 1 base asset

    def __init__(self, lookback: int, num_bins: int, value_area_pct: float) -> None:
        if lookback < 1 or num_bins < 1 or not 0.0 < value_area_pct <= 1.0:
            raise ValueError("VolumeProfile needs lookback >= 1, num_bins >= 1, 0 < pct <= 1")
        # numba is imported (~0.5 s) by the first rebuild, which comes before any other use
        # of the kernels: listing or configuring strategies does not load it.
        self._kernels: ModuleType | None = None
        self.lookback = lookback
        self.num_bins = num_bins
        self.value_area_pct = value_area_pct
        self._window: deque[tuple[float, int]] = deque()
        # (index, value) of the candidates for the window's highest high / lowest low
        self._highs: deque[tuple[int, float]] = deque()
        self._lows: deque[tuple[int, float]] = deque()
        # bins 1..num_bins; entries 0 and num_bins + 1 are -1 sentinels for the value area
        self._hist: np.ndarray | list[int] = np.full(num_bins + 2, -1.0)
        # The window again, as arrays (slot = candle index mod lookback) for the compiled
        # rebuild; units as float64, exact while the window's total is below 2**53.
        self._ring_typical = np.zeros(lookback)
        self._ring_units = np.zeros(lookback)
        self._valid = False  # whether _hist is the histogram of the current window and range
        self._scale = 0.0
        self._total = 0
        self._count = 0
        self.lo = 0.0
        self.hi = 0.0

    @property
    def full(self) -> bool:
        """True once the window holds `lookback` candles."""
        return len(self._window) == self.lookback

    def push(self, high: float, low: float, typical: float, volume: float) -> None:
        """Add a candle to the window (dropping the oldest beyond `lookback`)."""
        units = round(volume * self.UNIT)
        index = self._count
        self._count = index + 1
        window = self._window
        window.append((typical, units))
        slot = index % self.lookback
        self._ring_typical[slot] = typical
        self._ring_units[slot] = units
        evicted = window.popleft() if len(window) > self.lookback else None
        oldest = index - self.lookback
        highs = self._highs
        while highs and highs[-1][1] <= high:
            highs.pop()
        highs.append((index, high))
        if highs[0][0] <= oldest:
            highs.popleft()
        lows = self._lows
        while lows and lows[-1][1] >= low:
            lows.pop()
        lows.append((index, low))
        if lows[0][0] <= oldest:
            lows.popleft()
        hi = highs[0][1]
        lo = lows[0][1]
        total = self._total + (units if evicted is None else units - evicted[1])
        self._total = total
        if not self._valid:
            self.lo = lo
            self.hi = hi
            return
        if lo != self.lo or hi != self.hi:
            self.lo = lo
            self.hi = hi
            self._valid = False  # rebuilt on demand
            return
        hist = self._hist
        if isinstance(hist, list):  # Python ints: see _rebuild
            self._move_volume_exactly(hist, typical, units, evicted)
        elif total < _EXACT_FLOAT_INT:
            removed_typical, removed_units = (0.0, 0) if evicted is None else evicted
            kernels = self._kernels
            assert kernels is not None  # loaded by the rebuild that made the histogram valid
            kernels.move_volume(
                hist, lo, self._scale, typical, float(units), removed_typical, float(removed_units)
            )
        else:
            self._valid = False  # float64 would round: rebuilt on demand as Python ints

    def _move_volume_exactly(
        self, hist: list[int], typical: float, units: int, evicted: tuple[float, int] | None
    ) -> None:
        kernels = self._kernels
        assert kernels is not None  # loaded by the rebuild that made the histogram
        bin_of = kernels.bin_of
        n = self.num_bins
        hist[bin_of(typical, self.lo, self._scale, n)] += units
        if evicted is not None:
            hist[bin_of(evicted[0], self.lo, self._scale, n)] -= evicted[1]

    def _rebuild(self) -> np.ndarray | list[int]:
        kernels = self._kernels
        if kernels is None:
            kernels = self._kernels = _import_volume_profile_kernels()
        n = self.num_bins
        lo = self.lo
        scale = n / (self.hi - lo)
        self._scale = scale
        hist: np.ndarray | list[int]
        if self._total < _EXACT_FLOAT_INT:
            hist = self._hist if isinstance(self._hist, np.ndarray) else np.empty(n + 2)
            count = len(self._window)
            kernels.rebuild(hist, self._ring_typical, self._ring_units, count, lo, scale)
        else:
            hist = [0] * (n + 2)
            hist[0] = hist[n + 1] = -1
            bin_of = kernels.bin_of
            for typical, units in self._window:
                hist[bin_of(typical, lo, scale, n)] += units
        self._hist = hist
        self._valid = True
        return hist

    def histogram(self) -> list[int] | None:
        """Volume units per bin, or None when the window is empty or flat (hi == lo)."""
        if not self._window or self.hi <= self.lo:
            return None
        hist = self._hist if self._valid else self._rebuild()
        if isinstance(hist, np.ndarray):
            return [int(units) for units in hist[1:-1].tolist()]
        return hist[1:-1]

    def value_area(self) -> tuple[float, float, int] | None:
        """(VAL, VAH, POC bin index) of the window; None without volume or price range."""
        total = self._total
        if total <= 0 or self.hi <= self.lo or not self._window:
            return None
        hist = self._hist if self._valid else self._rebuild()
        target = self.value_area_pct * total
        if target > total:  # float rounding must not ask for more than there is
            target = float(total)
        kernels = self._kernels
        assert kernels is not None  # loaded by the rebuild that made the histogram
        area: tuple[float, float, int]
        if isinstance(hist, np.ndarray):
            area = kernels.value_area(hist, target, self.lo, self.hi)
            return area
        poc = hist.index(max(hist))
        first, last = kernels.grow_value_area(hist, poc, target)
        val, vah = kernels.value_area_edges(first, last, self.lo, self.hi, self.num_bins)
        return val, vah, poc - 1
