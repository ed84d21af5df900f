"""TelegramNotifier against the Bot API stand-in over real HTTP on 127.0.0.1.

Three tests wait for real (the 1 message/second limit in one process and shared by two
through Redis, and a 429's retry_after, ~21 s together); every other one runs the notifier
on virtual time, and the shared limiter's slots are checked on Redis's clock without waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from shared.config import load_settings
from shared.embedded import ensure_redis, stop_redis
from shared.metrics import REGISTRY
from shared.models import Order, OrderStatus, Position, Side, Signal
from shared.notifier import Priority, TelegramNotifier
from shared.notifier_messages import split_message, utf16_length
from shared.notifier_rate_limit import RedisRateLimiter, rate_limit_key
from shared.testing.telegram_standin import TelegramStandIn, parse_html
from shared.testing.virtual_time import VirtualTime

TOKEN = "987654:SECRET-bot-token-do-not-log"
CHAT = "4242"


@pytest.fixture
async def standin() -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn(token=TOKEN, chat_ids=[CHAT]) as server:
        yield server


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("telegram_messages_dropped_total", {"reason": reason}) or 0.0


def _sent() -> float:
    return REGISTRY.get_sample_value("telegram_messages_sent_total") or 0.0


def _notifier(api_url: str, time: VirtualTime | None = None, **options: Any) -> TelegramNotifier:
    if time is not None:
        options.update(clock=time.now, sleep=time.sleep)
    return TelegramNotifier(TOKEN, CHAT, api_url=api_url, **options)


def _visible(text: str) -> str:
    problem, visible = parse_html(text)
    assert problem is None, problem
    return visible


# --- rate limit and flood control (real time) ----------------------------------------------


@pytest.mark.slow
async def test_ten_messages_queued_at_once_arrive_no_faster_than_one_per_second(
    standin: TelegramStandIn,
) -> None:
    notifier = _notifier(standin.api_url)
    await notifier.start()
    for n in range(10):
        assert notifier.send(f"message {n}")
    received = await standin.wait_for_messages(10, within=60)
    await notifier.close()

    assert [m.text for m in received] == [f"message {n}" for n in range(10)]
    gaps = [b.arrived_at - a.arrived_at for a, b in itertools.pairwise(received)]
    assert min(gaps) >= 1.0, gaps


@pytest.mark.slow
async def test_a_429_with_retry_after_2_holds_the_next_attempt_and_the_message_arrives(
    standin: TelegramStandIn,
) -> None:
    standin.fail_next(1, status=429, retry_after=2)
    async with _notifier(standin.api_url) as notifier:
        notifier.send("after the flood wait")
        await standin.wait_for_messages(1, within=30)
    flood, delivered = standin.requests
    assert flood.status == 429
    assert delivered.text == "after the flood wait"
    assert delivered.arrived_at - flood.arrived_at >= 2.0


# --- the limit shared by every service through Redis ---------------------------------------

# The shared limiter spaces request *starts* on Redis's clock; the stand-in stamps arrivals
# after the request crossed loopback HTTP and aiohttp's parsing. That path takes a few
# milliseconds that vary from request to request (more on a busy 2-core machine), so a gap
# between arrivals may be shorter than the gap between starts by the difference of two such
# delays. 50 ms covers that jitter and is still far below what an unshared limit gives
# (messages from different processes milliseconds apart).
ARRIVAL_JITTER = 0.05


@pytest.fixture
async def redis_clients(redis_server_url: str, redis_namespace: str) -> AsyncIterator[list[Redis]]:
    """Four separate connections to the shared Redis, as four services would have."""
    clients = [Redis.from_url(redis_server_url) for _ in range(4)]
    try:
        yield clients
    finally:
        keys = await clients[0].keys(f"{redis_namespace}*")
        if keys:
            await clients[0].delete(*keys)
        for client in clients:
            await client.aclose()


@pytest.mark.slow
async def test_two_notifiers_sharing_redis_send_no_faster_than_one_per_second_together(
    standin: TelegramStandIn, redis_clients: list[Redis], redis_namespace: str
) -> None:
    services = [_notifier(standin.api_url), _notifier(standin.api_url)]
    for notifier, redis in zip(services, redis_clients, strict=False):
        notifier.share_rate_limit(redis, namespace=redis_namespace)
        await notifier.start()
    for n in range(5):
        for name, notifier in zip("ab", services, strict=True):
            assert notifier.send(f"{name}{n}")
    received = await standin.wait_for_messages(10, within=60)
    for notifier in services:
        await notifier.close()

    assert sorted(m.text for m in received) == sorted(f"{x}{n}" for x in "ab" for n in range(5))
    gaps = [b.arrived_at - a.arrived_at for a, b in itertools.pairwise(received)]
    assert min(gaps) >= 1.0 - ARRIVAL_JITTER, gaps
    # Both really sent: each one's messages arrived in its own order, interleaved.
    for name in "ab":
        assert [m.text for m in received if m.text[0] == name] == [f"{name}{n}" for n in range(5)]


_RESERVE_IN_A_PROCESS = """
import asyncio, json, sys
from redis.asyncio import Redis
from shared.notifier_rate_limit import RedisRateLimiter

