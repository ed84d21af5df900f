"""retry_with_backoff and CircuitBreaker on virtual time: no test here waits for real."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shared.config import load_settings
from shared.metrics import CIRCUIT_BREAKER_STATE
from shared.resilience import (
    MAX_BACKOFF_DELAY,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    backoff_delay,
    retry_with_backoff,
)


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


class RecordingSleep:
    """An injected sleep that records the delays instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- backoff -------------------------------------------------------------------------------


@given(
    retry_number=st.integers(min_value=0, max_value=2000),
    base_delay=st.floats(min_value=0, max_value=100, allow_nan=False),
    u=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_delay_lies_within_the_jitter_bounds_and_never_exceeds_the_cap(
    retry_number: int, base_delay: float, u: float
) -> None:
    delay = backoff_delay(retry_number, base_delay, rng=lambda: u)
    assert 0 <= delay <= MAX_BACKOFF_DELAY
    try:
        nominal = math.ldexp(base_delay, retry_number)
    except OverflowError:
        nominal = math.inf
    assert delay >= min(MAX_BACKOFF_DELAY, nominal) * (1 - 1e-12)
    assert delay <= min(MAX_BACKOFF_DELAY, nominal * 1.5) * (1 + 1e-12)


def test_backoff_delay_uses_the_extremes_of_the_jitter() -> None:
    assert backoff_delay(2, 1.0, rng=lambda: 0.0) == 4.0
    assert backoff_delay(2, 1.0, rng=lambda: 0.999999) == pytest.approx(6.0, abs=1e-5)
    assert backoff_delay(10, 1.0, rng=lambda: 0.0) == 60.0  # 1024 s capped


async def test_retry_waits_exponential_jittered_delays_then_succeeds() -> None:
    sleep = RecordingSleep()
    calls = 0

    @retry_with_backoff(max_retries=3, base_delay=1.0, retry_on=(Flaky,), sleep=sleep)
    async def fetch() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise Flaky(f"attempt {calls}")
        return "ok"

    assert await fetch() == "ok"
    assert calls == 4
    assert len(sleep.delays) == 3
    for n, delay in enumerate(sleep.delays):
        assert 2**n <= delay < 2**n * 1.5


async def test_retry_gives_up_after_max_retries_with_the_last_error() -> None:
    sleep = RecordingSleep()
    calls = 0

    async def fetch() -> None:
        nonlocal calls
        calls += 1
        raise Flaky(f"attempt {calls}")

    wrapped = retry_with_backoff(fetch, 2, 0.5, retry_on=(Flaky,), sleep=sleep)
    with pytest.raises(Flaky, match="attempt 3"):
        await wrapped()
    assert calls == 3
    assert len(sleep.delays) == 2


async def test_retry_does_not_retry_exception_types_it_was_not_given() -> None:
    sleep = RecordingSleep()
    calls = 0

    @retry_with_backoff(max_retries=5, retry_on=(Flaky,), sleep=sleep)
    async def place_order() -> None:
        nonlocal calls
        calls += 1
        raise Fatal("insufficient balance")

    with pytest.raises(Fatal):
        await place_order()
    assert calls == 1
    assert sleep.delays == []


async def test_retry_caps_long_backoffs_at_sixty_seconds() -> None:
    sleep = RecordingSleep()

    @retry_with_backoff(
        max_retries=12, base_delay=1.0, retry_on=(Flaky,), sleep=sleep, rng=random.Random(7).random
    )
    async def never() -> None:
        raise Flaky("down")

    with pytest.raises(Flaky):
        await never()
    assert len(sleep.delays) == 12
    assert max(sleep.delays) == MAX_BACKOFF_DELAY
    assert all(d <= MAX_BACKOFF_DELAY for d in sleep.delays)


def test_retry_refuses_a_sync_function() -> None:
    def sync() -> None:
        return None

    with pytest.raises(TypeError, match="async"):
        retry_with_backoff(sync)  # type: ignore[arg-type]


# --- circuit breaker -----------------------------------------------------------------------


async def _fail() -> None:
    raise Flaky("exchange down")


async def _succeed() -> str:
    return "filled"


def _gauge(name: str) -> float:
    return CIRCUIT_BREAKER_STATE.labels(name=name)._value.get()


async def test_breaker_lifecycle_open_reject_half_open_close_reopen_alerting_once_per_opening() -> (
    None
):
    clock = Clock()
    alerts: list[str] = []

    async def alert(message: str) -> None:
        alerts.append(message)

    breaker = CircuitBreaker("exchange-test", clock=clock, on_open=alert)
    assert breaker.state is CircuitState.CLOSED

    for _ in range(4):
        with pytest.raises(Flaky):
            await breaker.call(_fail)
    assert breaker.state is CircuitState.CLOSED  # 4 < threshold 5
    with pytest.raises(Flaky):
        await breaker.call(_fail)
    assert breaker.state is CircuitState.OPEN
    assert _gauge("exchange-test") == 2
    assert len(alerts) == 1
    assert "exchange-test" in alerts[0] and "5 consecutive" in alerts[0]

    # Open: rejected without calling the function.
    called = False

    async def spy() -> None:
        nonlocal called
        called = True

    clock.now += 59.9
    with pytest.raises(CircuitOpenError, match="exchange-test"):
        await breaker.call(spy)
    assert not called

    # After the timeout: half-open, one trial call; success closes.
    clock.now += 0.1
    assert breaker.state is CircuitState.HALF_OPEN
    assert _gauge("exchange-test") == 1
    assert await breaker.call(_succeed) == "filled"
    assert breaker.state is CircuitState.CLOSED
    assert _gauge("exchange-test") == 0
    assert breaker.failure_count == 0

    # Open again, then a failed trial reopens at once (and alerts for the new opening).
    for _ in range(5):
        with pytest.raises(Flaky):
            await breaker.call(_fail)
    assert len(alerts) == 2
    clock.now += 60
    with pytest.raises(Flaky):
        await breaker.call(_fail)
    assert breaker.state is CircuitState.OPEN
    assert len(alerts) == 3
    with pytest.raises(CircuitOpenError):
        await breaker.call(_succeed)
    assert len(alerts) == 3  # rejections do not alert


async def test_half_open_lets_exactly_one_trial_call_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker("one-trial", failure_threshold=1, recovery_timeout=10, clock=clock)
    with pytest.raises(Flaky):
        await breaker.call(_fail)
    clock.now += 10

    async with breaker:  # the trial call is in progress
        with pytest.raises(CircuitOpenError):
            async with breaker:
                pass
    assert breaker.state is CircuitState.CLOSED


async def test_errors_outside_counted_errors_do_not_trip_the_breaker() -> None:
    breaker = CircuitBreaker(
        "business-errors", failure_threshold=2, clock=Clock(), counted_errors=(Flaky,)
    )
    for _ in range(5):
        with pytest.raises(Fatal):
            async with breaker:
                raise Fatal("order rejected: insufficient balance")
    assert breaker.state is CircuitState.CLOSED


async def test_a_failing_alert_is_contained() -> None:
    def broken_alert(message: str) -> None:
        raise RuntimeError("telegram down")

    breaker = CircuitBreaker(
        "alert-fails", failure_threshold=1, clock=Clock(), on_open=broken_alert
    )
    with pytest.raises(Flaky):
        await breaker.call(_fail)
    assert breaker.state is CircuitState.OPEN


def test_breaker_defaults_come_from_settings() -> None:
    settings = load_settings(circuit_breaker_threshold=3, circuit_breaker_timeout=12)
    breaker = CircuitBreaker.from_settings("from-settings", settings)
    assert (breaker.failure_threshold, breaker.recovery_timeout) == (3, 12.0)
    default = CircuitBreaker("defaults")
    assert (default.failure_threshold, default.recovery_timeout) == (5, 60.0)
