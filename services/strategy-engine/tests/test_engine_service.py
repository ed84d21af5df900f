"""`python -m strategy_engine` as its own process: candles in on the bus, signals out, SIGTERM."""

from __future__ import annotations

import asyncio
import csv
import gzip
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from shared.bus import EventBus
from shared.bus_envelope import decode
from shared.models import Candle, Signal
from shared.streams import CANDLES, SIGNALS
from shared.testing.ports import unused_ports
from strategy_engine.main import main

from strategies.ema_crossover_strategy import EmaCrossoverStrategy

ROOT = Path(__file__).resolve().parents[3]

ENGINE_YAML = """
instances:
  - strategy: ema_crossover
    symbol: BTCUSDT
    interval: 1m
    params: {short_period: 5, long_period: 13}
"""


def read_candles(path: Path, count: int) -> list[Candle]:
    with gzip.open(path, "rt", newline="") as handle:
        return [
            Candle(
                symbol="BTCUSDT",
                interval="1m",
                open_time=datetime.fromtimestamp(int(row["open_time"]) / 1000, UTC),
                open=Decimal(row["open"]),
                high=Decimal(row["high"]),
                low=Decimal(row["low"]),
                close=Decimal(row["close"]),
                volume=Decimal(row["volume"]),
            )
            for row in itertools.islice(csv.DictReader(handle), count)
        ]


@pytest.fixture
async def bus(redis_server_url: str, redis_namespace: str) -> AsyncIterator[EventBus]:
    redis = Redis.from_url(redis_server_url)
    yield EventBus(redis, namespace=redis_namespace)
    keys = [key async for key in redis.scan_iter(match=f"{redis_namespace}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture
def service_env(
    tmp_path: Path, migrated_database_url: str, redis_server_url: str, redis_namespace: str
) -> dict[str, str]:
    config = tmp_path / "engine.yaml"
    config.write_text(ENGINE_YAML)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TELEGRAM_", "BINANCE_", "HEALTH_", "LOG_", "STRATEGY"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        DATABASE_URL=migrated_database_url,
        REDIS_URL=redis_server_url,
        BUS_NAMESPACE=redis_namespace,
        HEALTH_PORT=str(unused_ports()),
        STRATEGY_ENGINE_CONFIG=str(config),
        TRADING_DATA_DIR=str(tmp_path / "data"),
        LOG_FORMAT="json",
    )
    return env


async def signals_on(bus: EventBus, count: int, within: float = 60) -> list[Signal]:
    """Block on the signals stream until `count` signals are there."""
    key, last, found = bus.key(SIGNALS), "0", []
    async with asyncio.timeout(within):
        while len(found) < count:
            answer = await bus.redis.xread({key: last}, block=1000)
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    last = entry_id
                    event = decode(fields).event
                    assert isinstance(event, Signal)
                    found.append(event)
    return found


async def test_service_turns_bus_candles_into_signals_and_stops_on_sigterm(
    tmp_path: Path, service_env: dict[str, str], bus: EventBus, shared_data: Path
) -> None:
    candles = read_candles(shared_data / "BTCUSDT-1m.csv.gz", 300)
    strategy = EmaCrossoverStrategy({"short_period": 5, "long_period": 13})
    expected = [s for s in map(strategy.on_candle, candles) if s is not None]
    assert len(expected) >= 4
    await bus.publish_many(CANDLES, candles)
    stderr = tmp_path / "stderr.log"
    # The collector of these settings collects BTCUSDT 5m only: the engine warns that its
    # BTCUSDT 1m instance gets no candles from it (and still handles those on the bus).
    service_env = {**service_env, "COLLECTOR_SYMBOLS": "BTCUSDT", "COLLECTOR_INTERVALS": "5m"}
    with stderr.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "strategy_engine",
            cwd=tmp_path,
            env=service_env,
            stdout=sink,
            stderr=sink,
        )
    try:
        got = await signals_on(bus, len(expected))
        assert got == expected
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0, stderr.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = stderr.read_text()
    assert '"signal generated"' in output
    assert output.count("no candles will come for this instance") == 1
    assert "add the symbol to COLLECTOR_SYMBOLS" in output


def test_bad_engine_config_is_one_line_and_exit_status_2(
    tmp_path: Path,
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "engine.yaml").write_text(
        "instances:\n  - {strategy: ema_crossover, symbol: BTCUSDT, interval: 1m,"
        " params: {short_periodd: 3}}\n"
    )
    monkeypatch.chdir(tmp_path)
    for key in ("STRATEGY_ENGINE_CONFIG", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.setenv(key, service_env[key])
    with pytest.raises(SystemExit) as exited:
        main()  # stops before connecting to anything
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "unknown parameter 'short_periodd' (did you mean 'short_period'?)" in lines[0]
    assert "instance 1 (ema_crossover BTCUSDT 1m)" in lines[0]
