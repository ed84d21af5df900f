"""`trading run [SERVICE ...]`: the live services, each its own process, under one supervisor.

    trading run                                   # all four, on the configured Binance
    trading run --exchange sim --data BTCUSDT-1m.csv.gz --speed 300

Before starting anything the database and Redis URLs are resolved once (the embedded servers
under TRADING_DATA_DIR when none is configured) and the schema is brought to head, so every
child gets the same DATABASE_URL and REDIS_URL and none races a migration. Each service gets
its own HEALTH_PORT (`service_catalog`). With ``--exchange sim`` the exchange simulator is
started first on the candle files, with a fresh API key pair, and the services are pointed
at it (BINANCE_BASE_URL, BINANCE_WS_URL, BINANCE_API_KEY/SECRET).

A live view shows each service's state, health and counters (candles, signals, orders,
portfolio value) under the services' prefixed log lines; every child's output is also kept in
TRADING_DATA_DIR/logs/<name>.log. Ctrl-C or SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from trading_cli.data_commands import fail, resolve_series, settings_or_exit
from trading_cli.service_catalog import SERVICE_NAMES, ServiceSpec, service_specs
from trading_cli.status_commands import ServiceProbe, activity, probe_services
from trading_cli.supervisor import ChildProcess, ChildState, LineSink, Supervisor

__all__ = ["Platform", "RunOptions", "run", "run_platform"]

console = Console()

SIMULATOR = "exchange-simulator"
COLLECTOR = "data-collector"
COLLECTOR_READY_SECONDS = 180.0
"""How long the other services wait for the data collector's first healthy answer."""
"""Seconds between moves of the simulator's clock to its replay's time."""
SUMMARY_EVERY = 10.0
"""Seconds between status lines when there is no live view."""
_COLOURS = ("cyan", "magenta", "green", "yellow", "blue")


@dataclass
class RunOptions:
    """Everything `run_platform` needs; the CLI and `trading demo` fill it in."""

    services: list[ServiceSpec]
    data: list[Path] = field(default_factory=list)  # non-empty: start the simulator on these
    speed: str = "60"
    history: int = 1000
    sim_port: int = 8900
    env: dict[str, str] = field(default_factory=dict)  # extra variables for every child
    live_view: bool = True
    duration: float | None = None  # stop after this many seconds (demos, tests)


def _child_env(options: RunOptions) -> dict[str, str]:
    """The environment every child shares: the resolved URLs, schema at head."""
    from shared.db import upgrade_to_head
    from shared.embedded import EmbeddedServerError, resolve_database_url, resolve_redis_url

    env = {**os.environ, **options.env}
    with _patched_environ(options.env):
        settings = settings_or_exit()
    try:
        database_url = resolve_database_url(settings)
        redis_url = resolve_redis_url(settings)
        upgrade_to_head(database_url)
    except EmbeddedServerError as exc:
        raise fail(str(exc), 1) from None
    except Exception as exc:  # a refused connection, a bad password: one line, no traceback
        raise fail(f"cannot prepare the database: {type(exc).__name__}: {exc}", 1) from None
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
    env["TRADING_DATA_DIR"] = str(Path(settings.trading_data_dir).resolve())
    return env


@contextlib.contextmanager
def _patched_environ(extra: dict[str, str]) -> Any:
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def require_simulator_speed(speed: str) -> None:
    """Fail now, before anything starts, on a --speed the simulator would refuse."""
    from exchange_simulator.app import parse_speed

    try:
        parse_speed(speed)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _simulator_child(options: RunOptions, env: dict[str, str], logs: Path) -> ChildProcess:
    key, secret = secrets.token_hex(16), secrets.token_hex(32)
    argv = [sys.executable, "-m", "trading_cli", "simulator", "--speed", options.speed]
    # The key pair goes to the simulator in its environment (BINANCE_API_KEY/SECRET below,
    # which it accepts when given no --api-key), not on its command line, which any local
    # user can read in `ps` for as long as it runs.
    argv += ["--port", str(options.sim_port)]
    argv += ["--history", str(options.history)]
    for file in options.data:
        argv += ["--data", str(file)]
    base = f"http://127.0.0.1:{options.sim_port}"
    series = [resolve_series(file, None, None) for file in options.data]
    # The services trade on the simulator with the key pair it accepts, and collect exactly
    # the series it replays (its history included) unless told otherwise.
    env.setdefault("COLLECTOR_SYMBOLS", ",".join(dict.fromkeys(s for s, _ in series)))
    env.setdefault("COLLECTOR_INTERVALS", ",".join(dict.fromkeys(i for _, i in series)))
    env.setdefault("COLLECTOR_HISTORY_CANDLES", str(options.history))
    env.update(
        BINANCE_BASE_URL=base,
        BINANCE_WS_URL=f"ws://127.0.0.1:{options.sim_port}",
        BINANCE_API_KEY=key,
        BINANCE_API_SECRET=secret,
        BINANCE_TESTNET="false",
    )
    return ChildProcess(SIMULATOR, argv, dict(env), restart=False, log_file=logs / "simulator.log")


