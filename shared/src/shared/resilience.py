"""Retries with exponential backoff and a circuit breaker (spec 1.4).

Both take their clock, sleep and randomness as arguments so tests run them on virtual time.

Backoff: retry number ``n`` (0 for the first retry) waits

    delay_n = min(max_delay, base_delay * 2**n * (1 + U))   with U uniform in [0, 0.5)

so the jitter widens each delay by up to half, and the cap (60 s by default) applies to the
jittered value: no single wait ever exceeds ``max_delay``.

Circuit breaker: CLOSED counts consecutive failures; at ``failure_threshold`` it opens and
rejects calls with `CircuitOpenError` (calling ``on_open`` once per opening). After
``recovery_timeout`` it lets exactly one trial call through (HALF_OPEN): success closes it,
failure reopens it for another timeout.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable
from enum import IntEnum
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import structlog

from shared.metrics import CIRCUIT_BREAKER_STATE

P = ParamSpec("P")
T = TypeVar("T")

MAX_BACKOFF_DELAY = 60.0
"""No single backoff wait is longer than this many seconds (spec 1.4)."""

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
"""What `retry_with_backoff` retries when not told otherwise: connection drops and timeouts."""

Sleep = Callable[[float], Awaitable[Any]]

_log = structlog.get_logger("shared.resilience")


def backoff_delay(
    retry_number: int,
    base_delay: float,
    *,
    max_delay: float = MAX_BACKOFF_DELAY,
    rng: Callable[[], float] = random.random,
) -> float:
    """The wait before retry ``retry_number`` (0-based), jittered and capped at ``max_delay``.

    ``rng()`` must return a float in [0, 1); it is scaled to the jitter factor U in [0, 0.5).
    """
    if retry_number < 0:
        raise ValueError(f"retry_number must be 0 or more, got {retry_number}")
    if base_delay < 0 or max_delay < 0:
        raise ValueError("base_delay and max_delay must not be negative")
    jitter = 0.5 * rng()
    try:
        # ldexp(x, n) is x * 2**n without first building 2**n, which overflows past n=1023
        return min(max_delay, math.ldexp(base_delay * (1.0 + jitter), retry_number))
    except OverflowError:
        return max_delay


@overload
def retry_with_backoff(
    func: Callable[P, Awaitable[T]],
    max_retries: int = 3,
    base_delay: float = 1.0,
    *,
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
    max_delay: float = MAX_BACKOFF_DELAY,
    sleep: Sleep = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> Callable[P, Awaitable[T]]: ...


@overload
def retry_with_backoff(
    func: None = None,
    max_retries: int = 3,
    base_delay: float = 1.0,
    *,
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
    max_delay: float = MAX_BACKOFF_DELAY,
    sleep: Sleep = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]: ...


def retry_with_backoff(
    func: Callable[P, Awaitable[T]] | None = None,
    max_retries: int = 3,
    base_delay: float = 1.0,
    *,
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
    max_delay: float = MAX_BACKOFF_DELAY,
    sleep: Sleep = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> Any:
    """Retry an async function on the exception types in ``retry_on`` with jittered backoff.

    Use it bare-bones as the spec writes it, ``retry_with_backoff(fetch, 3, 1.0)``, or as a
    decorator, ``@retry_with_backoff(max_retries=3, retry_on=(NetworkError,))``. The function
    runs at most ``1 + max_retries`` times; any other exception, and the last retried one,
    propagates unchanged. Waits follow `backoff_delay`.
    """
    if max_retries < 0:
        raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
    if not retry_on:
        raise ValueError("retry_on must name at least one exception type")

    def decorate(target: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if not inspect.iscoroutinefunction(target):
            raise TypeError(f"retry_with_backoff wraps async functions; {target!r} is not one")

        @functools.wraps(target)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            retry_number = 0
            while True:
                try:
                    return await target(*args, **kwargs)
                except retry_on as exc:
                    if retry_number >= max_retries:
                        raise
                    delay = backoff_delay(retry_number, base_delay, max_delay=max_delay, rng=rng)
                    _log.warning(
                        "retrying_after_error",
                        function=getattr(target, "__qualname__", repr(target)),
                        retry=retry_number + 1,
                        max_retries=max_retries,
                        delay_seconds=round(delay, 3),
                        error_type=type(exc).__name__,
                        error=str(exc),
                    )
                    await sleep(delay)
                    retry_number += 1

        return wrapper

    if func is None:
        return decorate
    return decorate(func)


class CircuitState(IntEnum):
    """Breaker states; the values are what the ``circuit_breaker_state`` gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpenError(RuntimeError):
    """A call was refused because the breaker is open (or its one trial call is running)."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(
            f"circuit breaker {name!r} is open: calls are refused for another "
            f"{max(retry_in, 0.0):.1f}s while the dependency recovers"
        )
        self.name = name
        self.retry_in = retry_in


OnOpen = Callable[[str], Any]


class CircuitBreaker:
    """Stops calling a failing dependency for a while, then tries one call to see if it is back.

    Use ``await breaker.call(func, *args)`` or ``async with breaker: ...``. Exceptions of the
    types in ``counted_errors`` count as failures; others (e.g. a rejected order, which says
    nothing about the exchange's health) pass through without changing the state.
    ``on_open(message)`` is called once each time the breaker opens, e.g. with
    ``notifier.send_error``; an awaitable it returns is awaited, and its own failure is
    logged, never raised.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_open: OnOpen | None = None,
        counted_errors: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be 1 or more, got {failure_threshold}")
        if recovery_timeout <= 0:
            raise ValueError(f"recovery_timeout must be positive, got {recovery_timeout}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self._clock = clock
        self._on_open = on_open
        self._counted_errors = counted_errors
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False
        self._export()

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_open: OnOpen | None = None,
    ) -> CircuitBreaker:
        """A breaker with CIRCUIT_BREAKER_THRESHOLD and CIRCUIT_BREAKER_TIMEOUT from settings."""
        return cls(
            name,
            settings.circuit_breaker_threshold,
            float(settings.circuit_breaker_timeout),
            clock=clock,
            on_open=on_open,
        )

    @property
    def state(self) -> CircuitState:
        """The current state; an open breaker whose timeout has passed reads HALF_OPEN."""
        if self._state is CircuitState.OPEN and self._retry_in() <= 0:
            self._set_state(CircuitState.HALF_OPEN)
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted since the last success."""
        return self._failures

    async def call(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await func(*args, **kwargs)`` through the breaker."""
        async with self:
            return await func(*args, **kwargs)

    async def __aenter__(self) -> CircuitBreaker:
        self._admit()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self._record_success()
        elif isinstance(exc, self._counted_errors):
            await self._record_failure(exc)
        else:
            # Not a health signal (e.g. cancellation or a business error): release the trial
            # slot without deciding anything.
            self._trial_running = False

    def _admit(self) -> None:
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return
        raise CircuitOpenError(self.name, self._retry_in())

    def _record_success(self) -> None:
        self._failures = 0
        self._trial_running = False
        if self._state is not CircuitState.CLOSED:
            _log.info("circuit_breaker_closed", breaker=self.name)
            self._set_state(CircuitState.CLOSED)

    async def _record_failure(self, exc: BaseException) -> None:
        self._failures += 1
        was_trial = self._trial_running
        self._trial_running = False
        if self._state is CircuitState.OPEN and not was_trial:
            return  # a call begun before the opening: already alerted for this opening
        if was_trial or self._failures >= self.failure_threshold:
            await self._open(exc)

    async def _open(self, exc: BaseException) -> None:
        self._opened_at = self._clock()
        self._set_state(CircuitState.OPEN)
        message = (
            f"Circuit breaker {self.name!r} opened after {self._failures} consecutive "
            f"failure(s); last error {type(exc).__name__}: {exc}. Calls are refused for "
            f"{self.recovery_timeout:g}s, then one trial call is let through."
        )
        _log.warning(
            "circuit_breaker_opened",
            breaker=self.name,
            failures=self._failures,
            error_type=type(exc).__name__,
            error=str(exc),
        )
        if self._on_open is None:
            return
        try:
            result = self._on_open(message)
            if inspect.isawaitable(result):
                await result
        except Exception as alert_error:  # an alert must never break the caller
            _log.warning(
                "circuit_breaker_alert_failed",
                breaker=self.name,
                error_type=type(alert_error).__name__,
                error=str(alert_error),
            )

    def _retry_in(self) -> float:
        return self._opened_at + self.recovery_timeout - self._clock()

    def _set_state(self, state: CircuitState) -> None:
        self._state = state
        self._export()

    def _export(self) -> None:
        CIRCUIT_BREAKER_STATE.labels(name=self.name).set(int(self._state))
