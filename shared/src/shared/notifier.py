"""Telegram notifications (spec 1.3): signals, orders, errors and daily summaries.

Sending never blocks and never raises: ``send*`` put the message on a bounded in-memory
queue and return at once (call them plainly, or ``await`` them, both work), from the event
loop or from another thread. One delivery task, started by `TelegramNotifier.start`, posts
the queue to the Bot API:

- Rate: by default a request starts at least ``min_interval`` (1 s) after the previous one
  finished, so Telegram never sees more than one message a second from this process (retries
  included). Telegram counts per bot and chat, not per process: with a Redis, every service
  shares one limit (`share_rate_limit`, which `shared.service` calls; see
  `shared.notifier_rate_limit`), falling back to the local one while Redis is down.
- Failures: network errors and 5xx are retried up to ``max_retries`` (3) times with jittered
  backoff; a 429 waits the ``parameters.retry_after`` Telegram sends in the body, then tries
  again; 400/401/403 (and any other 4xx) are not retried. A message given up on is logged
  and counted in ``telegram_messages_dropped_total{reason}``.
- Priority: errors, orders and daily summaries are HIGH, signals and plain `send` LOW; the
  queue serves HIGH first. When it is full the oldest LOW message is dropped to make room; a
  new LOW message finding only HIGH ones is dropped itself; a HIGH one finding only HIGH
  ones replaces the oldest (the newest alert is the one that matters).
- Coalescing: the same error from the same service within a minute is sent once. Repeats
  while the first is still queued are folded into it; repeats after it went out are
  reported in one follow-up when the minute ends, "… (×7 in the last minute)".
- Long texts are split into <= 4096-character chunks (`notifier_messages.split_message`).
- Disabled (every call a no-op) when ``enabled`` is false or the token is empty.

The bot token is part of the request URL, so it is never logged: log lines carry only the
status, Telegram's description and exception types/texts with the token masked.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from shared.config import TELEGRAM_BOT_API_URL, Settings
from shared.metrics import TELEGRAM_MESSAGES_DROPPED_TOTAL, TELEGRAM_MESSAGES_SENT_TOTAL
from shared.models import Order, Position, Signal
from shared.notifier_messages import (
    format_daily_summary,
    format_error,
    format_order,
    format_signal,
    split_message,
)
from shared.notifier_rate_limit import LocalRateLimiter, RateLimiter, RedisRateLimiter, Sleep
from shared.resilience import backoff_delay

if TYPE_CHECKING:
    from redis.asyncio import Redis

_log = structlog.get_logger("shared.notifier")

COALESCE_WINDOW = 60.0
"""Identical errors within this many seconds are sent as one message with a count."""

_inside_notifier: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "inside_telegram_notifier", default=False
)


def in_notifier_context() -> bool:
    """True while running the notifier's own code, whose errors must not notify again."""
    return _inside_notifier.get()


class Priority(IntEnum):
    """Queue priority: HIGH is served first and is the last to be dropped."""

    HIGH = 0
    LOW = 1


class Enqueued:
    """What a ``send*`` call returns: whether the message was accepted into the queue.

    Awaitable (``await notifier.send(...)`` returns the same bool) so callers may treat the
    send methods as coroutines; the work is already done when it is returned.
    """

    __slots__ = ("accepted",)

    def __init__(self, accepted: bool) -> None:
        self.accepted = accepted

    def __bool__(self) -> bool:
        return self.accepted

    def __await__(self) -> Generator[Any, None, bool]:
        return self.accepted
        yield  # makes this a generator; never reached

    def __repr__(self) -> str:
        return f"Enqueued(accepted={self.accepted})"


@dataclass(eq=False)
class _ErrorWindow:
    """One error text from one service within a coalescing minute."""

    error: str
    service: str
    opened_at: float
    total: int = 1
    queued: _Outgoing | None = None  # the message carrying the count while still queued
    unreported: int = 0  # repeats after that message left the queue


@dataclass(eq=False)
class _Outgoing:
    text: str
    parse_mode: str | None
    priority: Priority
    window: _ErrorWindow | None = None
    count: int = 1

    def render(self) -> str:
        if self.window is None:
            return self.text
        return format_error(self.window.error, self.window.service, self.count)