class SimulatorStartError(RuntimeError):
    """The exchange simulator exited or did not answer while starting. (Its own class: a bad
    setting's `typer.Exit` is a RuntimeError too, and is reported by whoever raised it.)"""


async def _wait_until_answering(
    url: str, process_alive: Callable[[], bool], wait_seconds: float
) -> None:
    deadline = time.monotonic() + wait_seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if not process_alive():
                raise SimulatorStartError(
                    "the exchange simulator exited during start-up (see its log)"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)  # polling a server that is loading its candles
    raise SimulatorStartError(
        f"the exchange simulator did not answer {url} within {wait_seconds:g} s"
    )


async def _simulator_state(port: int) -> dict[str, Any] | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session,
            session.get(f"http://127.0.0.1:{port}/_sim/state") as response,
        ):
            state: dict[str, Any] = await response.json()
            return state
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


def _view(
    states: list[ChildState], probes: dict[str, ServiceProbe], simulator: dict[str, Any] | None
) -> Group:
    table = Table(title="trading run — Ctrl-C stops everything", title_justify="left")
    for column in ("service", "process", "pid", "restarts", "health", "activity"):
        table.add_column(column, overflow="fold")
    for state in states:
        probe = probes.get(state.name)
        health = "" if probe is None else probe.status
        colour = {"ok": "green", "degraded": "yellow"}.get(health, "red")
        table.add_row(
            state.name,
            state.state,
            str(state.pid or ""),
            str(state.restarts),
            f"[{colour}]{health}[/]" if health else "",
            "" if probe is None else activity(probe),
        )
    parts: list[Any] = [table]
    if simulator is not None:
        replay = simulator.get("replay", {})
        prices = ", ".join(f"{s} {p}" for s, p in (simulator.get("prices") or {}).items())
        parts.append(
            Text(
                f"simulator: candle {replay.get('position')}/{replay.get('length')} "
                f"{'(finished) ' if replay.get('finished') else ''}— {prices}",
                style="dim",
            )
        )
    return Group(*parts)


def console_sink() -> LineSink:
    """Print each child's lines prefixed with its name, one colour per child."""
    names = (SIMULATOR, *SERVICE_NAMES)
    colours = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}
    width = max(len(name) for name in names)

    def sink(name: str, line: str) -> None:
        # While the live view runs, rich prints these above it.
        prefix = Text(f"{name:>{width}} | ", style=colours.get(name, "white"))
        console.print(prefix + Text(line), highlight=False, soft_wrap=True)

    return sink


class Platform:
    """The exchange simulator (when ``options.data``) and the services, supervised.

    `trading run` drives it; tests use it directly to reach the children's processes.
    """

    def __init__(self, options: RunOptions, sink: LineSink | None = None) -> None:
        self.options = options
        self.sink = sink or console_sink()
        self.supervisor = Supervisor(self.sink)
        self.env: dict[str, str] = {}

    async def start(self) -> None:
        """Resolve the stores, start the simulator (ready; its clock follows its replay),
        then the services.

        Raises `SimulatorStartError` when the simulator does not come up."""
        options = self.options
        self.env = await asyncio.to_thread(_child_env, options)
        logs = Path(self.env["TRADING_DATA_DIR"]) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if options.data:
            await self.supervisor.start(_simulator_child(options, self.env, logs))
            process = self.supervisor.process(SIMULATOR)
            await _wait_until_answering(
                f"http://127.0.0.1:{options.sim_port}/api/v3/ping",
                lambda: process is not None and process.returncode is None,
                wait_seconds=120,
            )
        for spec in options.services:
            child_env = {**self.env, "HEALTH_PORT": str(spec.health_port)}
            argv = [sys.executable, "-m", spec.module]
            await self.supervisor.start(
                ChildProcess(spec.name, argv, child_env, log_file=logs / f"{spec.name}.log")
            )
            if spec.name == COLLECTOR and len(options.services) > 1:
                # The strategies warm up from the candles the collector backfills on its first
                # start: start the others once it is healthy (backfilled, stream connected),
                # as docker-compose.yml's depends_on does.
                await self._wait_healthy(spec)

    async def _wait_healthy(self, spec: ServiceSpec) -> None:
        deadline = time.monotonic() + COLLECTOR_READY_SECONDS
        while time.monotonic() < deadline and not self.supervisor.stopping.is_set():
            if self.supervisor.failed.is_set():
                return
            (probe,) = await probe_services([spec], wait_seconds=1.0)
            if probe.healthy:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.supervisor.stopping.wait(), 0.25)
        self.sink(spec.name, "not healthy yet; starting the other services anyway")

    async def stop(self) -> None:
        """Stop every child, services first (last started first), the simulator last."""
        await self.supervisor.stop()


