"""The whole platform for end-to-end tests: `trading run`'s `Platform` on a candle slice.

The exchange simulator replays a slice of ../shared/data/BTCUSDT-1m.csv.gz at manual speed,
so the test decides when candles close; the four services run as their own processes on the
test's fresh database and Redis namespace, with Telegram pointed at the stand-in.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from shared.testing.ports import unused_ports
from shared.testing.telegram_standin import TelegramStandIn
from trading_cli.run_commands import Platform, RunOptions
from trading_cli.service_catalog import ServiceSpec, service_specs
from trading_cli.status_commands import ServiceProbe, probe_services

BOT_TOKEN = "123456:e2e-token"
CHAT_ID = "4242"


def free_port() -> int:
    """A port for a server a child process binds (below the ephemeral range: see
    `shared.testing.ports`)."""
    return unused_ports()


def free_port_base(count: int = 4) -> int:
    """A base whose next ``count`` ports are free (the services' health ports BASE+1..)."""
    return unused_ports(count + 1)


def write_slice(shared_data: Path, folder: Path, rows: int, skip: int = 0) -> Path:
    """The first ``rows`` candles (after ``skip``) of the real BTCUSDT 1m file, as a CSV."""
    with gzip.open(shared_data / "BTCUSDT-1m.csv.gz", "rt") as source:
        header = source.readline()
        lines = [line for _, line in zip(range(skip + rows), source, strict=False)][skip:]
    path = folder / "BTCUSDT-1m.csv"
    path.write_text(header + "".join(lines))
    return path


def write_engine_config(folder: Path, extra_strategies: tuple[str, ...] = ()) -> Path:
    """ema_crossover on BTCUSDT 1m (its defaults), plus ``extra_strategies`` on the same series."""
    path = folder / "engine.yaml"
    lines = ["instances:"]
    for name in ("ema_crossover", *extra_strategies):
        lines += [f"  - strategy: {name}", "    symbol: BTCUSDT", "    interval: 1m"]
    path.write_text("\n".join(lines) + "\n")
    return path


EXPLODING_STRATEGY = """
from decimal import Decimal
from typing import ClassVar

from shared.strategy import BaseStrategy, StrategyParams


class ExplodingParams(StrategyParams):
    quantity: Decimal = Decimal("0.001")


class ExplodingStrategy(BaseStrategy):
    \"\"\"Raises on live candles: the engine must contain it, count it and alert once.\"\"\"

    name: ClassVar[str] = "exploding"
    params_model: ClassVar[type[StrategyParams]] = ExplodingParams

    @property
    def warmup_period(self) -> int:
        return 1

    def _reset_state(self) -> None:
        pass

    def _step(self, candle):
        # Only on live candles (from 23:30): the engine's warm-up does not contain a raising
        # strategy yet (it takes the whole engine down), which is not what this checks.
        if (candle.open_time.hour, candle.open_time.minute) >= (23, 30):
            raise RuntimeError("exploding strategy blew up on purpose")
        return None
"""


def write_exploding_strategy(folder: Path) -> Path:
    """A strategies folder (for STRATEGIES_EXTRA_DIR) holding a strategy that always raises."""
    plugins = folder / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "exploding_strategy.py").write_text(EXPLODING_STRATEGY)
    return plugins


@dataclass
class RunningPlatform:
    platform: Platform
    specs: list[ServiceSpec]
    sim_url: str
    redis: Redis
    namespace: str
    standin: TelegramStandIn
    lines: list[tuple[str, str]]

    async def sim(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.sim_url}/_sim/{path}", json=body) as response,
        ):
            assert response.status == 200, await response.text()
            return await response.json()

    async def advance(self, candles: int) -> int:
        """Close ``candles`` candles (the simulator's clock follows its replay)."""
        answer = await self.sim("POST", "advance", {"candles": candles})
        return int(answer["moved"])

    async def probes(self) -> dict[str, ServiceProbe]:
        found = await probe_services(self.specs, wait_seconds=2.0, metrics=True)
        return {probe.service: probe for probe in found}

    async def wait_until(self, condition: Any, what: str, within: float = 90.0) -> Any:
        """Poll ``condition`` (async, truthy when met) — the services run in other processes,
        so there is no event to wait on; the deadline turns a hang into a clear failure."""
        try:
            async with asyncio.timeout(within):
                while True:
                    result = await condition()
                    if result:
                        return result
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}") from None

    async def all_healthy(self) -> bool:
        probes = await self.probes()
        return all(probe.status == "ok" for probe in probes.values())

    async def drained(self) -> bool:
        """Every consumer group of every stream has read and acknowledged every entry."""
        for stream in ("candles", "signals", "orders"):
            key = self.namespace + stream
            if not await self.redis.exists(key):
                return False
            info = await self.redis.xinfo_stream(key)
            last = info["last-generated-id"]
            for group in await self.redis.xinfo_groups(key):
                if group["pending"] or group["last-delivered-id"] != last:
                    return False
        return True


@asynccontextmanager
async def running_platform(
    *,
    tmp_path: Path,
    data: Path,
    database_url: str,
    redis_url: str,
    namespace: str,
    history: int,
    env: dict[str, str] | None = None,
    extra_strategies: tuple[str, ...] = (),
) -> AsyncIterator[RunningPlatform]:
    """Start simulator + services; stop them all on exit (also when the test fails)."""
    lines: list[tuple[str, str]] = []
    async with TelegramStandIn() as standin:
        base, sim_port = free_port_base(), free_port()
        specs = service_specs(None, base)
        options = RunOptions(
            services=specs,
            data=[data],
            speed="manual",
            history=history,
            sim_port=sim_port,
            live_view=False,
            env={
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "BUS_NAMESPACE": namespace,
                "TRADING_DATA_DIR": str(tmp_path / "data"),
                "STRATEGY_ENGINE_CONFIG": str(write_engine_config(tmp_path, extra_strategies)),
                "PORTFOLIO_SNAPSHOT_INTERVAL": "60",
                "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
                "TELEGRAM_CHAT_ID": CHAT_ID,
                "TELEGRAM_ENABLED": "true",
                "TELEGRAM_API_URL": standin.api_url,
                "LOG_FORMAT": "console",
                "LOG_LEVEL": "INFO",
                "DRY_RUN": "true",
                **(env or {}),
            },
        )
        platform = Platform(options, sink=lambda name, line: lines.append((name, line)))
        redis = Redis.from_url(redis_url, decode_responses=True)
        failed = False
        try:
            await platform.start()
            running = RunningPlatform(
                platform, specs, f"http://127.0.0.1:{sim_port}", redis, namespace, standin, lines
            )
            await running.wait_until(running.all_healthy, "every service healthy", within=180)
            yield running
        except BaseException:
            # What each service said and what its /health says now: a failure in another
            # process is otherwise only "timed out".
            failed = True
            for probe in await probe_services(specs, wait_seconds=2.0):
                print(f"health of {probe.service}: {probe.status} {probe.failing}")
            raise
        finally:
            await platform.stop()
            await redis.aclose()
            if failed or any("Traceback" in line for _, line in lines):
                print("\n".join(f"{name} | {line}" for name, line in lines[-300:]))