async def main(url, key, count):
    clients = [Redis.from_url(url) for _ in range(3)]
    limiters = [RedisRateLimiter(c, key, 1.0) for c in clients]
    print("ready", flush=True)
    await clients[0].blpop([key + ":go"])  # the parent starts every process at once
    reservations = await asyncio.gather(
        *(limiters[n % 3].reserve() for n in range(count))
    )
    print(json.dumps([round(r.slot * 1e6) for r in reservations]), flush=True)
    for c in clients:
        await c.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_concurrent_reservations_from_processes_and_coroutines_are_strictly_spaced(
    redis_clients: list[Redis], redis_server_url: str, redis_namespace: str
) -> None:
    key = rate_limit_key(TOKEN, CHAT, redis_namespace)
    assert TOKEN not in key and key.startswith(redis_namespace) and key.endswith(CHAT)
    per_process, processes = 30, 3
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RESERVE_IN_A_PROCESS,
            redis_server_url,
            key,
            str(per_process),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    for child in children:
        assert child.stdout is not None
        assert (await child.stdout.readline()).strip() == b"ready"
    limiters = [RedisRateLimiter(redis, key, 1.0) for redis in redis_clients]
    seconds, micros = await redis_clients[0].time()
    started = seconds * 1_000_000 + micros
    await redis_clients[0].rpush(f"{key}:go", *range(processes))
    here = await asyncio.gather(*(limiters[n % 4].reserve() for n in range(40)))
    slots = [round(r.slot * 1e6) for r in here]
    for child in children:
        out, _ = await child.communicate()
        assert child.returncode == 0
        slots += json.loads(out)

    assert len(slots) == 40 + processes * per_process
    assert all(r.wait == pytest.approx(r.slot - r.now) and r.wait >= 0 for r in here)
    ordered = sorted(slots)
    assert ordered[0] >= started  # slots are on Redis's clock, from now on
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert min(gaps) >= 1_000_000, min(gaps)  # distinct, and a full interval apart


