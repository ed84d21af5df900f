"""Check raw candle rows and turn them into exact, typed columns.

The checks run on whole columns with numpy, on float64 copies of the prices. A float
comparison can only be trusted one way: correctly rounded conversion is monotonic, so
`float(a) < float(b)` proves `a < b`, but two different decimals may round to the same
float. Rows where the floats tie are therefore re-checked with `Decimal` on the original
text, so the verdict is exact while the common case stays vectorised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shared.candle_io.errors import CandleFileError
from shared.candle_io.readers import REQUIRED_COLUMNS, RawBatch
from shared.gc_pause import no_cyclic_gc
from shared.models import Candle, interval_delta

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

US_PER_MS = 1_000
# Binance's archives switched to microsecond times in 2025. A millisecond time this large
# would be past the year 5000, so magnitude tells the unit apart value by value.
MICROSECOND_THRESHOLD = 10**14
# Binance's weekly candles open on Mondays; 1970-01-01 was a Thursday.
WEEK_GRID_OFFSET_US = 4 * 86_400 * 1_000_000
PRICE_COLUMNS = ("open", "high", "low", "close")


@dataclass(frozen=True)
class CandleBatch:
    """Validated rows: times in ms since the epoch (on the grid), numbers as the file's text.

    The values stay Arrow arrays (strings, exactly as written; trades as int64) so a batch
    can go to the database without a Python object per value.
    """

    open_time_ms: IntArray
    open: pa.Array
    high: pa.Array
    low: pa.Array
    close: pa.Array
    volume: pa.Array
    quote_volume: pa.Array | None
    trades: pa.Array | None

    def __len__(self) -> int:
        return len(self.open)

    def open_times(self) -> list[datetime]:
        """UTC open times. Every grid is whole seconds, so `fromtimestamp` is exact here."""
        return [datetime.fromtimestamp(ms // 1000, UTC) for ms in self.open_time_ms.tolist()]

    def to_candles(self, symbol: str, interval: str) -> list[Candle]:
        """The rows as `Candle` models (validated once more by pydantic; ~10 µs a row)."""
        size = len(self)
        quote_volumes = (
            [None] * size if self.quote_volume is None else self.quote_volume.to_pylist()
        )
        trades = [None] * size if self.trades is None else self.trades.to_pylist()
        return [
            Candle(
                symbol=symbol,
                interval=interval,
                open_time=open_time,
                open=Decimal(o),
                high=Decimal(h),
                low=Decimal(lo),
                close=Decimal(c),
                volume=Decimal(v),
                quote_volume=None if q is None else Decimal(q),
                trades=t,
            )
            for open_time, o, h, lo, c, v, q, t in zip(
                self.open_times(),
                self.open.to_pylist(),
                self.high.to_pylist(),
                self.low.to_pylist(),
                self.close.to_pylist(),
                self.volume.to_pylist(),
                quote_volumes,
                trades,
                strict=True,
            )
        ]

    def candles(self, symbol: str, interval: str) -> list[Candle]:
        """The rows as `Candle` models, equal to `to_candles` but several times faster.

        Every value has been checked by `CandleValidator` already and is converted exactly
        here (the file's text to `Decimal`, milliseconds to a UTC datetime), so the models
        are built without a second validation; the first row still goes through pydantic,
        which checks `symbol` and `interval` for all of them.
        """
        size = len(self)
        if size == 0:
            return []
        quote_volumes = (
            [None] * size if self.quote_volume is None else self.quote_volume.to_pylist()
        )
        trades = [None] * size if self.trades is None else self.trades.to_pylist()
        rows = zip(
            self.open_times(),
            self.open.to_pylist(),
            self.high.to_pylist(),
            self.low.to_pylist(),
            self.close.to_pylist(),
            self.volume.to_pylist(),
            quote_volumes,
            trades,
            strict=True,
        )
        build, exact = _trusted_candle, Decimal
        with no_cyclic_gc():
            result = [
                build(
                    {
                        "symbol": symbol,
                        "interval": interval,
                        "open_time": open_time,
                        "open": exact(o),
                        "high": exact(h),
                        "low": exact(lo),
                        "close": exact(c),
                        "volume": exact(v),
                        "quote_volume": None if q is None else exact(q),
                        "trades": t,
                        "closed": True,
                    }
                )
                for open_time, o, h, lo, c, v, q, t in rows
            ]
        first = result[0].__dict__
        result[0] = Candle.model_validate({k: first[k] for k in _FIELDS_SET})
        return result


# As if built by `Candle(...)` from a file's row: `closed` keeps its default.
_FIELDS_SET = frozenset(Candle.model_fields) - {"closed"}
_new_object = object.__new__
_set_slot = object.__setattr__


def _trusted_candle(values: dict[str, Any]) -> Candle:
    """A `Candle` of already-checked, already-typed values, without pydantic validation.

    What `Candle.model_construct` does, less its generic work (defaults, aliases, extra
    fields): it costs about twice this per row, and a backtest builds 100,000s of rows.
    """
    candle = _new_object(Candle)
    _set_slot(candle, "__dict__", values)
    _set_slot(candle, "__pydantic_fields_set__", set(_FIELDS_SET))
    _set_slot(candle, "__pydantic_extra__", None)
    _set_slot(candle, "__pydantic_private__", None)
    return candle


@dataclass
class _Problem:
    index: int
    message: str


class _Problems:
    """Collects each check's first failing row; the earliest row in the batch wins."""

    def __init__(self) -> None:
        self.first: _Problem | None = None

    def add(self, index: int, message: str | Callable[[], str]) -> None:
        if self.first is None or index < self.first.index:
            text = message() if callable(message) else message
            self.first = _Problem(index, text)

    def add_first(self, bad: BoolArray, message: Callable[[int], str]) -> None:
        hits = np.flatnonzero(bad)
        if hits.size:
            index = int(hits[0])
            self.add(index, lambda: message(index))

    def bound(self) -> int:
        """Rows at or after this index cannot change the verdict any more."""
        return self.first.index if self.first is not None else np.iinfo(np.int64).max


def _iso(us: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    if us % 1_000_000 == 0:
        timespec = "seconds"
    elif us % 1000 == 0:
        timespec = "milliseconds"
    else:
        timespec = "microseconds"
    text = moment.isoformat(timespec=timespec)
    return text.replace("+00:00", "Z")


def _strings(array: pa.Array) -> pa.Array:
    """The column as text: the file's own for CSV, the shortest round trip for Parquet floats."""
    return array if pa.types.is_string(array.type) else pc.cast(array, pa.string())


# Arrow's own to_numpy()/np.asarray()/pa.array()/pa.scalar() import pandas when it is
# installed (seconds on a cold start, more than the whole check); these read the buffers.


def _valid(array: pa.Array) -> BoolArray:
    """Which entries are not null, as numpy bools."""
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return _unpack_bits(array.buffers()[0], array.offset, len(array))


def _unpack_bits(buffer: pa.Buffer, offset: int, size: int) -> BoolArray:
    bits = np.unpackbits(
        np.frombuffer(buffer, dtype=np.uint8), count=offset + size, bitorder="little"
    )
    return bits[offset:].astype(bool)


def _bools(array: pa.Array) -> BoolArray:
    """A boolean array's values (a null reads as False)."""
    return _unpack_bits(array.buffers()[1], array.offset, len(array)) & _valid(array)


def _fixed(array: pa.Array, dtype: type[np.generic], null: float) -> npt.NDArray[Any]:
    """An int64 or float64 array's values as a numpy copy, with `null` where it is null."""
    values = np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * 8
    )
    return np.where(_valid(array), values, null) if array.null_count else values.copy()


def _indices(positions: IntArray) -> pa.Array:
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(positions), [None, pa.py_buffer(positions)])


