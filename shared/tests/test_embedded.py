"""The embedded PostgreSQL and Redis: real servers, started under a temporary data folder.

These tests always use the embedded servers (never DATABASE_URL / REDIS_URL): they are what
is under test. Every folder's servers are stopped when its tests end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis
from shared.config import load_settings
from shared.embedded import (
    EmbeddedServerError,
    ensure_postgres,
    ensure_redis,
    resolve_database_url,
    resolve_redis_url,
    stop_postgres,
    stop_redis,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine


def _stop_both(folder: Path) -> None:
    stop_postgres(folder)
    stop_redis(folder)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data folder shared by this module's tests (each sets up the state it needs)."""
    folder = tmp_path_factory.mktemp("embedded")
    try:
        yield folder
    finally:
        _stop_both(folder)


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty data folder whose servers are stopped after the test."""
    try:
        yield tmp_path
    finally:
        _stop_both(tmp_path)


def _postmaster_pid(folder: Path) -> int:
    return int((folder / "postgres" / "postmaster.pid").read_text().split()[0])


def _redis_pid(folder: Path) -> int:
    return int((folder / "redis" / "redis.pid").read_text().strip())


def _running_in(folder: Path) -> list[psutil.Process]:
    """Server processes working in `folder` whose parent does not (postmasters, redis)."""
    found = []
    for process in psutil.process_iter(["cwd", "status"]):
        if process.info["cwd"] != str(folder) or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            parent_cwd = process.parent().cwd() if process.parent() else None
        except psutil.Error:
            parent_cwd = None
        if parent_cwd != str(folder):
            found.append(process)
    return found


async def _asyncpg_fetch(url: str, query: str) -> object:
    parsed = make_url(url)
    conn = await asyncpg.connect(
        user=parsed.username, host=parsed.query["host"], database=parsed.database
    )
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def _dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def _write_postmaster_pid(folder: Path, pid: int) -> None:
    # The eight lines PostgreSQL itself writes (pid, data folder, start, port, socket dir,
    # listen address, shared memory, status).
    pgdata = folder / "postgres"
    lines = [str(pid), str(pgdata), "1700000000", "5432", str(pgdata), "", "0 0", "ready"]
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")


async def test_postgres_starts_with_the_trading_database(data_dir: Path) -> None:
    url = ensure_postgres(data_dir)

    assert url.startswith("postgresql+asyncpg://")
    assert await _asyncpg_fetch(url, "SELECT current_database()") == "trading"
    # The same URL works as is for SQLAlchemy's asyncpg dialect, as shared.db uses it.
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            version = (await conn.execute(text("SHOW server_version_num"))).scalar_one()
    finally:
        await engine.dispose()
    assert int(version) >= 180000


def test_second_ensure_postgres_reuses_the_running_server(data_dir: Path) -> None:
    first = ensure_postgres(data_dir)
    pid = _postmaster_pid(data_dir)

    assert ensure_postgres(data_dir) == first
    assert _postmaster_pid(data_dir) == pid
    assert [p.pid for p in _running_in(data_dir / "postgres")] == [pid]


async def test_redis_serves_streams_with_xautoclaim(data_dir: Path) -> None:
    url = ensure_redis(data_dir)
    client = aioredis.from_url(url)
    try:
        assert await client.ping() is True
        entry = await client.xadd("orders", {"id": "1"})
        await client.xgroup_create("orders", "executor", id="0")
        delivered = await client.xreadgroup("executor", "crashed", {"orders": ">"})
        assert delivered[0][1][0][0] == entry
        # Redis 6.2 answers [next id, entries]; 7.x adds the deleted ids.
        reply = await client.xautoclaim("orders", "executor", "survivor", min_idle_time=0)
        assert [item[0] for item in reply[1]] == [entry]
    finally:
        await client.aclose()


def test_second_ensure_redis_reuses_the_running_server(data_dir: Path) -> None:
    first = ensure_redis(data_dir)
    pid = _redis_pid(data_dir)

    assert ensure_redis(data_dir) == first
    assert _redis_pid(data_dir) == pid
    assert [p.pid for p in _running_in(data_dir / "redis")] == [pid]


async def test_stop_postgres_stops_it_and_the_data_survives_a_restart(data_dir: Path) -> None:
    url = ensure_postgres(data_dir)
    old_pid = _postmaster_pid(data_dir)
    await _asyncpg_fetch(url, "CREATE TABLE IF NOT EXISTS kept (n int)")

    assert stop_postgres(data_dir) is True
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == "zombie"
    assert stop_postgres(data_dir) is False

    url = ensure_postgres(data_dir)
    assert _postmaster_pid(data_dir) != old_pid
    assert await _asyncpg_fetch(url, "SELECT to_regclass('kept')::text") == "kept"


async def test_stop_redis_stops_it_and_the_data_survives_a_restart(data_dir: Path) -> None:
    client = aioredis.from_url(ensure_redis(data_dir))
    await client.set("kept", "yes")
    await client.aclose()
    old_pid = _redis_pid(data_dir)

    assert stop_redis(data_dir) is True
    assert not (data_dir / "redis" / "redis.pid").exists()
    assert stop_redis(data_dir) is False

    client = aioredis.from_url(ensure_redis(data_dir))
    try:
        assert await client.get("kept") == b"yes"
    finally:
        await client.aclose()
    assert _redis_pid(data_dir) != old_pid


async def test_postgres_in_a_folder_too_deep_for_a_unix_socket_still_answers(
    fresh_dir: Path,
) -> None:
    # Unix socket paths are limited to ~107 bytes; the wheel then puts the socket elsewhere.
    deep = fresh_dir / ("deep-" * 20)
    assert len(str(deep / "postgres" / ".s.PGSQL.5432")) > 107

    url = ensure_postgres(deep)

    assert await _asyncpg_fetch(url, "SELECT current_database()") == "trading"
    assert stop_postgres(deep) is True


@pytest.mark.parametrize("stale_pid", ["dead", "live-foreign"])
async def test_stale_postgres_pid_file_is_replaced(data_dir: Path, stale_pid: str) -> None:
    stop_postgres(data_dir)
    # "live-foreign": the pid of a crashed server now belongs to another program (this one).
    pid = _dead_pid() if stale_pid == "dead" else os.getpid()
    _write_postmaster_pid(data_dir, pid)

    url = ensure_postgres(data_dir)

    assert _postmaster_pid(data_dir) != pid
    assert await _asyncpg_fetch(url, "SELECT 1") == 1


@pytest.mark.parametrize("stale_pid", ["dead", "live-foreign"])
async def test_stale_redis_pid_file_is_replaced(data_dir: Path, stale_pid: str) -> None:
    stop_redis(data_dir)
    pid = _dead_pid() if stale_pid == "dead" else os.getpid()
    (data_dir / "redis" / "redis.pid").write_text(f"{pid}\n")

    url = ensure_redis(data_dir)

    assert _redis_pid(data_dir) != pid
    client = aioredis.from_url(url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.parametrize("server", ["postgres", "redis"])
def test_concurrent_first_starts_end_with_one_server(fresh_dir: Path, server: str) -> None:
    child = (
        "import sys; from pathlib import Path; from shared import embedded\n"
        f"ensure = embedded.ensure_{server}\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "print(ensure(Path(sys.argv[1])), flush=True)\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", child, str(fresh_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in children:  # both imported and waiting: release them together
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    for process in children:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    urls = {process.communicate(timeout=90)[0].strip() for process in children}

    assert [process.returncode for process in children] == [0, 0]
    assert len(urls) == 1
    assert len(_running_in(fresh_dir / server)) == 1


def test_folder_held_by_another_process_fails_with_one_clear_line(fresh_dir: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            "f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "f.write(str(os.getpid())); f.flush(); print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(fresh_dir / "redis.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(EmbeddedServerError) as caught:
            ensure_redis(fresh_dir, timeout=0.2)
    finally:
        holder.communicate(input="", timeout=30)

    message = str(caught.value)
    assert "\n" not in message
    assert str(fresh_dir) in message and f"pid {holder.pid}" in message
    assert "retry" in message
    # Once the holder has gone, the folder is usable.
    assert ensure_redis(fresh_dir).startswith("redis://127.0.0.1:")


@pytest.mark.parametrize("server", ["postgres", "redis"])
def test_live_server_that_does_not_answer_fails_with_one_clear_line(
    data_dir: Path, server: str
) -> None:
    ensure = ensure_postgres if server == "postgres" else ensure_redis
    url = ensure(data_dir)
    pid = _postmaster_pid(data_dir) if server == "postgres" else _redis_pid(data_dir)
    os.kill(pid, signal.SIGSTOP)  # alive, holding the folder, answering nobody
    try:
        with pytest.raises(EmbeddedServerError) as caught:
            ensure(data_dir, timeout=0.5)
    finally:
        os.kill(pid, signal.SIGCONT)

    message = str(caught.value)
    assert "\n" not in message
    assert str(data_dir / server) in message and f"kill {pid}" in message
    assert ensure(data_dir) == url  # it answers again: reused, not replaced


@pytest.mark.parametrize("ensure", [ensure_postgres, ensure_redis])
def test_a_data_folder_that_cannot_be_created_fails_with_one_clear_line(
    tmp_path: Path, ensure: Callable[[Path], str]
) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")

    with pytest.raises(EmbeddedServerError) as caught:
        ensure(a_file / "data")

    message = str(caught.value)
    assert "\n" not in message
    assert str(a_file / "data") in message and "TRADING_DATA_DIR" in message


def test_configured_urls_win_and_nothing_starts(tmp_path: Path) -> None:
    unused = tmp_path / "unused"
    settings = load_settings(
        database_url="postgresql+asyncpg://someone@db.example:5432/prod",
        redis_url="redis://cache.example:6379/3",
        trading_data_dir=unused,
    )

    assert resolve_database_url(settings) == "postgresql+asyncpg://someone@db.example:5432/prod"
    assert resolve_redis_url(settings) == "redis://cache.example:6379/3"
    assert not unused.exists()


def test_unset_urls_resolve_to_the_embedded_servers(data_dir: Path) -> None:
    settings = load_settings(database_url="", redis_url="", trading_data_dir=data_dir)

    assert resolve_database_url(settings) == ensure_postgres(data_dir)
    assert resolve_redis_url(settings) == ensure_redis(data_dir)
