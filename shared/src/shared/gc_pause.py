"""Pausing Python's cycle collector around loops that make many objects but no cycles."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["no_cyclic_gc"]


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause the cycle collector for the block (restored as it was, also on errors).

    Every few hundred new objects start a collection, and the older collections walk every
    container object alive: with tens of thousands of candle models around, that walking is
    a large share of a loop that only makes short-lived, acyclic objects. Use it only around
    code that forms no reference cycles, so that nothing is left for the collector later.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
