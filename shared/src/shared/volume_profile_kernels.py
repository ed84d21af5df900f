"""Compiled (numba) inner loops of `shared.indicators.VolumeProfile`.

The volume profile's value area is a walk of up to num_bins steps on every candle; in Python
that walk was most of the strategy's time (~3 µs of ~7 µs a candle with 50 bins). These
kernels run the same steps on a float64 histogram whose bins hold whole volume units below
2**53, where float64 adds, subtracts and compares integers exactly, so they give the very
numbers the Python code gives (`VolumeProfile` keeps the Python path for larger volumes, and
the tests hold both to each other).

Bins are 1..n of the histogram; entries 0 and n + 1 are -1 sentinels, so a walk never takes
them while a real bin (≥ 0) is on the other side. A bin index is computed as the Python code
does, int() truncating toward zero, then clamped: the window's high itself (k = n) goes to
the top bin and a typical price below the window's low (a malformed candle) to the bottom.

Imported by a `VolumeProfile`'s first histogram, so that listing or configuring strategies
does not load numba (~0.5 s); `cache=True` keeps the compiled code beside this file for the
next process (numba falls back to a per-user cache folder where this one is read-only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit


def bin_of(typical: float, lo: float, scale: float, n: int) -> int:
    """The histogram index (1..n) of a typical price."""
    k = int((typical - lo) * scale)
    if k < 0:
        return 1
    if k >= n:
        return n
    return k + 1


def grow_value_area(hist: np.ndarray | Sequence[int], poc: int, target: float) -> tuple[int, int]:
    """(first, last): the value area's first and last bins, grown from the POC one bin at a
    time towards the larger neighbour (the lower one on a tie) until it holds `target` units.

    Plain Python, for a list of Python ints (volumes beyond float64's exact integers) or
    compiled below for the float64 histogram: one definition of the walk for both.
    """
    acc = hist[poc]
    first = poc
    last = poc
    below = hist[first - 1]
    above = hist[last + 1]
    while acc < target:
        if above > below:
            acc += above
            last += 1
            above = hist[last + 1]
        else:
            acc += below
            first -= 1
            below = hist[first - 1]
    return first, last


def value_area_edges(first: int, last: int, lo: float, hi: float, n: int) -> tuple[float, float]:
    """(VAL, VAH) of the value area of bins first..last (1..n) over lo..hi: VAL the low edge
    of its first bin, VAH the high edge of its last (hi itself for the top bin)."""
    width = (hi - lo) / n
    return lo + (first - 1) * width, (hi if last == n else lo + last * width)


_bin_of = njit(cache=True, nogil=True)(bin_of)
_grow_value_area = njit(cache=True, nogil=True)(grow_value_area)
_value_area_edges = njit(cache=True, nogil=True)(value_area_edges)


@njit(cache=True, nogil=True)
def move_volume(
    hist: np.ndarray,
    lo: float,
    scale: float,
    added_typical: float,
    added_units: float,
    removed_typical: float,
    removed_units: float,
) -> None:
    """Add a candle's volume units to its bin and take an evicted candle's (if any: units
    > 0) from its own."""
    n = hist.shape[0] - 2
    hist[_bin_of(added_typical, lo, scale, n)] += added_units
    if removed_units != 0.0:
        hist[_bin_of(removed_typical, lo, scale, n)] -= removed_units


@njit(cache=True, nogil=True)
def rebuild(
    hist: np.ndarray, typicals: np.ndarray, units: np.ndarray, count: int, lo: float, scale: float
) -> None:
    """Fill `hist` from the first `count` candles of the window's ring arrays."""
    n = hist.shape[0] - 2
    hist[:] = 0.0
    hist[0] = -1.0
    hist[n + 1] = -1.0
    for i in range(count):
        hist[_bin_of(typicals[i], lo, scale, n)] += units[i]


@njit(cache=True, nogil=True)
def value_area(hist: np.ndarray, target: float, lo: float, hi: float) -> tuple[float, float, int]:
    """(VAL, VAH, POC bin index 0..n − 1) of the float64 histogram of the range lo..hi;
    POC: the fullest bin, the lowest on a tie."""
    n = hist.shape[0] - 2
    poc = 1 + int(np.argmax(hist[1:-1]))  # argmax gives the first of equal maxima
    first, last = _grow_value_area(hist, poc, target)
    val, vah = _value_area_edges(first, last, lo, hi, n)
    return val, vah, poc - 1
