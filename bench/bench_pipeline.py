"""Live pipeline latency: candle close on the simulator → first order event, through the four
service processes on loopback (issue 7).

    DATABASE_URL=... REDIS_URL=... uv run --frozen python bench/bench_pipeline.py [ROWS]

The simulator replays a slice of ../shared/data/BTCUSDT-1m.csv.gz at manual speed; the bench
closes one candle at a time and takes, for each candle whose signal became an order, the time
from just before the close (client wall clock) to the orders-stream entry (its Redis id is the
XADD time in ms, same machine clock). Throughput: all remaining candles closed at once, timed
until every stream is drained. Needs DATABASE_URL and REDIS_URL (a scratch database).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from shared.db import create_engine, upgrade_to_head
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.platform_harness import running_platform, write_slice  # noqa: E402


async def main(rows: int) -> None:
    import os

    database_url, redis_url = os.environ["DATABASE_URL"], os.environ["REDIS_URL"]
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
        ) as platform:
            orders_key = namespace + "orders"
            engine = create_engine(database_url)

            async def stored(count: int) -> bool:
                async with engine.connect() as connection:
                    found = await connection.execute(text("SELECT count(*) FROM candles"))
                    return int(found.scalar_one()) >= count

            closed = history
            latencies: list[float] = []
            last_id = "0-0"
            stepped = rows // 2
            for _ in range(stepped):
                started_ms = time.time() * 1000
                closed += await platform.advance(1)
                await platform.wait_until(lambda count=closed: stored(count), "stored")
                await platform.wait_until(platform.drained, "drained")
                entries = await platform.redis.xrange(orders_key, f"({last_id}", "+")
                if entries:
                    last_id = entries[-1][0]
                    first_ms = int(entries[0][0].split("-")[0])
                    latencies.append(first_ms - started_ms)
            began = time.perf_counter()
            moved = await platform.advance(rows - stepped)
            await platform.wait_until(lambda: stored(closed + moved), "stored", within=600)
            await platform.wait_until(platform.drained, "drained", within=600)
            elapsed = time.perf_counter() - began
            await engine.dispose()
    latencies.sort()
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(f"candle close -> order event: n={len(latencies)} p50={p50:.1f} ms p99={p99:.1f} ms")
    print(
        f"throughput: {moved} candles through all four services in {elapsed:.2f} s "
        f"= {moved / elapsed:.0f} candles/s"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 400))
