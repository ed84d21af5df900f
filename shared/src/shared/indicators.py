"""Incremental indicators with TA-Lib's definitions, in floats, O(1) a value.

Each `update` takes the next input and returns the indicator's value, or None while it is not
yet defined. The first defined value lands on the same input index as TA-Lib's first output,
and the arithmetic follows TA-Lib's order of operations, so the values equal TA-Lib's to
rounding (see ../shared/TALIB.md). Money stays Decimal outside; these are the float insides
of the strategies, kept lean because the backtester calls them once per candle.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from math import inf, sqrt

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


class SessionVwap:
    """VWAP of typical prices weighted by volume, accumulated from 00:00 UTC and reset there.

    `update(open_time, price, volume)` returns the VWAP including this candle, or None while
    the session's cumulative volume is 0. `session_candles` counts the candles of the current
    UTC day taken so far (1 on a new day's first candle).
    """

    __slots__ = ("_session_end", "_sum_pv", "_sum_v", "session_candles", "value")

    def __init__(self) -> None:
        self._session_end: datetime | None = None
        self._sum_pv = 0.0
        self._sum_v = 0.0
        self.session_candles = 0
        self.value: float | None = None

    def update(self, open_time: datetime, price: float, volume: float) -> float | None:
        end = self._session_end
        if end is None or open_time >= end:
            day = open_time.astimezone(UTC).date()
            self._session_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
                days=1
            )
            self._sum_pv = 0.0
            self._sum_v = 0.0
            self.session_candles = 0
        self.session_candles += 1
        self._sum_pv += price * volume
        sum_v = self._sum_v + volume
        self._sum_v = sum_v
        value = self._sum_pv / sum_v if sum_v > 0.0 else None
        self.value = value
        return value


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
    """

    __slots__ = (
        "_count",
        "_highs",
        "_hist",
        "_lows",
        "_poc",
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
        self.lookback = lookback
        self.num_bins = num_bins
        self.value_area_pct = value_area_pct
        self._window: deque[tuple[float, int]] = deque()
        # (index, value) of the candidates for the window's highest high / lowest low
        self._highs: deque[tuple[int, float]] = deque()
        self._lows: deque[tuple[int, float]] = deque()
        # bins 1..num_bins; entries 0 and num_bins + 1 are -1 sentinels for the value area
        self._hist = [-1] * (num_bins + 2)
        # The window again, as arrays (slot = candle index mod lookback) for the vectorised
        # rebuild; units as float64 weights, exact while the window's total is below 2**53.
        self._ring_typical = np.zeros(lookback)
        self._ring_units = np.zeros(lookback)
        self._valid = False  # whether _hist is the histogram of the current window and range
        self._poc = -1  # the POC's index in _hist while _valid, or -1: to be found again
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
        if evicted is None:
            self._total += units
        else:
            self._total += units - evicted[1]
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
        n = self.num_bins
        scale = self._scale
        k = int((typical - lo) * scale)
        added = (k if k < n else n - 1) + 1 if k >= 0 else 1
        hist[added] += units
        # The POC follows a bin that grew past it (the lower bin on a tie); only a shrinking
        # POC has to be searched for again (amortised: ~1 candle in 10 on 1m BTCUSDT).
        poc = self._poc
        if poc >= 0 and (hist[added] > hist[poc] or (hist[added] == hist[poc] and added < poc)):
            self._poc = added
        if evicted is not None:
            k = int((evicted[0] - lo) * scale)
            removed = (k if k < n else n - 1) + 1 if k >= 0 else 1
            hist[removed] -= evicted[1]
            if removed == self._poc:
                self._poc = -1

    def _rebuild(self) -> list[int]:
        n = self.num_bins
        lo = self.lo
        scale = n / (self.hi - lo)
        self._scale = scale
        hist = self._rebuild_vectorised(lo, scale) if self._total < _EXACT_FLOAT_INT else None
        if hist is None:
            hist = [0] * (n + 2)
            hist[0] = hist[n + 1] = -1
            for typical, units in self._window:
                k = int((typical - lo) * scale)
                hist[(k if k < n else n - 1) + 1 if k >= 0 else 1] += units
        self._hist = hist
        self._valid = True
        self._poc = -1
        return hist

    def _rebuild_vectorised(self, lo: float, scale: float) -> list[int]:
        """The same histogram with numpy (~2× faster for 100 candles than the loop).

        Bin indices: the same IEEE subtraction and multiplication, truncated as `int()` does,
        so every candle lands in the same bin. Sums: float64 weights are exact integers while
        every partial sum is below 2**53, which the caller ensures through the window's total
        (all units are ≥ 0). Indices are clamped to the bins as in `push`: from n up (the
        window's high itself) into the top bin, below 0 (a malformed candle) into the bottom.
        """
        count = len(self._window)
        typical = self._ring_typical if count == self.lookback else self._ring_typical[:count]
        units = self._ring_units if count == self.lookback else self._ring_units[:count]
        bins = ((typical - lo) * scale).astype(np.intp)
        n = self.num_bins
        try:
            counted = np.bincount(bins, weights=units, minlength=n)
        except ValueError:  # a negative index: clamp it to the bottom bin, as push does
            counted = np.bincount(np.maximum(bins, 0), weights=units, minlength=n)
        sums = counted.astype(np.int64).tolist()
        if len(sums) > n:
            sums[n - 1] += sum(sums[n:])
            del sums[n:]
        return [-1, *sums, -1]

    def histogram(self) -> list[int] | None:
        """Volume units per bin, or None when the window is empty or flat (hi == lo)."""
        if not self._window or self.hi <= self.lo:
            return None
        hist = self._hist if self._valid else self._rebuild()
        return hist[1:-1]

    def value_area(self) -> tuple[float, float, int] | None:
        """(VAL, VAH, POC bin index) of the window; None without volume or price range."""
        return self.value_area_unless_inside(-inf, inf)

    def value_area_unless_inside(self, low: float, high: float) -> tuple[float, float, int] | None:
        """`value_area()`, or None as soon as the value area is sure to reach strictly below
        `low` and strictly above `high` (VAL < low and high < VAH).

        The value area only grows while it is built, so once both hold they hold for the
        final one, and the rest of the walk is skipped: a candle well inside the value area
        (most candles) costs a few steps instead of the whole walk. Otherwise the result is
        exactly `value_area()`'s.
        """
        total = self._total
        if total <= 0 or self.hi <= self.lo or not self._window:
            return None
        hist = self._hist if self._valid else self._rebuild()
        poc = self._poc
        if poc < 0:
            poc = self._poc = hist.index(max(hist))
        n = self.num_bins
        lo = self.lo
        hi = self.hi
        width = (hi - lo) / n
        # A cheap test in bin indices first (hist bins are 1..n): the value area surely
        # reaches below `low` once its first bin is a bin under the one `low` falls in, and
        # above `high` once its last bin is past the one above `high`'s; the edges are then
        # compared exactly before giving up, so float rounding can only delay the exit.
        scale = self._scale
        x_low = (low - lo) * scale
        x_high = (high - lo) * scale
        below_low = int(x_low) if x_low >= 1.0 else 0
        above_high = int(x_high) + 2 if x_high < n - 1 else n + 1
        target = self.value_area_pct * total
        if target > total:  # float rounding must not ask for more than there is
            target = total
        acc = hist[poc]
        first = last = poc
        below = hist[first - 1]
        above = hist[last + 1]
        while acc < target:
            if (
                first <= below_low
                and last >= above_high
                and lo + (first - 1) * width < low
                and (hi if last == n else lo + last * width) > high
            ):
                return None  # VAL and VAH only move outwards from here
            if above > below:
                acc += above
                last += 1
                above = hist[last + 1]
            else:
                acc += below
                first -= 1
                below = hist[first - 1]
        val = lo + (first - 1) * width
        vah = hi if last == n else lo + last * width
        if val < low and high < vah:
            return None
        return val, vah, poc - 1
