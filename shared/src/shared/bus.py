"""The event bus: typed events on Redis Streams with consumer groups (at-least-once).

Publishing: ``await bus.publish("candles", candle)`` appends one entry (see
`shared.bus_envelope` for its fields) with ``XADD ... MAXLEN ~ maxlen``, so a stream keeps
roughly its newest ``maxlen`` entries. ``publish_many`` appends a batch with one server-side
script call (`PUBLISH_SCRIPT`: the same XADDs, run by Redis in order and atomically), so a
batch costs the client one command and one reply instead of one of each per event.
Approximate trimming removes only whole radix-tree nodes, so a stream may hold up to
``stream-node-max-entries`` (Redis default 100) entries more than ``maxlen``; that is the
documented slack.

Consuming: each service reads a stream in its own consumer group (the group is the service
name), each process under a unique consumer name (host-pid-random), so every service sees
every event and the instances of one service share the work. For each entry:

- the envelope is decoded into its ``shared.models`` class; an entry that does not decode
  (bad JSON, unknown type, failing validation, a type the consumer does not accept) goes
  straight to the dead-letter stream ``<stream>:dlq``;
- the handler runs; the entry is acknowledged (XACK) only after it returns, so a crash
  before that leaves the entry pending;
- a handler exception leaves it pending and it is retried (XCLAIM by the same consumer after
  ``retry_delay``); once its delivery count (XPENDING's times_delivered, which every
  delivery and claim increments) reaches ``max_deliveries`` it is dead-lettered with the
  error, logged, counted in ``bus_events_dead_lettered_total``, and the stream goes on;
- entries pending longer than ``claim_idle_ms`` under another consumer (one that died) are
  taken over with XAUTOCLAIM and handled here. ``claim_idle_ms`` must exceed the slowest
  handler, or a live consumer's entry may be handled twice (handlers are idempotent anyway).

Ordering holds within one consumer except around retries: a failing entry is retried after
the entries behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.bus_envelope import (
    FIELD,
    MalformedEvent,
    decode_event,
    encode,
    encode_many,
    text_fields,
)
from shared.metrics import (
    BUS_CONSUMED_TOTAL,
    BUS_CONSUMER_LAG,
    BUS_DEAD_LETTERED_TOTAL,
    BUS_PUBLISHED_TOTAL,
    ERRORS_TOTAL,
    EVENT_PROCESSING_SECONDS,
)
from shared.resilience import backoff_delay

if TYPE_CHECKING:
    from prometheus_client import Counter
    from redis.commands.core import AsyncScript

    from shared.config import Settings

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "LAG_SCAN_LIMIT",
    "PUBLISH_CHUNK",
    "PUBLISH_SCRIPT",
    "RECONNECT_MAX_DELAY",
    "Consumer",
    "DeadLetter",
    "EventBus",
    "Handler",
    "consumer_name",
]

log = structlog.get_logger("shared.bus")

Handler = Callable[[Any], Awaitable[object]]
"""An async function called with each decoded event (a ``shared.models`` instance)."""

DEAD_LETTER_SUFFIX = ":dlq"
RECONNECT_MAX_DELAY = 30.0
"""The longest wait between two attempts to reach a lost Redis."""
EXIT_ACK_TIMEOUT = 2.0
"""How long a consumer interrupted by an error or a cancel tries to acknowledge what it handled."""
LAG_SCAN_LIMIT = 10_000
"""On Redis < 7 (no 'lag' in XINFO GROUPS) the lag is counted by scanning, up to this many."""

PUBLISH_CHUNK = 1000
"""`EventBus.publish_many` appends at most this many events per script call, so one call
keeps Redis busy for about a millisecond at most."""
PUBLISH_SCRIPT = f"""
local ids = {{}}
for i = 2, #ARGV do
  ids[i - 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', '{FIELD}', ARGV[i])
end
return ids
"""
"""KEYS[1] = the stream, ARGV = maxlen then one envelope per event: the XADDs of a batch."""

StreamEntry = tuple[Any, Mapping[Any, Any] | None]


def consumer_name() -> str:
    """A consumer name unique to this process: ``<host>-<pid>-<random>``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a dead-letter stream: the original fields and why it was given up on."""

    id: str
    source_id: str
    group: str
    consumer: str
    deliveries: int
    error: str
    time: datetime
    fields: dict[str, str]


class EventBus:
    """Publishes typed events to Redis Streams and creates consumers for them.

    Every key the bus touches is ``namespace + stream`` (tests pass a unique namespace).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str = "",
        maxlen: int = 100_000,
        max_deliveries: int = 5,
        claim_idle_ms: int = 30_000,
    ) -> None:
        if maxlen < 1 or max_deliveries < 1 or claim_idle_ms < 1:
            raise ValueError("maxlen, max_deliveries and claim_idle_ms must be at least 1")
        self.redis = redis
        self.namespace = namespace
        self.maxlen = maxlen
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self._published: dict[str, Counter] = {}
        self._publish_script: AsyncScript = redis.register_script(PUBLISH_SCRIPT)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings, *, namespace: str = "") -> EventBus:
        """A bus with BUS_STREAM_MAXLEN, BUS_MAX_DELIVERIES and BUS_CLAIM_IDLE_MS applied."""
        return cls(
            redis,
            namespace=namespace,
            maxlen=settings.bus_stream_maxlen,
            max_deliveries=settings.bus_max_deliveries,
            claim_idle_ms=settings.bus_claim_idle_ms,
        )

    def key(self, stream: str) -> str:
        """The Redis key of ``stream``."""
        return self.namespace + stream

    def dead_letter_key(self, stream: str) -> str:
        """The Redis key of ``stream``'s dead-letter stream."""
        return self.key(stream) + DEAD_LETTER_SUFFIX

    def _published_counter(self, stream: str) -> Counter:
        counter = self._published.get(stream)
        if counter is None:
            counter = self._published[stream] = BUS_PUBLISHED_TOTAL.labels(stream)
        return counter

    async def publish(self, stream: str, event: BaseModel) -> str:
        """Append ``event`` to ``stream``; returns the entry id."""
        fields: dict[Any, Any] = encode(event)
        entry_id = await self.redis.xadd(
            self.key(stream), fields, maxlen=self.maxlen, approximate=True
        )
        self._published_counter(stream).inc()
        return _str(entry_id)

    async def publish_many(self, stream: str, events: Iterable[BaseModel]) -> list[str]:
        """Append several events, in order; returns their ids.

        Up to `PUBLISH_CHUNK` events go in one round trip (one `PUBLISH_SCRIPT` call, which
        Redis runs atomically: all of them are appended or, on an error, none of that chunk).
        Raises TypeError, before anything is sent, for a model the bus doesn't carry.
        """
        envelopes = encode_many(events)
        key = self.key(stream)
        ids: list[str] = []
        for start in range(0, len(envelopes), PUBLISH_CHUNK):
            chunk = envelopes[start : start + PUBLISH_CHUNK]
            added = await self._publish_script(keys=[key], args=[self.maxlen, *chunk])
            self._published_counter(stream).inc(len(chunk))
            ids += [_str(entry_id) for entry_id in added]
        return ids

    async def ensure_group(self, stream: str, group: str, *, start_id: str = "0") -> None:
        """Create ``group`` on ``stream`` (and the stream) unless it exists.

        ``start_id="0"`` makes a new group read the entries already in the stream too, so
        events published before a service's first start are not skipped.
        """
        try:
            await self.redis.xgroup_create(self.key(stream), group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def consumer(
        self,
        stream: str,
        group: str,
        handler: Handler,
        *,
        name: str | None = None,
        service: str | None = None,
        accept: Sequence[type[BaseModel]] | None = None,
        batch_size: int = 100,
        block_ms: int = 1000,
        retry_delay: float = 0.5,
        reconnect_delay: float = 0.5,
    ) -> Consumer:
        """A `Consumer` of ``stream`` in ``group``; start it with ``await consumer.run()``."""
        return Consumer(
            self,
            stream,
            group,
            handler,
            name=name,
            service=service,
            accept=accept,
            batch_size=batch_size,
            block_ms=block_ms,
            retry_delay=retry_delay,
            reconnect_delay=reconnect_delay,
        )

    async def consumer_lag(self, stream: str, group: str) -> int | None:
        """Entries of ``stream`` not yet delivered to ``group`` (None if the group is unknown).

        Uses XINFO GROUPS' ``lag`` (Redis 7+). Where that is missing or unknown (Redis 6.2,
        or after deletions) the entries after the group's last-delivered id are counted, up
        to `LAG_SCAN_LIMIT`.
        """
        key = self.key(stream)
        try:
            groups = await self.redis.xinfo_groups(key)
        except ResponseError:
            return None
        for info in groups:
            if _str(info.get("name")) != group:
                continue
            lag = info.get("lag")
            if lag is not None:
                return int(lag)
            last = _str(info.get("last-delivered-id", "0-0"))
            entries = await self.redis.xrange(key, min=f"({last}", count=LAG_SCAN_LIMIT)
            return len(entries or ())
        return None

    async def dead_letters(self, stream: str, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` entries of ``stream``'s dead-letter stream."""
        raw: list[Any] = await self.redis.xrange(self.dead_letter_key(stream), count=count) or []
        letters = []
        for entry_id, fields in raw:
            data = text_fields(fields)
            letters.append(
                DeadLetter(
                    id=_str(entry_id),
                    source_id=data.pop("dlq_source_id", ""),
                    group=data.pop("dlq_group", ""),
                    consumer=data.pop("dlq_consumer", ""),
                    deliveries=int(data.pop("dlq_deliveries", "0")),
                    error=data.pop("dlq_error", ""),
                    time=datetime.fromisoformat(data.pop("dlq_time")),
                    fields=data,
                )
            )
        return letters


class Consumer:
    """Reads one stream in one consumer group and hands each event to a handler.

    ``await run()`` until ``stop()``: stop ends intake (no new read is issued; a read in
    progress returns within ``block_ms``), the entries already received are handled and
    acknowledged, then ``run()`` returns. Cancelling ``run()`` instead leaves unacknowledged
    entries pending, to be claimed by another consumer after ``claim_idle_ms``.
    """

    def __init__(
        self,
        bus: EventBus,
        stream: str,
        group: str,
        handler: Handler,
        *,
        name: str | None = None,
        service: str | None = None,
        accept: Sequence[type[BaseModel]] | None = None,
        batch_size: int = 100,
        block_ms: int = 1000,
        retry_delay: float = 0.5,
        reconnect_delay: float = 0.5,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.group = group
        self.name = name or consumer_name()
        self.service = service or group
        self._handler = handler
        self._accept = tuple(accept) if accept else None
        self._key = bus.key(stream)
        self._batch_size = batch_size
        self._block_ms = max(1, block_ms)
        self._retry_delay = retry_delay
        self._reconnect_delay = reconnect_delay
        self._claim_interval = min(max(bus.claim_idle_ms / 2000, 0.01), 10.0)
        self._lag_interval = 5.0
        self._retry_ids: set[str] = set()
        self._unacked: list[Any] = []
        """Ids of handled entries not yet acknowledged (see `_read`)."""
        self._retry_at = 0.0
        self._stopping = asyncio.Event()
        self.running = False
        self.handled = 0
        self.dead_lettered = 0
        self.reconnections = 0
        self.connection_lost = asyncio.Event()
        """Set whenever the consumer loses its connection to Redis (for monitoring and tests)."""
        self._processing = EVENT_PROCESSING_SECONDS.labels(self.service, stream)
        self._consumed = BUS_CONSUMED_TOTAL.labels(stream, group)
        self._dead = BUS_DEAD_LETTERED_TOTAL.labels(stream, group)
        self._lag = BUS_CONSUMER_LAG.labels(stream, group)

    def stop(self) -> None:
        """Stop intake; ``run()`` returns once the entries already received are handled."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Consume until `stop()`.

        A lost connection to Redis is retried with jittered exponential backoff (capped at
        `RECONNECT_MAX_DELAY` s, logged each time), and a group that vanished (a Redis
        restarted without persistence) is created again; any other error propagates.
        """
        self.running = True
        log.info("bus consumer started", stream=self.stream, group=self.group, consumer=self.name)
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    await self.bus.ensure_group(self.stream, self.group)
                    failures = 0
                    await self._consume()
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    delay = backoff_delay(
                        failures, self._reconnect_delay, max_delay=RECONNECT_MAX_DELAY
                    )
                    failures += 1
                    self.reconnections += 1
                    self.connection_lost.set()
                    log.warning(
                        "bus connection lost; reconnecting",
                        stream=self.stream,
                        group=self.group,
                        attempt=failures,
                        delay=round(delay, 3),
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    log.warning("bus consumer group vanished; creating it again", group=self.group)
                    self._retry_ids.clear()
                    self._unacked.clear()  # their group is gone: nothing left to acknowledge
        finally:
            self.running = False
            log.info("bus consumer stopped", stream=self.stream, group=self.group)

    async def _consume(self) -> None:
        try:
            await self._consume_until_stopped()
        except BaseException:
            # The entries already handled are done, whatever interrupted us: acknowledge
            # them if Redis still answers (else the next read or a reclaim does).
            if self._unacked:
                # Bounded: a cancelled consumer must not hang on a Redis that stopped answering.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(EXIT_ACK_TIMEOUT):
                        await self._flush_acks()
            raise
        await self._flush_acks()

    async def _consume_until_stopped(self) -> None:
        next_claim = next_lag = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_claim:
                await self._claim_abandoned()
                next_claim = time.monotonic() + self._claim_interval
            if self._retry_ids and now >= self._retry_at:
                await self._retry_failed()
            if now >= next_lag:
                await self.update_lag()
                next_lag = time.monotonic() + self._lag_interval
            if self._stopping.is_set():
                break
            wake = next_claim
            if self._retry_ids:
                wake = min(wake, self._retry_at)
            block = max(1, min(self._block_ms, int((wake - time.monotonic()) * 1000)))
            response = await self._read(block)
            for _key, entries in _stream_entries(response):
                await self._handle_batch(entries, defer_ack=True)

    async def _read(self, block: int) -> Any:
        """XREADGROUP, preceded in the same round trip by the XACK of the last batch.

        Each round trip costs far more client CPU than an entry does, so the previous
        batch's acknowledgement travels with the next read: Redis applies the XACK first,
        as soon as it arrives, so an entry is still acknowledged right after its handler
        returned, and a busy consumer makes one round trip per batch instead of two.
        """
        if not self._unacked:
            return await self.bus.redis.xreadgroup(
                self.group, self.name, {self._key: ">"}, count=self._batch_size, block=block
            )
        acknowledged = len(self._unacked)
        pipe = self.bus.redis.pipeline(transaction=False)
        pipe.xack(self._key, self.group, *self._unacked)
        pipe.xreadgroup(
            self.group, self.name, {self._key: ">"}, count=self._batch_size, block=block
        )
        _, response = await pipe.execute()
        self._acknowledged(acknowledged)
        return response

    async def _flush_acks(self) -> None:
        """Acknowledge the handled entries now (one XACK)."""
        if self._unacked:
            await self.bus.redis.xack(self._key, self.group, *self._unacked)
            self._acknowledged(len(self._unacked))

    def _acknowledged(self, count: int) -> None:
        del self._unacked[:count]
        self._consumed.inc(count)
        self.handled += count

    async def update_lag(self) -> int | None:
        """Refresh the ``bus_consumer_lag`` gauge; returns the lag (None when unknown)."""
        lag = await self.bus.consumer_lag(self.stream, self.group)
        if lag is not None:
            self._lag.set(lag)
        return lag

    async def _handle_batch(
        self,
        entries: Sequence[StreamEntry],
        deliveries: Mapping[str, int] | None = None,
        *,
        defer_ack: bool = False,
    ) -> None:
        """Handle a batch in order and acknowledge the handled entries with one XACK
        (with ``defer_ack``, the XACK goes with the next read: see `_read`).

        This loop runs once per event, so the happy path is kept to decoding, the handler
        and its timing; delivery counts (XPENDING) are only looked up when a handler fails.
        """
        done = self._unacked
        handler, accept = self._handler, self._accept
        observe, clock = self._processing.observe, time.perf_counter
        try:
            for raw_id, fields in entries:
                if raw_id is None:
                    continue
                if fields is None:
                    # Trimmed away while pending (Redis 6.2 XCLAIM answers nil): nothing to do.
                    done.append(raw_id)
                    continue
                if deliveries:
                    known = deliveries.get(_str(raw_id))
                    if known is not None and known > self.bus.max_deliveries:
                        await self._dead_letter(
                            _str(raw_id),
                            fields,
                            f"delivered {known} times without being acknowledged "
                            "(its consumers stopped while handling it)",
                            known,
                        )
                        continue
                try:
                    event = decode_event(fields)
                    if accept is not None and not isinstance(event, accept):
                        raise MalformedEvent(
                            f"{type(event).__name__} is not accepted on {self.stream!r} "
                            f"(expected {', '.join(t.__name__ for t in accept)})"
                        )
                except MalformedEvent as exc:
                    # Counted in errors_total by the logging chain when _dead_letter logs it.
                    await self._dead_letter(_str(raw_id), fields, f"malformed: {exc}", 1)
                    continue
                started = clock()
                try:
                    await handler(event)
                except Exception as exc:
                    ERRORS_TOTAL.labels(self.service, type(exc).__name__).inc()
                    await self._handler_failed(_str(raw_id), fields, exc)
                    continue
                observe(clock() - started)
                done.append(raw_id)
        finally:
            if not defer_ack:
                await self._flush_acks()

    async def _handler_failed(
        self, entry_id: str, fields: Mapping[Any, Any], error: Exception
    ) -> None:
        pending = await self.bus.redis.xpending_range(
            self._key, self.group, min=entry_id, max=entry_id, count=1
        )
        deliveries = int(pending[0]["times_delivered"]) if pending else 1
        message = f"{type(error).__name__}: {error}"
        if deliveries >= self.bus.max_deliveries:
            await self._dead_letter(entry_id, fields, message, deliveries)
            return
        log.warning(
            "bus handler failed; will retry",
            stream=self.stream,
            group=self.group,
            entry_id=entry_id,
            delivery=deliveries,
            max_deliveries=self.bus.max_deliveries,
            error=message,
        )
        self._retry_ids.add(entry_id)
        self._retry_at = time.monotonic() + self._retry_delay

    async def _retry_failed(self) -> None:
        ids: list[Any] = sorted(self._retry_ids, key=_id_key)
        self._retry_ids.clear()
        # XCLAIM by ourselves re-delivers the entry and increments its delivery count.
        claimed: list[Any] = await self.bus.redis.xclaim(self._key, self.group, self.name, 0, ids)
        await self._handle_batch(claimed)

    async def _claim_abandoned(self) -> None:
        """Take over entries idle for ``claim_idle_ms`` under consumers that stopped."""
        start = "0-0"
        while not self._stopping.is_set():
            response = await self.bus.redis.xautoclaim(
                self._key,
                self.group,
                self.name,
                self.bus.claim_idle_ms,
                start_id=start,
                count=self._batch_size,
            )
            start = _str(response[0])
            entries = [entry for entry in response[1] if entry[0] is not None]
            if len(entries) < len(response[1]):
                await self._ack_vanished()
            if entries:
                deliveries = await self._delivery_counts([_str(e[0]) for e in entries])
                log.info(
                    "bus claimed abandoned entries",
                    stream=self.stream,
                    group=self.group,
                    count=len(entries),
                )
                await self._handle_batch(entries, deliveries)
            if start == "0-0":
                return

    async def _ack_vanished(self) -> None:
        """Acknowledge our pending entries that were trimmed away.

        Redis 6.2's XAUTOCLAIM answers nil, without the id, for a pending entry deleted from
        the stream (7.x drops such ids from the pending list itself).
        """
        pending = await self.bus.redis.xpending_range(
            self._key, self.group, min="-", max="+", count=1000, consumername=self.name
        )
        gone = []
        for row in pending:
            entry_id = _str(row["message_id"])
            if not await self.bus.redis.xrange(self._key, min=entry_id, max=entry_id, count=1):
                gone.append(entry_id)
        if gone:
            await self.bus.redis.xack(self._key, self.group, *gone)
            log.warning("bus acknowledged trimmed pending entries", stream=self.stream, ids=gone)

    async def _delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        ordered = sorted(ids, key=_id_key)
        pending = await self.bus.redis.xpending_range(
            self._key,
            self.group,
            min=ordered[0],
            max=ordered[-1],
            count=len(ordered) + 1000,
            consumername=self.name,
        )
        wanted = set(ids)
        counts = {}
        for row in pending:
            entry_id = _str(row["message_id"])
            if entry_id in wanted:
                counts[entry_id] = int(row["times_delivered"])
        return counts

    async def _dead_letter(
        self, entry_id: str, fields: Mapping[Any, Any], error: str, deliveries: int
    ) -> None:
        try:
            original = text_fields(fields)
        except MalformedEvent:
            original = {"raw": repr(dict(fields))}
        record = {
            **{k: v for k, v in original.items() if not k.startswith("dlq_")},
            "dlq_source_id": entry_id,
            "dlq_group": self.group,
            "dlq_consumer": self.name,
            "dlq_deliveries": str(deliveries),
            "dlq_error": error[:2000],
            "dlq_time": datetime.now(UTC).isoformat(),
        }
        # One transaction: the entry is either moved (copied and acknowledged) or left as is.
        pipe = self.bus.redis.pipeline(transaction=True)
        pipe.xadd(
            self.bus.dead_letter_key(self.stream),
            record,  # type: ignore[arg-type]
            maxlen=self.bus.maxlen,
            approximate=True,
        )
        pipe.xack(self._key, self.group, entry_id)
        await pipe.execute()
        self._dead.inc()
        self.dead_lettered += 1
        log.error(
            "bus entry dead-lettered",
            stream=self.stream,
            group=self.group,
            entry_id=entry_id,
            deliveries=deliveries,
            error=error,
        )


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _stream_entries(response: Any) -> list[tuple[Any, list[StreamEntry]]]:
    """XREADGROUP's answer as [(key, entries)] for RESP2 (list) and RESP3 (dict) alike."""
    if not response:
        return []
    if isinstance(response, dict):
        return [
            (key, value[0] if value and isinstance(value[0], list) else value)
            for key, value in response.items()
        ]
    return [(key, entries) for key, entries in response]