async def test_a_redis_outage_falls_back_to_the_local_limit_logged_once(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    redis_url = await asyncio.to_thread(ensure_redis, tmp_path)  # ours alone, to stop
    redis = Redis.from_url(redis_url)
    time = VirtualTime()
    notifier = _notifier(standin.api_url, time)
    limiter = notifier.share_rate_limit(redis)
    limiter.outage_retry = 0.0  # try Redis on every send: still one log line
    try:
        with structlog.testing.capture_logs() as logs:
            async with notifier:
                notifier.send("through redis")
                await standin.wait_for_messages(1)
                assert await redis.exists(limiter.key)  # the slot was taken in Redis
                assert not limiter.using_fallback
                await asyncio.to_thread(stop_redis, tmp_path)
                for n in range(3):
                    notifier.send(f"during the outage {n}")
                await standin.wait_for_messages(4)
                assert limiter.using_fallback
    finally:
        await asyncio.to_thread(stop_redis, tmp_path)
        await redis.aclose()
    assert [m.text for m in standin.messages] == ["through redis"] + [
        f"during the outage {n}" for n in range(3)
    ]
    fallbacks = [e for e in logs if e["event"] == "telegram_rate_limit_fallback"]
    assert len(fallbacks) == 1 and fallbacks[0]["log_level"] == "warning"
    assert fallbacks[0]["error_type"] == "ConnectionError"
    assert time.sleeps == [1.0, 1.0, 1.0]  # the local limit paced the three, 1 s apart


async def test_a_429_holds_every_notifier_sharing_the_limit(
    standin: TelegramStandIn, redis_clients: list[Redis], redis_namespace: str
) -> None:
    time = VirtualTime()
    notifier = _notifier(standin.api_url, time)
    notifier.share_rate_limit(redis_clients[0], namespace=redis_namespace)
    other = RedisRateLimiter.for_bot(redis_clients[1], TOKEN, CHAT, namespace=redis_namespace)
    standin.fail_next(1, status=429, retry_after=30)
    async with notifier:
        notifier.send("flood")
        await standin.wait_for_messages(1)
    # Another service reserving now is told to wait out (most of) the 30 s flood wait too.
    reservation = await other.reserve()
    assert reservation.wait > 25.0
    assert [r.status for r in standin.requests] == [429, 200]
    assert any(29.0 < s <= 30.0 for s in time.sleeps), time.sleeps  # waited on Redis's slot


# --- failures (virtual time) ---------------------------------------------------------------


async def test_a_500_is_retried_3_times_then_dropped_with_a_log_line_and_the_caller_unaffected(
    standin: TelegramStandIn,
) -> None:
    time = VirtualTime()
    standin.fail_next(4, status=500)
    dropped_before = _dropped("server_error")
    with structlog.testing.capture_logs() as logs:
        async with _notifier(standin.api_url, time) as notifier:
            assert notifier.send("lost to the 500s")  # returns at once, never raises
            notifier.send("the next one still goes out")
            await standin.wait_for_messages(1)
    assert [r.status for r in standin.requests] == [500, 500, 500, 500, 200]
    assert standin.messages[0].text == "the next one still goes out"
    assert _dropped("server_error") == dropped_before + 1
    drops = [e for e in logs if e["event"] == "telegram_message_dropped"]
    assert len(drops) == 1 and drops[0]["reason"] == "server_error"
    retries = [e for e in logs if e["event"] == "telegram_send_retry"]
    assert [e["retry"] for e in retries] == [1, 2, 3]
    for n, retry in enumerate(retries):  # jittered exponential backoff from 1 s
        assert 2**n <= retry["delay_seconds"] <= 2**n * 1.5
        assert retry["delay_seconds"] in [round(d, 3) for d in time.sleeps]


async def test_a_403_is_not_retried(standin: TelegramStandIn) -> None:
    standin.fail_next(1, status=403)
    rejected_before = _dropped("rejected")
    with structlog.testing.capture_logs() as logs:
        async with _notifier(standin.api_url, VirtualTime()) as notifier:
            notifier.send("blocked")
            notifier.send("second")
            await standin.wait_for_messages(1)
    assert [(r.status, r.text) for r in standin.requests] == [(403, "blocked"), (200, "second")]
    assert _dropped("rejected") == rejected_before + 1
    [rejection] = [e for e in logs if e["event"] == "telegram_message_rejected"]
    assert rejection["status"] == 403
    assert rejection["description"] == "Forbidden: bot was blocked by the user"


@pytest.mark.parametrize("status", [400, 401])
async def test_other_client_errors_are_not_retried(standin: TelegramStandIn, status: int) -> None:
    standin.fail_next(1, status=status)
    async with _notifier(standin.api_url, VirtualTime()) as notifier:
        notifier.send("refused")
        notifier.send("fine")
        await standin.wait_for_messages(1)
    assert [r.status for r in standin.requests] == [status, 200]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_network_errors_are_retried_3_times_then_dropped() -> None:
    time = VirtualTime()
    before = _dropped("network_error")
    with structlog.testing.capture_logs() as logs:
        notifier = _notifier(f"http://127.0.0.1:{_closed_port()}", time)
        await notifier.start()
        notifier.send("nobody listens")
        await notifier.close()
    assert _dropped("network_error") == before + 1
    assert [e["retry"] for e in logs if e["event"] == "telegram_send_retry"] == [1, 2, 3]


async def test_the_bot_token_appears_in_no_log_line_including_aiohttps(
    standin: TelegramStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every stdlib logger: aiohttp, asyncio, ...
    standin.fail_next(1, status=500)
    standin.fail_next(1, status=429, retry_after=1)
    standin.fail_next(1, status=403)
    with structlog.testing.capture_logs() as logs:
        async with _notifier(standin.api_url, VirtualTime()) as notifier:
            notifier.send("a")
            notifier.send("b")
            notifier.send_error(f"GET {standin.api_url}/bot{TOKEN}/getMe failed", "svc")
            await standin.wait_for_requests(5)
        offline = _notifier(f"http://127.0.0.1:{_closed_port()}", VirtualTime())
        await offline.start()
        offline.send("c")
        await offline.close()
    assert logs, "the scenarios should have logged something"
    assert TOKEN not in repr(logs)
    lines = [record.getMessage() for record in caplog.records] + [caplog.text]
    assert not [line for line in lines if TOKEN in line]
    assert TOKEN not in repr(notifier)
    assert all(TOKEN not in r.text for r in standin.requests)
    assert any("/bot***/getMe" in r.text for r in standin.requests)


# --- queue, priority, coalescing -----------------------------------------------------------


async def test_a_full_queue_drops_the_oldest_low_priority_message_and_counts_it(
    standin: TelegramStandIn,
) -> None:
    before = _dropped("queue_full")
    notifier = _notifier(standin.api_url, VirtualTime(), max_queue=3)
    # Not started yet: everything waits in the queue.
    notifier.send("low 1")
    notifier.send("low 2")
    notifier.send("high 1", priority=Priority.HIGH)
    notifier.send("high 2", priority=Priority.HIGH)  # evicts low 1
    notifier.send("low 3")  # evicts low 2
    notifier.send("low 4")  # evicts low 3
    assert notifier.queued == 3
    assert _dropped("queue_full") == before + 3
    async with notifier:
        await standin.wait_for_messages(3)
    assert [m.text for m in standin.messages] == ["high 1", "high 2", "low 4"]


async def test_a_low_message_finding_only_high_ones_is_dropped_itself(
    standin: TelegramStandIn,
) -> None:
    notifier = _notifier(standin.api_url, VirtualTime(), max_queue=2)
    notifier.send("high 1", priority=Priority.HIGH)
    notifier.send("high 2", priority=Priority.HIGH)
    assert not notifier.send("low")
    async with notifier:
        await standin.wait_for_messages(2)
    assert [m.text for m in standin.messages] == ["high 1", "high 2"]


async def test_identical_errors_queued_together_arrive_as_one_message_with_a_count(
    standin: TelegramStandIn,
) -> None:
    notifier = _notifier(standin.api_url, VirtualTime())
    for _ in range(7):
        notifier.send_error("ConnectionError: redis went away", "order-executor")
    notifier.send_error("another error", "order-executor")
    async with notifier:
        await standin.wait_for_messages(2)
    first, second = (_visible(m.text) for m in standin.messages)
    assert "redis went away" in first and "(×7 in the last minute)" in first
    assert "another error" in second and "×" not in second


async def test_repeats_after_the_first_went_out_are_reported_once_when_the_minute_ends(
    standin: TelegramStandIn,
) -> None:
    time = VirtualTime(auto_advance=False)
    async with _notifier(standin.api_url, time) as notifier:
        notifier.send_error("boom", "collector")
        await standin.wait_for_messages(1)
        for _ in range(3):
            notifier.send_error("boom", "collector")
        await time.wait_for_sleeper()  # the worker sleeps until the minute ends
        assert len(standin.requests) == 1
        await time.advance(60)
        await standin.wait_for_messages(2)
        notifier.send_error("boom", "collector")  # a new minute: sent again, no count
        await time.wait_for_sleeper()  # ...after the 1 s rate limit
        await time.advance(1)
        await standin.wait_for_messages(3)
    texts = [_visible(m.text) for m in standin.messages]
    assert "×" not in texts[0]
    assert "(×4 in the last minute)" in texts[1]
    assert "×" not in texts[2]


# --- formatting and splitting --------------------------------------------------------------


async def test_user_text_is_escaped_and_every_message_kind_is_accepted(
    standin: TelegramStandIn,
) -> None:
    now = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    signal = Signal(
        id="sig-1",
        strategy="rsi<14>",
        symbol="BTCUSDT",
        interval="1m",
        side=Side.BUY,
        quantity=Decimal("0.010"),
        price=Decimal("68500.10"),
        candle_time=now,
        reason="rsi < 30 & <b>falling</b>",
    )
    order = Order(
        client_order_id="cid-1",
        symbol="BTCUSDT",
        side=Side.SELL,
        quantity=Decimal("0.5"),
        status=OrderStatus.REJECTED,
        reason="Account has insufficient balance <-2010>",
        created_at=now,
        updated_at=now,
    )
    position = Position(
        symbol="ETHUSDT", quantity=Decimal("2"), avg_entry_price=Decimal("3000"), updated_at=now
    )
    async with _notifier(standin.api_url, VirtualTime()) as notifier:
        notifier.send_signal(signal)
        notifier.send_order(order)
        notifier.send_daily_summary([position], Decimal("-12.50"))
        notifier.send_error("KeyError: '<missing>' & more", "strategy-engine")
        await standin.wait_for_messages(4)
    visible = {_visible(m.text) for m in standin.messages}
    joined = "\n".join(visible)
    assert "rsi < 30 & <b>falling</b>" in joined
    assert "insufficient balance <-2010>" in joined
    assert "KeyError: '<missing>' & more" in joined
    assert "68500.1" in joined and "ETHUSDT" in joined and "-12.5" in joined


async def test_a_message_over_4096_characters_arrives_split_into_valid_chunks(
    standin: TelegramStandIn,
) -> None:
    lines = [f"<b>line {n}</b> with &amp; an entity and some padding text" for n in range(300)]
    text = "\n".join(lines)
    assert len(text) > 4096 * 3
    async with _notifier(standin.api_url, VirtualTime()) as notifier:
        notifier.send(text)
        await standin.wait_for_messages(4)
        await notifier.close()
    assert all(r.delivered for r in standin.requests)
    rebuilt = "".join(_visible(m.text) for m in standin.messages)
    assert re.sub(r"\s", "", rebuilt) == re.sub(r"\s", "", _visible(text))
    # cuts fell on line boundaries
    assert all(_visible(m.text).rstrip().endswith("padding text") for m in standin.messages)


_html_piece = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="<>&"), max_size=300),
    st.sampled_from(["<b>", "</b>", "<i>", "</i>", "&amp;", "&lt;", "\n", "📈", "<pre>", "</pre>"]),
)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(_html_piece, max_size=80), limit=st.integers(min_value=40, max_value=400))
def test_split_message_chunks_are_valid_html_within_the_limit_and_lose_nothing(
    pieces: list[str], limit: int
) -> None:
    text = _balance("".join(pieces))
    problem, visible = parse_html(text)
    assume(problem is None)
    assume(_tag_overhead(text) * 2 < limit)  # tags alone cannot fill a chunk in practice
    chunks = split_message(text, limit)
    for chunk in chunks:
        assert utf16_length(chunk) <= limit
        assert parse_html(chunk)[0] is None, chunk
    rebuilt = "".join(parse_html(c)[1] for c in chunks)
    assert re.sub(r"\s", "", rebuilt) == re.sub(r"\s", "", visible)


