"""The service lifecycle in a real subprocess: graceful SIGTERM, crash exit, bad settings."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.models import Candle
from shared.testing.ports import unused_ports
from shared.testing.telegram_standin import TelegramStandIn

DEMO_SERVICE = """
import os
import sys

from shared.service import ServiceConfigError, ServiceUnavailableError, run_service

NS = os.environ["DEMO_NAMESPACE"]


def say(text):
    print(text, flush=True)


def tasks(ctx):
    if os.environ.get("DEMO_MODE") == "start-crash":
        raise RuntimeError("demo start blew up")
    if os.environ.get("DEMO_MODE") == "misconfigured":
        raise ServiceConfigError("DEMO_SYMBOL: FOOUSDT is not listed: check the spelling")

    async def handle(candle):
        say(f"HANDLING {candle.symbol}")
        # In flight until the test releases it (after it has sent SIGTERM).
        await ctx.redis.blpop([NS + "release"], timeout=60)
        await ctx.redis.set(NS + "done", candle.symbol)
        say("HANDLED")

    ctx.on_stop(lambda: say("STOPPING"))
    work = [ctx.consumer("jobs", handle, block_ms=100).run()]
    if os.environ.get("DEMO_MODE") == "misconfigured-task":
        async def check():
            raise ServiceConfigError("DEMO_SYMBOL: FOOUSDT is not listed: check the spelling")
        work.append(check())
    if os.environ.get("DEMO_MODE") == "unavailable":
        async def reach():
            raise ServiceUnavailableError("the exchange at DEMO_URL=http://x does not answer")
        work.append(reach())
    if os.environ.get("DEMO_MODE") == "crash":
        async def crash():
            say("CRASHING")
            raise RuntimeError("demo task blew up")
        work.append(crash())
    say(f"STARTED {ctx.health.port}")
    return work


if __name__ == "__main__":
    run_service("demo", tasks, bus_namespace=NS,
                use_database=os.environ.get("DEMO_DATABASE") == "1", shutdown_timeout=20)
"""

BOT_TOKEN = "123456:demo-secret-token"


def telegram_to(standin: TelegramStandIn) -> dict[str, str]:
    """The settings that send the demo's alerts to the Bot API stand-in."""
    return {
        "TELEGRAM_ENABLED": "true",
        "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "TELEGRAM_CHAT_ID": "42",
        "TELEGRAM_API_URL": standin.api_url,
    }


