"""`trading simulator` as a user runs it: a real process on a candle file, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
import typer
from exchange_simulator.testing import synthetic_candles
from shared.candle_io import CANDLE_COLUMNS
from shared.testing.ports import unused_ports
from trading_cli.main import app
from typer.testing import CliRunner

HEADER = ",".join(CANDLE_COLUMNS)


def write_candle_file(folder: Path, count: int) -> Path:
    path = folder / "BTCUSDT-1m.csv"
    rows = [HEADER]
    for c in synthetic_candles("BTCUSDT", count):
        open_ms = int(c.open_time.timestamp() * 1000)
        rows.append(
            f"{open_ms},{c.open},{c.high},{c.low},{c.close},{c.volume},{open_ms + 59_999},,,,"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
async def test_simulator_command_serves_the_file_and_stops_on_sigterm(tmp_path, http) -> None:
    data = write_candle_file(tmp_path, 30)
    port = unused_ports()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from trading_cli.main import app; app()",
        "simulator",
        "--data",
        str(data),
        "--speed",
        "manual",
        "--port",
        str(port),
        "--api-key",
        "cli-key:cli-secret",
        "--history",
        "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = b""
        async with asyncio.timeout(60):
            while b"Ctrl-C" not in banner:
                line = await process.stdout.readline()
                assert line, (await process.stderr.read()).decode()  # type: ignore[union-attr]
                banner += line
        assert b"cli-secret" not in banner
        base = f"http://127.0.0.1:{port}"
        async with http.get(f"{base}/api/v3/klines?symbol=BTCUSDT&interval=1m") as response:
            assert len(await response.json()) == 11
        async with http.get(f"{base}/api/v3/account", headers={"X-MBX-APIKEY": "cli-key"}) as r:
            assert (await r.json())["code"] == -1102  # the key is known; the request unsigned
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
    assert code == 0


def test_malformed_api_key_is_named_without_the_secret(tmp_path) -> None:
    data = write_candle_file(tmp_path, 3)
    result = CliRunner().invoke(app, ["simulator", "--data", str(data), "--api-key", "no-colon"])
    assert result.exit_code == 1
    assert "--api-key number 1 must look like KEY:SECRET" in result.output


def test_missing_file_is_named(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["simulator", "--data", str(tmp_path / "BTCUSDT-1m.csv"), "--api-key", "k:s"]
    )
    assert result.exit_code == 1
    assert "no candle file at" in result.output


def test_from_db_replays_the_stored_candles(migrated_database_url, monkeypatch) -> None:
    from shared.db import create_engine, create_sessionmaker, upsert_candles
    from trading_cli.simulator_commands import load_from_database

    candles = synthetic_candles("BTCUSDT", 10)

    async def store() -> None:
        engine = create_engine(migrated_database_url)
        async with create_sessionmaker(engine).begin() as session:
            await upsert_candles(session, candles)
        await engine.dispose()

    asyncio.run(store())
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    start = candles[2].open_time.replace(tzinfo=None)
    assert load_from_database(["btcusdt"], "1m", start, None) == {"BTCUSDT": candles[2:]}
    with pytest.raises(typer.Exit):
        load_from_database(["ETHUSDT"], "1m", None, None)