def _tag_overhead(text: str) -> int:
    """The most characters the open tags and their closers take at any point."""
    stack: list[str] = []
    most = 0
    for tag in re.findall(r"</?\w+>", text):
        if tag.startswith("</"):
            stack.pop()
        else:
            stack.append(tag)
        most = max(most, sum(2 * len(t) + 1 for t in stack))
    return most


def _balance(text: str) -> str:
    """Drop tags that would make the text invalid, so the property sees valid inputs."""
    out, stack = [], []
    for token in re.findall(r"</?\w+>|[^<]+|<", text):
        if token.startswith("</"):
            name = token[2:-1]
            if stack and stack[-1] == name:
                stack.pop()
                out.append(token)
        elif token.startswith("<") and token.endswith(">"):
            stack.append(token[1:-1])
            out.append(token)
        else:
            out.append(token)
    out.extend(f"</{name}>" for name in reversed(stack))
    return "".join(out)


# --- lifecycle -----------------------------------------------------------------------------


async def test_disabled_notifier_is_a_no_op(standin: TelegramStandIn) -> None:
    for notifier in (
        TelegramNotifier(TOKEN, CHAT, api_url=standin.api_url, enabled=False),
        TelegramNotifier("", CHAT, api_url=standin.api_url),
        TelegramNotifier.from_settings(
            load_settings(telegram_bot_token=TOKEN, telegram_chat_id=CHAT, telegram_enabled=False)
        ),
    ):
        await notifier.start()
        assert not notifier.send("x")
        assert not notifier.send_error("x", "svc")
        assert not await notifier.send("awaitable too")
        await notifier.close()
    assert standin.requests == []