def _text(strings: pa.Array, index: int) -> str | None:
    return strings[index].as_py()  # type: ignore[no-any-return]


def _float(text: str | None) -> float:
    try:
        return float(Decimal(text)) if text is not None else np.nan
    except (InvalidOperation, ValueError):
        return np.nan


def _numeric(name: str, array: pa.Array, strings: pa.Array, problems: _Problems) -> FloatArray:
    """Float copies of a numeric column; text that is no number is reported."""
    try:
        values = pc.cast(array, pa.float64())
        floats = _fixed(values, np.float64, np.nan)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        floats = np.array([_float(text) for text in strings.to_pylist()], dtype=np.float64)
    bad = ~np.isfinite(floats) & _valid(array)
    for index in np.flatnonzero(bad)[:1].tolist():
        problems.add(index, f"{name} {_text(strings, index)!r} is not a number")
    return floats


def _whole_numbers(name: str, array: pa.Array, problems: _Problems) -> tuple[IntArray, BoolArray]:
    """Integer column (times, trade counts) and its validity mask; junk is reported."""
    valid = _valid(array)
    if pa.types.is_timestamp(array.type):
        # Sub-microsecond digits are dropped: no kline grid is that fine.
        as_us = pc.cast(array.cast(pa.timestamp("us", tz=array.type.tz), safe=False), pa.int64())
        return _fixed(as_us, np.int64, 0), valid
    try:
        ints = pc.cast(array, pa.int64())
        return _fixed(ints, np.int64, 0), valid
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values: list[int] = []
    for index, text in enumerate(_strings(array).to_pylist()):
        try:
            values.append(0 if text is None else int(text))
        except ValueError:
            problems.add(index, f"{name} {text!r} is not a whole number")
            values.append(0)
    return np.array(values, dtype=np.int64), valid


