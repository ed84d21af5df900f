"""The event loop of the services and the exchange simulator: uvloop where it is installed."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop's loop (plain asyncio where uvloop is absent).

    uvloop (libuv, in C) does a loop iteration and a socket read or write in a fraction of
    the pure-Python selector loop's CPU: a Redis round trip through redis-py cost ~87 µs of
    CPU on it against ~122 µs on the 2-vCPU CI machine (hot, measured once with a throwaway
    script; the pipeline numbers it helped are bench/bench_pipeline.py's, docs/BENCHMARKS.md).
    The services pass every event through a few such round trips on two shared cores, so this
    is CPU off the candle → order path and off everything competing with it. Same asyncio
    API: nothing else changes.
    """
    try:
        import uvloop
    except ImportError:  # e.g. Windows, where uvloop is not built: the standard loop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