class Demo:
    """The demo service as a subprocess, with its stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr
        self.stdout: list[str] = []

    async def expect(self, marker: str, within: float = 30) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(within):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                self.stdout.append(line)
                if not line:
                    raise AssertionError(f"demo exited before printing {marker!r}: {self.stderr}")
                if line.startswith(marker):
                    return line.strip()

    async def wait(self, within: float = 30) -> int:
        assert self.proc.stdout is not None
        async with asyncio.timeout(within):
            self.stdout.append((await self.proc.stdout.read()).decode())
            return await self.proc.wait()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    @property
    def output(self) -> str:
        """Everything it printed on stdout and stderr (logs go to one of them)."""
        return "".join(self.stdout) + self.stderr


@pytest.fixture
def demo_env(tmp_path: Path, redis_server_url: str, redis_namespace: str) -> dict[str, str]:
    (tmp_path / "demo_service.py").write_text(DEMO_SERVICE)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TELEGRAM_", "BINANCE_", "HEALTH_", "LOG_"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
        REDIS_URL=redis_server_url,
        HEALTH_PORT=str(unused_ports()),
        DEMO_NAMESPACE=redis_namespace,
        TRADING_DATA_DIR=str(tmp_path / "data"),
        LOG_FORMAT="json",
    )
    return env


@pytest.fixture
async def start_demo(tmp_path: Path, demo_env: dict[str, str]) -> AsyncIterator[object]:
    started: list[Demo] = []

    async def start(**extra_env: str) -> Demo:
        stderr = tmp_path / f"stderr-{len(started)}.log"
        with stderr.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "demo_service",
                cwd=tmp_path,
                env={**demo_env, **extra_env},
                stdout=asyncio.subprocess.PIPE,
                stderr=sink,
            )
        demo = Demo(proc, stderr)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        if demo.proc.returncode is None:
            demo.proc.kill()
            await demo.proc.wait()


@pytest.fixture
async def redis(redis_server_url: str, redis_namespace: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server_url)
    yield client
    keys = [key async for key in client.scan_iter(match=redis_namespace + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def job(symbol: str) -> Candle:
    return Candle(
        symbol=symbol,
        interval="1m",
        open_time=datetime(2024, 1, 1, tzinfo=UTC),
        open=Decimal(1),
        high=Decimal(1),
        low=Decimal(1),
        close=Decimal(1),
        volume=Decimal(1),
    )


async def test_sigterm_lets_the_in_flight_handler_finish_then_exits_0(
    start_demo: object,
    redis: Redis,
    redis_namespace: str,
    migrated_database_url: str,
) -> None:
    demo: Demo = await start_demo(DATABASE_URL=migrated_database_url, DEMO_DATABASE="1")  # type: ignore[operator]
    port = int((await demo.expect("STARTED")).split()[1])
    bus = EventBus(redis, namespace=redis_namespace)
    await bus.publish("jobs", job("BTCUSDT"))
    await demo.expect("HANDLING BTCUSDT")

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/health") as response,
    ):
        body = await response.json()
    assert response.status == 200, body
    assert set(body["checks"]) == {"redis", "postgres"}

    demo.proc.send_signal(signal.SIGTERM)
    await demo.expect("STOPPING")
    assert demo.proc.returncode is None  # the handler is still in flight
    await bus.publish("jobs", job("ETHUSDT"))  # arrives after intake stopped
    await redis.lpush(redis_namespace + "release", "go")
    await demo.expect("HANDLED")
    assert await demo.wait() == 0, demo.output
    assert await redis.get(redis_namespace + "done") == b"BTCUSDT"
    pending = await redis.xpending(bus.key("jobs"), "demo")
    assert pending["pending"] == 0  # acknowledged before exiting
    assert await bus.consumer_lag("jobs", "demo") == 1  # ETHUSDT left for the next start


async def test_crashing_task_exits_non_zero_and_alerts(start_demo: object, redis: Redis) -> None:
    async with TelegramStandIn() as standin:
        demo: Demo = await start_demo(DEMO_MODE="crash", **telegram_to(standin))  # type: ignore[operator]
        await demo.expect("CRASHING")
        status = await demo.wait()
        assert status != 0, demo.output
        messages = standin.messages
    assert "demo task blew up" in demo.output
    alerts = [message for message in messages if "demo task blew up" in message.text]
    assert len(alerts) == 1  # alerted once, not once per log line
    assert BOT_TOKEN not in demo.output


async def test_invalid_setting_is_one_line_and_exit_2(start_demo: object) -> None:
    demo: Demo = await start_demo(HEALTH_PORT="not-a-port")  # type: ignore[operator]
    assert await demo.wait() == 2
    lines = demo.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("demo: Invalid setting HEALTH_PORT='not-a-port'")


@pytest.mark.parametrize("mode", ["misconfigured", "misconfigured-task"])
async def test_a_setting_found_wrong_at_start_is_one_error_alerted_once_and_exit_2(
    start_demo: object, mode: str
) -> None:
    """A `ServiceConfigError` from the tasks factory or a task (e.g. a symbol the exchange
    does not list): logged and alerted once, no traceback, and exit 2 so that no supervisor
    restarts it."""
    async with TelegramStandIn() as standin:
        demo: Demo = await start_demo(DEMO_MODE=mode, **telegram_to(standin))  # type: ignore[operator]
        assert await demo.wait() == 2, demo.output
        messages = standin.messages
    assert "DEMO_SYMBOL: FOOUSDT is not listed: check the spelling" in demo.output
    assert "Traceback" not in demo.output
    alerts = [message for message in messages if "FOOUSDT is not listed" in message.text]
    assert len(alerts) == 1


async def test_an_unavailable_dependency_exits_1_with_one_line_and_no_traceback(
    start_demo: object,
) -> None:
    """Restarted like a crash (status 1), but logged as its one line: an outage's traceback
    says nothing the line does not, and it would repeat at every restart."""
    demo: Demo = await start_demo(DEMO_MODE="unavailable")  # type: ignore[operator]
    assert await demo.wait() == 1, demo.output
    assert "the exchange at DEMO_URL=http://x does not answer" in demo.output
    assert "service dependency unavailable" in demo.output
    assert "Traceback" not in demo.output


async def test_a_tasks_factory_that_raises_exits_1_and_alerts_once(start_demo: object) -> None:
    """An error while the service sets its tasks up (e.g. the executor reconciling orders
    with an exchange that is down) is a crash like a task's: logged, alerted once, exit 1."""
    async with TelegramStandIn() as standin:
        demo: Demo = await start_demo(DEMO_MODE="start-crash", **telegram_to(standin))  # type: ignore[operator]
        assert await demo.wait() == 1, demo.output
        messages = standin.messages
    assert "service failed to start" in demo.output
    alerts = [message for message in messages if "demo start blew up" in message.text]
    assert len(alerts) == 1
