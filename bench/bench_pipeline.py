"""Live pipeline latency: candle close on the simulator → its order event, through the four
service processes on loopback (issue 7).

    DATABASE_URL=... REDIS_URL=... uv run --frozen python bench/bench_pipeline.py [ROWS [STEPPED]]

The simulator replays a slice of ../shared/data/BTCUSDT-1m.csv.gz at manual speed (ROWS
candles after 105 of history; default 1000); the strategy engine runs ema_crossover and macd
on it, the executor in dry run. The bench closes the first STEPPED candles (default: half of
ROWS) one at a time: it moves the candle's partial updates (untimed, as on Binance they come
during the candle), then its closing update. For each candle one of whose signals became an
order, it takes the time from the close (the simulator's wall clock as it began the closing
move, `moved_at_ms`) to that order's first event on the orders stream (the PENDING record,
published once the order is stored: the point where a live executor sends it), split into
hops by the Redis ids of the candle, signal and order entries (each the XADD time in ms, on
the same machine clock). A second row times the same from just before the bench's HTTP
request for the close: it adds the bench's own request (~0.8 ms), which no exchange sends.
A last row takes every order of a stepped candle, not only the first (when two strategies
signal on one candle, the second order's event comes after the first's).
About one stepped candle in eight makes an order, so 500 stepped candles give ~63 samples,
whose p99 is their maximum; 3000 rows with 2500 stepped give ~300. Throughput: the rest of
the candles closed at once, timed until every candle is stored and every stream drained.
Needs DATABASE_URL (the bench makes a scratch database of its own on that server, dropped
afterwards: an earlier run's orders left stored would not be published again and spoil the
samples) and REDIS_URL (its own namespace).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from exchange_simulator.replay import STAGES
from rich.console import Console
from rich.progress import track
from rich.table import Table
from shared.bus_envelope import decode
from shared.db import create_engine, upgrade_to_head
from shared.testing.databases import scratch_database
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.platform_harness import running_platform, write_slice  # noqa: E402

EXTRA_STRATEGIES = ("macd",)  # with ema_crossover: a signal on about one candle in ten
SETTLE_SECONDS = 0.03
"""Left to the services after each close before the bench looks at the database and the
streams: its checks (a count over the candles table, XINFO calls) would otherwise run on the
two cores while the candle is on its way, slowing what is measured. Not a stand-in for
synchronisation: the checks that follow still wait until the candle is stored and drained."""


def _entry_ms(entry_id: str) -> int:
    """A stream entry id's time: the XADD's server clock in ms (same machine as the bench)."""
    return int(entry_id.split("-")[0])


async def _new_entries(redis: Any, key: str, after: str) -> list[tuple[str, Any]]:
    return list(await redis.xrange(key, f"({after}", "+"))


def _event(fields: Any) -> Any:
    return decode(fields).event


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def main(rows: int, stepped: int) -> None:
    if not 0 < stepped < rows:
        raise SystemExit(f"STEPPED ({stepped}) must be between 0 and ROWS ({rows}), exclusive")
    async with scratch_database(os.environ["DATABASE_URL"], "bench_pipeline") as database_url:
        await measure(rows, stepped, database_url, os.environ["REDIS_URL"])


async def measure(rows: int, stepped: int, database_url: str, redis_url: str) -> None:
    await asyncio.to_thread(upgrade_to_head, database_url)
    namespace = f"bench:{uuid.uuid4().hex[:8]}:"
    history = 105
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        data = write_slice(ROOT.parent / "shared" / "data", tmp, history + rows)
        async with running_platform(
            tmp_path=tmp,
            data=data,
            database_url=database_url,
            redis_url=redis_url,
            namespace=namespace,
            history=history,
            env={"LOG_LEVEL": "WARNING", "TELEGRAM_ENABLED": "false"},
            extra_strategies=EXTRA_STRATEGIES,
        ) as platform:
            redis = platform.redis
            engine = create_engine(database_url)

            async def stored(count: int) -> bool:
                async with engine.connect() as connection:
                    found = await connection.execute(text("SELECT count(*) FROM candles"))
                    return int(found.scalar_one()) >= count

            closed = history
            samples: list[tuple[float, float, float, float, float]] = []
            every_order: list[float] = []  # close → each order's event, all signals of a candle
            last = {stream: "0-0" for stream in ("candles", "signals", "orders")}
            # One HTTP connection to the simulator for every close: a new connection a candle
            # would add its set-up to "close → candle on the bus" and its teardown to the
            # work running beside the pipeline.
            http = aiohttp.ClientSession()
            advance_url = f"{platform.sim_url}/_sim/advance"
            for _ in track(range(stepped), description="closing candles one at a time"):
                # The candle's partial updates first, untimed: on Binance they come during
                # the candle, and the collector only notes them. Timed: its closing event.
                async with http.post(advance_url, json={"stages": STAGES - 1}) as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["replay"]["stage"] == STAGES - 1
                await asyncio.sleep(SETTLE_SECONDS)
                requested_ms = time.time() * 1000
                async with http.post(advance_url, json={"stages": 1}) as response:
                    assert response.status == 200, await response.text()
                    answer = await response.json()
                    assert answer["replay"]["stage"] == 0, answer  # closed, the next opened
                    closed_ms = float(answer["moved_at_ms"])
                closed += 1
                await asyncio.sleep(SETTLE_SECONDS)
                await platform.wait_until(lambda count=closed: stored(count), "stored")
                await platform.wait_until(platform.drained, "drained")
                new = {}
                for stream in last:
                    new[stream] = await _new_entries(redis, namespace + stream, last[stream])
                    if new[stream]:
                        last[stream] = new[stream][-1][0]
                signals = {_event(fields).id: entry for entry, fields in new["signals"]}
                # The first order event of each signal of this candle: its PENDING record (in
                # dry run the fill follows at the next candle's open, so later order events of
                # earlier signals are not samples of this candle's latency).
                firsts: dict[str, str] = {}
                for entry, fields in new["orders"]:
                    signal_id = getattr(_event(fields), "signal_id", None)
                    if isinstance(signal_id, str) and signal_id in signals:
                        firsts.setdefault(signal_id, entry)
                if not firsts or not new["candles"]:
                    continue
                every_order += [_entry_ms(entry) - closed_ms for entry in firsts.values()]
                first_signal, first_order = next(iter(firsts.items()))
                candle_ms = _entry_ms(new["candles"][0][0])
                signal_ms = _entry_ms(signals[first_signal])
                order_ms = _entry_ms(first_order)
                samples.append(
                    (
                        order_ms - closed_ms,
                        order_ms - requested_ms,
                        candle_ms - closed_ms,
                        signal_ms - candle_ms,
                        order_ms - signal_ms,
                    )
                )
            await http.close()
            began = time.perf_counter()
            moved = await platform.advance(rows - stepped)
            await platform.wait_until(lambda: stored(closed + moved), "stored", within=600)
            await platform.wait_until(platform.drained, "drained", within=600)
            elapsed = time.perf_counter() - began
            await engine.dispose()
    report(samples, every_order, moved, elapsed)


def report(
    samples: list[tuple[float, float, float, float, float]],
    every_order: list[float],
    moved: int,
    elapsed: float,
) -> None:
    count = len(samples)
    note = " (p99 = max: under 100 samples)" if count < 100 else ""
    table = Table(title=f"candle close → order event, n = {count} candles with an order{note}")
    for column in ("measure", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    names = (
        "close → order event (total)",
        "  (from the bench's HTTP request for the close)",
        "· close → candle on the bus (simulator + collector)",
        "· candle → signal on the bus (strategy engine)",
        "· signal → order event on the bus (order executor)",
    )
    rows = [(name, [sample[index] for sample in samples]) for index, name in enumerate(names)]
    rows.append(
        (f"close → every order's event (n = {len(every_order)}: each signal's)", every_order)
    )
    for name, unsorted in rows:
        values = sorted(unsorted)
        if values:
            table.add_row(
                name,
                *(f"{_percentile(values, f):.1f}" for f in (0.5, 0.9, 0.99)),
                f"{values[-1]:.1f}",
            )
    console = Console()
    console.print(table)
    console.print(
        f"throughput: {moved} candles through all four services in {elapsed:.2f} s "
        f"= {moved / elapsed:.0f} candles/s; load average {os.getloadavg()}"
    )


if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    asyncio.run(main(total, int(sys.argv[2]) if len(sys.argv) > 2 else total // 2))