async def run_platform(options: RunOptions) -> int:
    """Start, supervise and stop the platform until a signal; returns the exit status."""
    platform = Platform(options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, platform.supervisor.stopping.set)
    try:
        try:
            await platform.start()
        except SimulatorStartError as exc:
            platform.sink(SIMULATOR, str(exc))
            return 1
        return await _supervise(platform.supervisor, options)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await platform.stop()


async def _supervise(supervisor: Supervisor, options: RunOptions) -> int:
    """Refresh the view until a stop request, the duration or a child failing for good.

    Without the live view (not a terminal, --no-status) a summary line is printed every
    ``SUMMARY_EVERY`` seconds and the full table once at the end.
    """
    deadline = None if options.duration is None else time.monotonic() + options.duration
    probes: dict[str, ServiceProbe] = {}
    simulator: dict[str, Any] | None = None
    next_summary = time.monotonic() + SUMMARY_EVERY

    async def refresh() -> None:
        nonlocal simulator
        results = await probe_services(options.services, wait_seconds=1.0, metrics=True)
        probes.update({probe.service: probe for probe in results})
        if options.data:
            simulator = await _simulator_state(options.sim_port)

    view = Live(
        _view(supervisor.children, probes, simulator),
        console=console,
        refresh_per_second=2,
        transient=False,
    )
    status = 0
    with view if options.live_view else contextlib.nullcontext():
        while not supervisor.stopping.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if supervisor.failed.is_set():
                status = 1
                break
            if options.live_view:
                await refresh()
                view.update(_view(supervisor.children, probes, simulator))
            elif time.monotonic() >= next_summary:
                await refresh()
                console.print(_summary_line(probes), highlight=False, soft_wrap=True)
                next_summary = time.monotonic() + SUMMARY_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(supervisor.stopping.wait(), 1.0)
    if not options.live_view:
        await refresh()
        console.print(_view(supervisor.children, probes, simulator))
    return status


def _summary_line(probes: dict[str, ServiceProbe]) -> str:
    parts = [f"{p.service} {p.status} {activity(p)}".strip() for p in probes.values()]
    return "status: " + "; ".join(parts)


def run(
    service: Annotated[
        list[str] | None,
        typer.Argument(help=f"Services to start (default: all): {', '.join(SERVICE_NAMES)}."),
    ] = None,
    exchange: Annotated[
        str, typer.Option(help="'binance' (BINANCE_BASE_URL) or 'sim' (the exchange simulator).")
    ] = "binance",
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="With --exchange sim: candle file to replay; repeatable."),
    ] = None,
    speed: Annotated[
        str, typer.Option(help="With --exchange sim: times real time, 'max' or 'manual'.")
    ] = "60",
    history: Annotated[
        int, typer.Option(min=0, help="With --exchange sim: candles already closed at start.")
    ] = 1000,
    sim_port: Annotated[int, typer.Option(help="With --exchange sim: its port.")] = 8900,
    port_base: Annotated[
        int | None,
        typer.Option(help="Health ports BASE+1, BASE+2, ... instead of 8081, 8082, ..."),
    ] = None,
    live_view: Annotated[
        bool, typer.Option("--status/--no-status", help="Show the live status view.")
    ] = True,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
) -> None:
    """Start the live services, each its own process, and supervise them until Ctrl-C."""
    try:
        specs = service_specs(service, port_base)
    except ValueError as exc:
        raise fail(str(exc)) from None
    files: list[Path] = []
    if exchange == "sim":
        files = list(data or [])
        if not files:
            raise fail("--exchange sim needs --data FILE (a candle file to replay)")
        for file in files:
            if not file.is_file():
                raise fail(f"no candle file at {file}: pass an existing file with --data")
            resolve_series(file, None, None)  # a name the simulator cannot read fails here
        require_simulator_speed(speed)
    elif exchange != "binance":
        raise fail(f"--exchange {exchange!r}: choose 'binance' or 'sim'")
    elif data:
        raise fail("--data replays candles on the simulator: add --exchange sim")
    options = RunOptions(
        services=specs,
        data=files,
        speed=speed,
        history=history,
        sim_port=sim_port,
        live_view=live_view and console.is_terminal,
        duration=duration,
    )
    status = asyncio.run(run_platform(options))
    if status:
        raise typer.Exit(status)
