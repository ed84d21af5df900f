"""The simulator's time: a market clock that follows the replay, and how signed requests'
timestamps are judged.

On Binance one clock does everything: `GET /api/v3/time`'s serverTime, the kline events'
`E`, an order's `transactTime`, and the clock a SIGNED request's `timestamp` is checked
against (`timestamp < serverTime + 1000` and `serverTime - timestamp <= recvWindow`, else
-1021). A replay of past candles cannot keep that single clock: its time is years behind the
wall clock and runs at the replay's pace (standing still in manual mode, 60x in `--speed 60`),
while a client signs with its own wall clock plus the offset it learned from serverTime
(ccxt's `load_time_difference`, our adapter's `sync_clock`). So the simulator splits it:

- The **market clock** (`now_ms`) is the replay's time: the current candle's open time plus
  the stages the replay has shown (each a third of the interval), moving on with the wall
  clock at the replay's speed inside a stage but never reaching the next stage (so never
  past the open candle's close time: a candle whose close time is before serverTime is
  closed, as on Binance). It is monotonic; after the last candle it stays at that candle's
  close + 1 ms. serverTime, `E`, `transactTime`, `updateTime`, avgPrice's `closeTime` use it.
- **Request timestamps** are judged against a wall-rate clock: the wall clock, or the wall
  clock plus an offset the server has handed out. Every `GET /api/v3/time` answer remembers
  its `serverTime - wall clock` (`ISSUED_OFFSETS` of them): a client that synced to it signs
  with exactly that offset and is accepted however the replay moves afterwards; a client
  that never synced signs with its wall clock and is accepted too. A timestamp that fits
  neither is refused -1021, with the reason (too old / ahead) of the nearest of them.
  Rate limits (request weight per minute, order counts) also count wall-clock time.
- **Control** (`/_sim/clock`), two different moves:
  `offset_ms` is a clock skew: the whole exchange clock runs that far ahead (serverTime and
  every clock timestamps are judged by), so a client synced before it gets -1021 until it
  resyncs and one that never syncs gets -1021 beyond its window, as with a real skew; it
  also clears any shift, so offset 0 returns to the replay's own time.
  `server_time_ms` shifts the market clock only, so that serverTime is that time now (it
  keeps following the replay from there); clients keep signing as before, since what they
  sync to afterwards includes the shift.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable

from exchange_simulator import errors, signing
from exchange_simulator.replay import Replay

ISSUED_OFFSETS = 4096
"""How many serverTime offsets handed out by /api/v3/time are remembered (oldest dropped:
a client that synced that long ago gets -1021 once and resyncs)."""


class ExchangeClock:
    """The market clock of `replay` and the judge of signed requests' timestamps."""

    def __init__(
        self,
        replay: Replay,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._replay = replay
        self._wall = wall
        self._monotonic = monotonic
        self.skew_ms = 0  # clock skew: the market clock and request clocks alike
        self.shift_ms = 0  # the market clock only (serverTime set explicitly)
        self._rate_ms_per_s = 0.0  # replay milliseconds per wall second inside a stage
        self._stage_started = monotonic()
        self._last_replay_ms = replay.stage_time_ms
        self._issued: deque[int] = deque()
        self._issued_sorted: list[int] = []

    # --- the market clock ------------------------------------------------------------

    def pace(self, speed: float) -> None:
        """Let the clock run on inside a stage at `speed` times real time (0: stand still
        until the replay moves, as in manual and as-fast-as-consumed pace)."""
        self._rate_ms_per_s = max(0.0, speed) * 1000.0

    def replay_moved(self) -> None:
        """The replay has moved a stage (or more): time restarts from that stage's time."""
        self._stage_started = self._monotonic()

    def replay_ms(self) -> int:
        """The replay's own time, skew left out (monotonic)."""
        replay = self._replay
        current = replay.stage_time_ms
        upcoming = replay.next_stage_time_ms
        if upcoming is not None and self._rate_ms_per_s:
            elapsed = (self._monotonic() - self._stage_started) * self._rate_ms_per_s
            current = min(current + int(elapsed), upcoming - 1)
        if current > self._last_replay_ms:
            self._last_replay_ms = current
        return self._last_replay_ms

    def market_ms(self) -> int:
        """The market's time before any skew: the replay's time plus an explicit shift."""
        return self.replay_ms() + self.shift_ms

    def now_ms(self) -> int:
        """The exchange's time (serverTime): the market's time plus the skew."""
        return self.market_ms() + self.skew_ms

    def set_offset(self, offset_ms: int) -> None:
        """Skew the whole exchange clock `offset_ms` ahead of the replay (negative: behind);
        clears any shift of the market clock."""
        self.skew_ms = offset_ms
        self.shift_ms = 0

    def set_time(self, server_time_ms: int) -> None:
        """Make serverTime `server_time_ms` now by shifting the market clock only; it keeps
        following the replay from there."""
        self.shift_ms = server_time_ms - self.skew_ms - self.replay_ms()

    # --- request timestamps ------------------------------------------------------------

    def wall_ms(self) -> int:
        """The wall clock plus the skew: what rate limits count and unsynced clients sign by."""
        return int(self._wall() * 1000) + self.skew_ms

    def server_time_for_sync(self) -> int:
        """serverTime for `GET /api/v3/time`, remembering the offset a client learns from it."""
        market_ms = self.market_ms()
        offset = market_ms - int(self._wall() * 1000)
        if len(self._issued) >= ISSUED_OFFSETS:
            dropped = self._issued.popleft()
            del self._issued_sorted[bisect.bisect_left(self._issued_sorted, dropped)]
        self._issued.append(offset)
        bisect.insort(self._issued_sorted, offset)
        return market_ms + self.skew_ms

    def check_timestamp(self, timestamp_ms: int, recv_window_ms: int) -> None:
        """Raise -1021 unless `timestamp_ms` is within `recv_window_ms` (and under 1 s ahead)
        of the wall clock or of the clock of a client synced to an issued serverTime."""
        if recv_window_ms > signing.MAX_RECV_WINDOW_MS:
            raise errors.recv_window_too_large()
        base = self.wall_ms()
        target = timestamp_ms - base  # the offset this client signs with
        # Accepted by the clock base + offset when offset is in (target - 1000, target + window].
        low, high = target - signing.MAX_AHEAD_MS, target + recv_window_ms
        if low < 0 <= high:
            return
        found = bisect.bisect_right(self._issued_sorted, low)
        if found < len(self._issued_sorted) and self._issued_sorted[found] <= high:
            return
        signing.check_timestamp(timestamp_ms, recv_window_ms, base + self._nearest(target))
        raise errors.timestamp_outside_window()  # not reached: the nearest clock refuses it

    def _nearest(self, target: int) -> int:
        index = bisect.bisect_left(self._issued_sorted, target)
        near = [0, *self._issued_sorted[max(0, index - 1) : index + 1]]
        return min(near, key=lambda offset: abs(offset - target))