class TelegramNotifier:
    """Sends HTML messages to one Telegram chat through the Bot API. See the module docstring."""

    def __init__(
        self,
        bot_token: str,
        chat_id: str,
        api_url: str = TELEGRAM_BOT_API_URL,
        enabled: bool = True,
        *,
        max_queue: int = 100,
        min_interval: float = 1.0,
        max_retries: int = 3,
        retry_base_delay: float = 1.0,
        max_flood_waits: int = 5,
        request_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        """``rate_limiter`` paces the requests; by default a `LocalRateLimiter` of
        ``min_interval`` on ``clock``/``sleep`` (this process only)."""
        if max_queue < 1:
            raise ValueError(f"max_queue must be 1 or more, got {max_queue}")
        self._token = bot_token
        self.chat_id = chat_id
        self.api_url = api_url.rstrip("/")
        self.enabled = bool(enabled and bot_token and chat_id)
        self.max_queue = max_queue
        self.min_interval = min_interval
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self.max_flood_waits = max_flood_waits
        self._request_timeout = request_timeout
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._queues: dict[Priority, deque[_Outgoing]] = {p: deque() for p in Priority}
        self._windows: dict[tuple[str, str], _ErrorWindow] = {}
        self._session: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._draining = False
        self._closing = False
        self._closed = False
        self.rate_limiter: RateLimiter = rate_limiter or LocalRateLimiter(
            min_interval, clock=clock, sleep=sleep
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> TelegramNotifier:
        """A notifier from TELEGRAM_* settings (disabled unless TELEGRAM_ENABLED and a token)."""
        return cls(
            settings.telegram_bot_token.get_secret_value(),
            settings.telegram_chat_id,
            api_url=settings.telegram_api_url,
            enabled=settings.telegram_enabled,
            **options,
        )

    def share_rate_limit(self, redis: Redis, *, namespace: str = "") -> RedisRateLimiter:
        """Pace sends with every other process using this bot and chat on ``redis``.

        The limiter kept so far becomes the fallback for when Redis cannot be reached.
        Returns the new limiter (also `rate_limiter`).
        """
        limiter = RedisRateLimiter.for_bot(
            redis,
            self._token,
            self.chat_id,
            namespace=namespace,
            min_interval=self.min_interval,
            fallback=self.rate_limiter,
            sleep=self._sleep,
        )
        self.rate_limiter = limiter
        return limiter

    def __repr__(self) -> str:  # never show the token
        return f"TelegramNotifier(chat_id={self.chat_id!r}, enabled={self.enabled})"

    @property
    def bot_token(self) -> str:
        """The token, for redaction lists; never log it."""
        return self._token

    @property
    def queued(self) -> int:
        """Messages waiting in the queue."""
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session and start delivering (idempotent; no-op when disabled)."""
        if not self.enabled or self._worker is not None or self._closing:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._request_timeout)
        )
        self._worker = asyncio.create_task(self._run(), name="telegram-notifier")

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Deliver what is queued (for up to ``drain_timeout`` s), then stop and close the session.

        Messages still queued when the time is up are dropped and counted (reason "shutdown").
        """
        if self._closing:
            return
        self._closing = True
        if self._worker is None:
            self._closed = True
            self._discard_queue("shutdown")
            return
        with self._lock:
            for window in list(self._windows.values()):
                self._report_window(window)
            self._windows.clear()
        self._draining = True
        self._wake_worker()
        try:
            await asyncio.wait_for(asyncio.shield(self._worker), drain_timeout)
        except TimeoutError:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._closed = True
        self._discard_queue("shutdown")  # anything that slipped in after the worker ended
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> TelegramNotifier:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- sending (enqueue only) ----------------------------------------------------------

    def send(
        self, message: str, parse_mode: str | None = "HTML", *, priority: Priority = Priority.LOW
    ) -> Enqueued:
        """Queue a message; in HTML mode the caller escapes its own user text."""
        if not self.enabled or not message.strip():
            return Enqueued(False)
        return self._put(_Outgoing(message, parse_mode, priority))

    def send_signal(self, signal: Signal) -> Enqueued:
        """Queue a signal alert (LOW priority)."""
        return self.send(format_signal(signal), priority=Priority.LOW)

    def send_order(self, order: Order) -> Enqueued:
        """Queue an order fill/failure alert (HIGH priority)."""
        return self.send(format_order(order), priority=Priority.HIGH)

    def send_daily_summary(self, positions: Sequence[Position], pnl: Decimal) -> Enqueued:
        """Queue the daily summary (HIGH priority)."""
        return self.send(format_daily_summary(positions, pnl), priority=Priority.HIGH)

    def send_error(self, error: str, service: str) -> Enqueued:
        """Queue an error alert (HIGH priority), coalescing repeats within a minute."""
        if not self.enabled:
            return Enqueued(False)
        item: _Outgoing | None = None
        with self._lock:
            now = self._clock()
            key = (service, error)
            window = self._windows.get(key)
            if window is not None and now - window.opened_at < COALESCE_WINDOW:
                window.total += 1
                if window.queued is not None:  # still waiting: fold the repeat into it
                    window.queued.count += 1
                    return Enqueued(True)
                window.unreported += 1
                needs_timer = window.unreported == 1
            else:
                if window is not None:
                    self._report_window(window)
                window = _ErrorWindow(error, service, opened_at=now)
                item = window.queued = _Outgoing("", "HTML", Priority.HIGH, window=window)
                self._windows[key] = window
                needs_timer = False
        if item is not None:
            return self._put(item)
        if needs_timer:
            self._wake_worker()  # so it sets a timer for this minute's follow-up
        return Enqueued(True)

    # --- the queue -----------------------------------------------------------------------

    def _put(self, item: _Outgoing) -> Enqueued:
        if self._closed:
            TELEGRAM_MESSAGES_DROPPED_TOTAL.labels(reason="closed").inc()
            return Enqueued(False)
        with self._lock:
            accepted = self._make_room(item.priority)
            if accepted:
                self._queues[item.priority].append(item)
        if not accepted:
            self._dropped(item, "queue_full", log_level="warning")
            return Enqueued(False)
        self._wake_worker()
        return Enqueued(True)

    def _make_room(self, priority: Priority) -> bool:
        """Under the lock: make space for one message of ``priority``; False if it can't."""
        low, high = self._queues[Priority.LOW], self._queues[Priority.HIGH]
        if len(low) + len(high) < self.max_queue:
            return True
        if low:
            victim = low.popleft()
        elif priority is Priority.HIGH:
            victim = high.popleft()
        else:
            return False
        self._forget(victim)
        TELEGRAM_MESSAGES_DROPPED_TOTAL.labels(reason="queue_full").inc()
        return True

    def _take(self) -> _Outgoing | None:
        with self._lock:
            for priority in Priority:
                if self._queues[priority]:
                    item = self._queues[priority].popleft()
                    if item.window is not None and item.window.queued is item:
                        item.window.queued = None  # later repeats are counted as unreported
                    return item
        return None

    def _forget(self, item: _Outgoing) -> None:
        if item.window is not None and item.window.queued is item:
            item.window.queued = None

    def _report_window(self, window: _ErrorWindow) -> None:
        """Under the lock: queue the follow-up for repeats that were not sent yet."""
        if window.unreported:
            follow_up = _Outgoing("", "HTML", Priority.HIGH, window=window, count=window.total)
            window.unreported = 0
            if self._make_room(Priority.HIGH):
                self._queues[Priority.HIGH].append(follow_up)

    def _report_expired_windows(self) -> float | None:
        """Queue follow-ups of finished minutes; returns seconds until the next one ends."""
        now = self._clock()
        next_end: float | None = None
        with self._lock:
            for key, window in list(self._windows.items()):
                ends_in = window.opened_at + COALESCE_WINDOW - now
                if ends_in <= 0:
                    self._report_window(window)
                    if window.queued is None:
                        del self._windows[key]
                elif window.unreported and (next_end is None or ends_in < next_end):
                    next_end = ends_in
        return next_end

    def _discard_queue(self, reason: str) -> None:
        with self._lock:
            left = [item for q in self._queues.values() for item in q]
            for q in self._queues.values():
                q.clear()
        for item in left:
            self._dropped(item, reason, log_level="warning")

    def _wake_worker(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return  # not started: the queue waits for start()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    # --- delivery ------------------------------------------------------------------------

    async def _run(self) -> None:
        _inside_notifier.set(True)
        assert self._wake is not None
        while True:
            self._wake.clear()
            next_window_end = self._report_expired_windows()
            item = self._take()
            if item is None:
                if self._draining:
                    return
                await self._wait_for_work(next_window_end)
                continue
            try:
                await self._deliver(item)
            except asyncio.CancelledError:
                self._dropped(item, "shutdown", log_level="warning")  # cut off by close()
                raise
            except Exception as exc:  # the worker must survive anything
                self._dropped(item, "internal_error", error=exc)

    async def _wait_for_work(self, max_wait: float | None) -> None:
        assert self._wake is not None
        woken = asyncio.ensure_future(self._wake.wait())
        waiters: set[asyncio.Future[Any]] = {woken}
        if max_wait is not None:
            waiters.add(asyncio.ensure_future(self._sleep(max_wait)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _deliver(self, item: _Outgoing) -> None:
        # Our own token never leaves in a message text either (e.g. inside an error's URL).
        chunks = split_message(self._mask(item.render()), html_mode=item.parse_mode == "HTML")
        for number, chunk in enumerate(chunks, start=1):
            reason = await self._send_chunk(chunk, item.parse_mode)
            if reason is not None:
                self._dropped(item, reason, chunk=f"{number}/{len(chunks)}")
                return

    async def _send_chunk(self, text: str, parse_mode: str | None) -> str | None:
        """Post one chunk with retries; None when delivered, else the reason for giving up."""
        failures = flood_waits = 0
        while True:
            limiter = self.rate_limiter  # the same one throughout, even if swapped meanwhile
            await limiter.acquire()
            try:
                status, body = await self._post(text, parse_mode)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status, body = 0, {"description": f"{type(exc).__name__}: {self._mask(exc)}"}
            finally:
                limiter.release()
            if status == 200:
                TELEGRAM_MESSAGES_SENT_TOTAL.inc()
                return None
            description = str(body.get("description", ""))
            if status == 429:
                flood_waits += 1
                if flood_waits > self.max_flood_waits:
                    return "rate_limited"
                retry_after = _retry_after(body)
                _log.warning("telegram_flood_wait", retry_after=retry_after, attempt=flood_waits)
                await limiter.defer(retry_after)  # holds every sender of this bot, not just us
                continue
            if status == 0 or status >= 500:
                failures += 1
                if failures > self.max_retries:
                    return "network_error" if status == 0 else "server_error"
                delay = backoff_delay(failures - 1, self.retry_base_delay)
                _log.warning(
                    "telegram_send_retry",
                    status=status or None,
                    description=description,
                    retry=failures,
                    max_retries=self.max_retries,
                    delay_seconds=round(delay, 3),
                )
                await self._sleep(delay)
                continue
            _log.error("telegram_message_rejected", status=status, description=description)
            return "rejected"

    async def _post(self, text: str, parse_mode: str | None) -> tuple[int, dict[str, Any]]:
        assert self._session is not None
        payload: dict[str, Any] = {
            "chat_id": self.chat_id,
            "text": text,
            "link_preview_options": {"is_disabled": True},
        }
        if parse_mode:
            payload["parse_mode"] = parse_mode
        url = f"{self.api_url}/bot{self._token}/sendMessage"
        async with self._session.post(url, json=payload) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
            return response.status, body if isinstance(body, dict) else {}

    def _mask(self, value: object) -> str:
        text = str(value)
        return text.replace(self._token, "***") if self._token else text

    def _dropped(
        self,
        item: _Outgoing,
        reason: str,
        *,
        log_level: str = "error",
        error: BaseException | None = None,
        chunk: str | None = None,
    ) -> None:
        TELEGRAM_MESSAGES_DROPPED_TOTAL.labels(reason=reason).inc()
        fields: dict[str, Any] = {"reason": reason, "priority": item.priority.name}
        if chunk is not None:
            fields["chunk"] = chunk
        if error is not None:
            fields["error_type"] = type(error).__name__
            fields["error"] = self._mask(error)
        token = _inside_notifier.set(True)  # this log line must not become a message itself
        try:
            getattr(_log, log_level)("telegram_message_dropped", **fields)
        finally:
            _inside_notifier.reset(token)


def _retry_after(body: dict[str, Any]) -> float:
    parameters = body.get("parameters")
    value = parameters.get("retry_after") if isinstance(parameters, dict) else None
    try:
        return max(float(value), 0.0) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0
