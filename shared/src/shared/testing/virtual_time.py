"""Virtual time for code that takes an injectable ``clock`` and ``sleep``.

With ``auto_advance=True`` every ``sleep(d)`` moves the clock forward by ``d`` at once, so a
retry loop with minutes of backoff runs in microseconds while seeing the delays it asked for
(recorded in ``sleeps``). With ``auto_advance=False`` a sleeper waits until the test moves the
clock past its wake-up time with ``advance``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class VirtualTime:
    """An injectable clock (`now`) and sleep (`sleep`) on virtual seconds."""

    def __init__(self, start: float = 1000.0, *, auto_advance: bool = True) -> None:
        self._now = start
        self.auto_advance = auto_advance
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._sleeper_added = asyncio.Event()

    def now(self) -> float:
        """The virtual time, in seconds (pass as ``clock=``)."""
        return self._now

    __call__ = now

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` virtual seconds (pass as ``sleep=``)."""
        self.sleeps.append(delay)
        if self.auto_advance:
            self._now += max(delay, 0.0)
            await asyncio.sleep(0)
            return
        wake_at = self._now + max(delay, 0.0)
        if wake_at <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (wake_at, next(self._order), future))
        self._sleeper_added.set()
        await future

    @property
    def sleeping(self) -> int:
        """How many sleepers wait for the clock to move (manual mode)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def wait_for_sleeper(self, within: float = 10.0) -> None:
        """Wait until something is asleep on this clock (manual mode)."""
        async with asyncio.timeout(within):
            while not self.sleeping:
                self._sleeper_added.clear()
                await self._sleeper_added.wait()

    async def advance(self, seconds: float) -> None:
        """Move the clock forward and let every sleeper that is now due run."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        # Give the woken tasks a few turns of the loop to act on the new time.
        for _ in range(5):
            await asyncio.sleep(0)
