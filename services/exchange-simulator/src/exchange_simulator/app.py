"""The simulator server: REST, WebSocket and control routes, and the replay's pace.

Pace (`speed`):
- a number > 0: that many times real time (1 = a 1m candle lasts a minute; 60 = a second);
  each candle's three partial updates and its final one are spread evenly over it;
- "max": as fast as the consumers keep up: the next update goes out once every WebSocket
  client has been sent the previous one (it waits while nobody is subscribed);
- "manual" (or 0): the replay moves only through the control API (`/_sim/advance`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web
from shared.models import interval_delta

from exchange_simulator.control import ControlApi
from exchange_simulator.core import SimulatorCore, SimulatorSetup
from exchange_simulator.faults import FaultBook, api_middleware
from exchange_simulator.limits import WeightMeter
from exchange_simulator.replay import STAGES
from exchange_simulator.rest import RestApi

Speed = float | str
MANUAL = "manual"
AS_FAST_AS_CONSUMED = "max"


def parse_speed(value: Speed) -> Speed:
    """Validate a speed: a positive number, "max" or "manual" (0 means manual)."""
    if isinstance(value, str):
        if value in (MANUAL, AS_FAST_AS_CONSUMED):
            return value
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"speed {value!r} is not valid: give a multiple of real time such as 60, "
                "'max' (as fast as consumers keep up) or 'manual'"
            ) from None
    if value < 0:
        raise ValueError("speed must not be negative (0 or 'manual' replays on demand only)")
    return MANUAL if value == 0 else float(value)


class Simulator:
    """A Binance-protocol exchange on one host and port, replaying `setup.candles`."""

    def __init__(self, setup: SimulatorSetup, speed: Speed = MANUAL) -> None:
        self.speed = parse_speed(speed)
        self.core = SimulatorCore(setup)
        if isinstance(self.speed, float):
            self.core.clock.pace(self.speed)
        self.faults = FaultBook()
        self.requests: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.weights = WeightMeter(setup.weight_limit)
        self.app = web.Application(
            middlewares=[
                # Request weight counts real minutes, whatever pace the replay keeps.
                api_middleware(self.faults, self.weights, self.core.clock.wall_ms, self.requests)
            ]
        )
        RestApi(self.core).add_routes(self.app)
        ControlApi(self.core, self.faults, self.requests).add_routes(self.app)
        self.app.router.add_get("/ws", self.core.hub.handle)
        self.app.router.add_get("/ws/{streams:.+}", self.core.hub.handle)
        self.app.router.add_get("/stream", self.core.hub.handle)
        self.app.on_shutdown.append(self._close_streams)
        self._runner: web.AppRunner | None = None
        self._pacer: asyncio.Task[None] | None = None
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def base_url(self) -> str:
        """REST base, e.g. http://127.0.0.1:8900 (the API is under /api/v3)."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """WebSocket base, e.g. ws://127.0.0.1:8900 (streams under /ws and /stream)."""
        return f"ws://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on `host`:`port` (0 picks a free port) and start the replay's pace."""
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host, self.port = self._runner.addresses[0][:2]
        if self.speed != MANUAL:
            self.core.clock.replay_moved()  # the current stage starts now
            self._pacer = asyncio.create_task(self._pace())

    async def stop(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer
        if self._runner is not None:
            await self._runner.cleanup()

    async def _close_streams(self, app: web.Application) -> None:
        await self.core.hub.close_all()

    async def _pace(self) -> None:
        stage_seconds = 0.0
        if isinstance(self.speed, float):
            stage_seconds = interval_delta(self.core.interval).total_seconds() / self.speed
            stage_seconds /= STAGES
        while not self.core.replay.finished:
            if self.speed == AS_FAST_AS_CONSUMED:
                await self.core.hub.wait_for_subscriber()
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(stage_seconds)
            await self.core.step()


async def serve_until_stopped(
    simulator: Simulator,
    host: str,
    port: int,
    on_started: Callable[[Simulator], None] | None = None,
) -> None:
    """Run `simulator` on `host`:`port` until SIGINT/SIGTERM, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await simulator.start(host, port)
    try:
        if on_started is not None:
            on_started(simulator)
        await stop.wait()
    finally:
        await simulator.stop()