def _exact_violation(
    loose: BoolArray, tie: BoolArray, left: pa.Array, right: pa.Array
) -> BoolArray:
    """`loose` (float-proven violations) plus the tied rows where Decimal(left) < Decimal(right).

    Identical text is equal, so only tied rows whose text differs need a Decimal.
    """
    result = loose.copy()
    equal = pc.equal(left, right)
    same_text = _bools(equal) | ~_valid(equal)
    for index in np.flatnonzero(tie & ~same_text).tolist():
        a, b = _text(left, index), _text(right, index)
        if a is not None and b is not None and Decimal(a) < Decimal(b):
            result[index] = True
    return result


def _exactly_zero_or_less(strings: pa.Array, floats: FloatArray, strict: bool) -> BoolArray:
    """Rows below zero (or at/below zero with `strict`); a float 0 may be a tiny decimal."""
    result = floats < 0
    for index in np.flatnonzero(floats == 0).tolist():
        text = _text(strings, index)
        if text is not None:
            value = Decimal(text)
            result[index] = value <= 0 if strict else value < 0
    return result


class CandleValidator:
    """Validates one file's batches in order; remembers the last time to check ordering."""

    def __init__(self, path: Path, interval: str) -> None:
        self.path = path
        self.interval = interval
        self.step_us = int(interval_delta(interval) / timedelta(microseconds=1))
        self.grid_offset_us = WEEK_GRID_OFFSET_US if interval == "1w" else 0
        self.previous_open_us: int | None = None

    def validate(self, raw: RawBatch) -> CandleBatch:
        """Check every row of `raw`; raise `CandleFileError` at the first bad row."""
        columns = raw.columns
        locations = np.arange(raw.first_location, raw.first_location + raw.num_rows)
        present = np.zeros(raw.num_rows, dtype=bool)
        for array in columns.values():
            present |= _valid(array)
        if not present.all():
            # Blank lines carry no candle; they are skipped but keep their line numbers.
            keep = _indices(np.flatnonzero(present))
            columns = {name: array.take(keep) for name, array in columns.items()}
            locations = locations[present]
        problems = _Problems()
        batch = self._check(columns, problems)
        if problems.first is not None:
            location = f"{raw.location_word} {int(locations[problems.first.index])}"
            raise CandleFileError(self.path, problems.first.message, location)
        assert batch is not None
        if len(batch):
            self.previous_open_us = int(batch.open_time_ms[-1]) * US_PER_MS
        return batch

    def _check(self, columns: dict[str, pa.Array], problems: _Problems) -> CandleBatch | None:
        for name in REQUIRED_COLUMNS:
            nulls = np.flatnonzero(~_valid(columns[name]))
            if nulls.size:
                problems.add(int(nulls[0]), f"{name} is empty")

        raw_open, _ = _whole_numbers("open_time", columns["open_time"], problems)
        open_us = self._to_us(columns["open_time"], raw_open)
        texts = {name: _strings(columns[name]) for name in (*PRICE_COLUMNS, "volume")}
        floats = {
            name: _numeric(name, columns[name], texts[name], problems)
            for name in (*PRICE_COLUMNS, "volume")
        }
        self._check_values(texts, floats, problems)
        self._check_times(open_us, problems)
        if "close_time" in columns:
            self._check_close_times(columns["close_time"], open_us, problems)
        quote_volume = self._optional_amounts(columns.get("quote_volume"), problems)
        trades = self._optional_counts(columns.get("trades"), problems)
        if problems.first is not None:
            return None
        return CandleBatch(
            open_time_ms=open_us // US_PER_MS,
            open=texts["open"],
            high=texts["high"],
            low=texts["low"],
            close=texts["close"],
            volume=texts["volume"],
            quote_volume=quote_volume,
            trades=trades,
        )

    @staticmethod
    def _to_us(array: pa.Array, values: IntArray) -> IntArray:
        if pa.types.is_timestamp(array.type):
            return values
        return np.where(values >= MICROSECOND_THRESHOLD, values, values * US_PER_MS)

    def _check_values(
        self,
        texts: dict[str, pa.Array],
        floats: dict[str, FloatArray],
        problems: _Problems,
    ) -> None:
        o, h, lo, c, v = (floats[name] for name in ("open", "high", "low", "close", "volume"))

        def compared(left: str, verb: str, right: str) -> Callable[[int], str]:
            return lambda i: (
                f"{left} {_text(texts[left], i)} is {verb} {right} {_text(texts[right], i)}"
            )

        def alone(name: str, verdict: str) -> Callable[[int], str]:
            return lambda i: f"{name} {_text(texts[name], i)} is {verdict}"

        for name in PRICE_COLUMNS:
            not_positive = _exactly_zero_or_less(texts[name], floats[name], strict=True)
            problems.add_first(not_positive, alone(name, "not above 0"))
        negative = _exactly_zero_or_less(texts["volume"], v, strict=False)
        problems.add_first(negative, alone("volume", "negative"))

        for name, other in (("open", o), ("close", c)):
            below = _exact_violation(h < other, h == other, texts["high"], texts[name])
            problems.add_first(below, compared("high", "below", name))
            above = _exact_violation(other < lo, other == lo, texts[name], texts["low"])
            problems.add_first(above, compared("low", "above", name))

    def _check_times(self, open_us: IntArray, problems: _Problems) -> None:
        off_grid = (open_us - self.grid_offset_us) % self.step_us != 0
        rule = (
            "1w candles open on Mondays at 00:00 UTC"
            if self.interval == "1w"
            else f"{self.interval} candles open at whole multiples of {self.interval} since "
            "1970-01-01"
        )
        problems.add_first(
            off_grid,
            lambda i: (
                f"open_time {_iso(int(open_us[i]))} is not on the {self.interval} grid "
                f"({rule}): is the interval right?"
            ),
        )
        previous = np.empty_like(open_us)
        previous[1:] = open_us[:-1]
        previous[:1] = self.previous_open_us if self.previous_open_us is not None else -(2**62)
        problems.add_first(
            open_us <= previous,
            lambda i: (
                f"open_time {_iso(int(open_us[i]))} does not come after the previous "
                f"row's {_iso(int(previous[i]))} (rows must be sorted by time, without repeats)"
            ),
        )

    def _check_close_times(self, array: pa.Array, open_us: IntArray, problems: _Problems) -> None:
        values, valid = _whole_numbers("close_time", array, problems)
        close_us = self._to_us(array, values)
        # Binance closes a candle one tick before the next opens, or earlier when trading
        # halted mid-candle; a close time past the interval means the interval is wrong.
        outside = valid & ((close_us < open_us) | (close_us >= open_us + self.step_us))
        problems.add_first(
            outside,
            lambda i: (
                f"close_time {_iso(int(close_us[i]))} is outside the {self.interval} "
                f"candle opening at {_iso(int(open_us[i]))}: is the interval right?"
            ),
        )

    @staticmethod
    def _optional_amounts(array: pa.Array | None, problems: _Problems) -> pa.Array | None:
        if array is None or array.null_count == len(array):
            return None
        strings = _strings(array)
        floats = _numeric("quote_volume", array, strings, problems)
        negative = np.flatnonzero(floats < 0)
        if negative.size:
            index = int(negative[0])
            problems.add(index, f"quote_volume {_text(strings, index)} is negative")
        return strings

    @staticmethod
    def _optional_counts(array: pa.Array | None, problems: _Problems) -> pa.Array | None:
        if array is None or array.null_count == len(array):
            return None
        values, valid = _whole_numbers("trades", array, problems)
        negative = np.flatnonzero(valid & (values < 0))
        if negative.size:
            index = int(negative[0])
            problems.add(index, f"trades {int(values[index])} is negative")
        if problems.first is not None:
            return None  # the batch is rejected; a junk column may not even cast
        return pc.cast(array, pa.int64())
