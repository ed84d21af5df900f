"""The Telegram notifier's send-rate limiters: one process's, or the whole platform's.

Telegram limits a bot to about one message a second per chat, counted across everything
that uses the bot. Each service runs its own `TelegramNotifier`, so a limit kept in one
process lets four services send four messages in the same second. `RedisRateLimiter`
keeps the limit in Redis instead: every send reserves the next free slot atomically (a
Lua script: ``slot = max(now, last_slot + interval)``), on Redis's own clock (``TIME``),
so processes on different hosts agree on what "now" is. When Redis cannot be reached it
falls back to a `LocalRateLimiter` (logged once per outage) and goes back to Redis as
soon as it answers again.

Both limiters have the same three calls, used around each HTTP request:
``await acquire()`` (returns when this request may start), ``release()`` (the request
finished) and ``await defer(seconds)`` (Telegram said "retry after": nobody sends for
that long).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

_log = structlog.get_logger("shared.notifier")

Sleep = Callable[[float], Awaitable[Any]]

_MICROS = 1_000_000

# KEYS[1] the limiter's key; ARGV[1] the interval in µs. Returns {slot, now} in µs of
# Redis's clock. The key expires a minute after its slot has passed, so an idle bot
# leaves nothing behind.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]))
local slot = now
if last ~= nil and last + interval > now then
    slot = last + interval
end
local ttl = math.floor((slot - now) / 1000) + 60000
redis.call('SET', KEYS[1], string.format('%d', slot), 'PX', ttl)
return {slot, now}
"""

# KEYS[1] the limiter's key; ARGV[1] the interval in µs, ARGV[2] the hold in µs. Moves the
# last slot so that the next one starts no earlier than now + hold.
_DEFER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local floor = now + tonumber(ARGV[2]) - tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]))
if last == nil or last < floor then
    local ttl = math.floor((floor - now) / 1000) + 60000
    redis.call('SET', KEYS[1], string.format('%d', floor), 'PX', ttl)
end
return 1
"""


class RateLimiter(Protocol):
    """What `TelegramNotifier` asks of a limiter around each request."""

    async def acquire(self) -> None:
        """Return when the next request may start."""

    def release(self) -> None:
        """The request that `acquire` let through has finished."""

    async def defer(self, seconds: float) -> None:
        """Hold every request back for ``seconds`` from now (Telegram's retry_after)."""


class LocalRateLimiter:
    """This process's limit: a request starts ``min_interval`` s after the previous finished.

    ``clock``/``sleep`` are injectable so tests can run it on virtual time.
    """

    def __init__(
        self,
        min_interval: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._sleep = sleep
        self._earliest = -math.inf

    async def acquire(self) -> None:
        while (wait := self._earliest - self._clock()) > 0:
            await self._sleep(wait)

    def release(self) -> None:
        self._earliest = max(self._earliest, self._clock() + self.min_interval)

    async def defer(self, seconds: float) -> None:
        self._earliest = max(self._earliest, self._clock() + seconds)


@dataclass(frozen=True)
class Reservation:
    """A send slot granted by `RedisRateLimiter.reserve`, in seconds of Redis's clock."""

    slot: float
    """When the request may start (Unix seconds, Redis ``TIME``)."""
    now: float
    """Redis's time when the slot was granted."""

    @property
    def wait(self) -> float:
        """Seconds to wait before starting the request."""
        return max(self.slot - self.now, 0.0)


def rate_limit_key(bot_token: str, chat_id: str, namespace: str = "") -> str:
    """The Redis key of one bot's limit in one chat; the token appears only as a hash."""
    token_hash = hashlib.sha256(bot_token.encode()).hexdigest()[:16]
    return f"{namespace}telegram:rate:{token_hash}:{chat_id}"


class RedisRateLimiter:
    """A send limit shared by every process using the same Redis, bot and chat.

    ``key``: see `rate_limit_key`. Request *starts* are spaced ``min_interval`` s apart on
    Redis's clock, whichever process sends them. A Redis error or a reservation taking
    longer than ``redis_timeout`` s falls back to ``fallback`` (by default a
    `LocalRateLimiter`); Redis is tried again ``outage_retry`` s later (so a dead Redis does
    not slow every send). The first fallback of an outage is logged at WARNING, the return
    to Redis at INFO.
    """

    def __init__(
        self,
        redis: Redis,
        key: str,
        min_interval: float = 1.0,
        *,
        redis_timeout: float = 2.0,
        outage_retry: float = 5.0,
        fallback: RateLimiter | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if min_interval <= 0:
            raise ValueError(f"min_interval must be positive, got {min_interval}")
        self.redis = redis
        self.key = key
        self.min_interval = min_interval
        self.redis_timeout = redis_timeout
        self.outage_retry = outage_retry
        self.fallback: RateLimiter = fallback or LocalRateLimiter(min_interval, sleep=sleep)
        self._sleep = sleep
        self._interval_us = round(min_interval * _MICROS)
        self._reserve = redis.register_script(_RESERVE)
        self._defer = redis.register_script(_DEFER)
        self._outage = False
        self._retry_redis_at = -math.inf  # time.monotonic(); in an outage, when to try again

    @classmethod
    def for_bot(
        cls,
        redis: Redis,
        bot_token: str,
        chat_id: str,
        *,
        namespace: str = "",
        min_interval: float = 1.0,
        **options: Any,
    ) -> RedisRateLimiter:
        """The limiter of ``bot_token`` in ``chat_id`` (keyed by the token's hash)."""
        key = rate_limit_key(bot_token, chat_id, namespace)
        return cls(redis, key, min_interval, **options)

    def __repr__(self) -> str:
        return f"RedisRateLimiter(key={self.key!r}, min_interval={self.min_interval})"

    @property
    def using_fallback(self) -> bool:
        """True while Redis is unreachable and the local limit applies."""
        return self._outage

    async def reserve(self) -> Reservation:
        """Take the next free slot in Redis (raises on a Redis error; does not wait)."""
        async with asyncio.timeout(self.redis_timeout):
            slot, now = await self._reserve(keys=[self.key], args=[self._interval_us])
        return Reservation(slot=int(slot) / _MICROS, now=int(now) / _MICROS)

    async def acquire(self) -> None:
        if not self._redis_due():
            await self.fallback.acquire()
            return
        try:
            reservation = await self.reserve()
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_failed(exc)
            await self.fallback.acquire()
            return
        self._redis_answered()
        if reservation.wait > 0:
            await self._sleep(reservation.wait)

    def release(self) -> None:
        # The fallback keeps this process's own pace, ready for when Redis goes away.
        self.fallback.release()

    async def defer(self, seconds: float) -> None:
        await self.fallback.defer(seconds)
        if not self._redis_due():
            return
        try:
            async with asyncio.timeout(self.redis_timeout):
                await self._defer(
                    keys=[self.key], args=[self._interval_us, round(seconds * _MICROS)]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_failed(exc)
            return
        self._redis_answered()

    def _redis_due(self) -> bool:
        return not self._outage or time.monotonic() >= self._retry_redis_at

    def _redis_failed(self, exc: BaseException) -> None:
        self._retry_redis_at = time.monotonic() + self.outage_retry
        if not self._outage:
            self._outage = True
            _log.warning(
                "telegram_rate_limit_fallback",
                detail="Redis unreachable; limiting this process's Telegram sends on its own",
                error_type=type(exc).__name__,
                error=str(exc),
            )

    def _redis_answered(self) -> None:
        if self._outage:
            self._outage = False
            _log.info("telegram_rate_limit_restored", detail="Redis answers again")