async def test_from_settings_sends_when_enabled(standin: TelegramStandIn) -> None:
    settings = load_settings(
        telegram_bot_token=TOKEN,
        telegram_chat_id=CHAT,
        telegram_enabled=True,
        telegram_api_url=standin.api_url,
    )
    time = VirtualTime()
    async with TelegramNotifier.from_settings(settings, clock=time.now, sleep=time.sleep) as n:
        assert await n.send("configured")
        await standin.wait_for_messages(1)
    assert standin.messages[0].text == "configured"


async def test_sending_from_another_thread_is_delivered(standin: TelegramStandIn) -> None:
    async with _notifier(standin.api_url, VirtualTime()) as notifier:
        assert await asyncio.to_thread(notifier.send, "from a worker thread")
        await standin.wait_for_messages(1)
    assert standin.messages[0].text == "from a worker thread"


async def test_close_drains_the_queue_and_counts_what_it_could_not_send(
    standin: TelegramStandIn,
) -> None:
    sent_before = _sent()
    async with _notifier(standin.api_url, VirtualTime()) as notifier:
        for n in range(3):
            notifier.send(f"drained {n}")
    assert [m.text for m in standin.messages] == ["drained 0", "drained 1", "drained 2"]
    assert _sent() == sent_before + 3

    before = _dropped("shutdown")
    stuck = _notifier(standin.api_url, VirtualTime(auto_advance=False))
    await stuck.start()
    for n in range(3):
        stuck.send(f"stuck {n}")
    await standin.wait_for_messages(4)  # the first goes out; the rest wait on the rate limit
    await stuck.close(drain_timeout=0.2)
    assert _dropped("shutdown") == before + 2
    assert not stuck.send("after close")
