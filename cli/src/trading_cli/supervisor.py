"""Run several programs as child processes, prefix their output, restart the ones that crash.

Each child runs in its own session (process group), so a Ctrl-C in the terminal reaches only
the supervisor, which then stops the children in reverse start order: SIGTERM, a grace period,
then SIGKILL. A child that exits on its own is reported; one that crashed (any status but 0
and 2) is started again after a backoff that doubles from 1 s up to 30 s and is reset once it
has stayed up for a while. Status 2 is the services' "invalid setting" exit: restarting would
only fail again, so it is reported and left stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ChildProcess", "ChildState", "LineSink", "Supervisor"]

EXIT_SETTINGS = 2
"""`shared.service.EXIT_SETTINGS`: a bad setting; restarting cannot help."""

LineSink = Callable[[str, str], None]
"""Called with (child name, one line of its output)."""


@dataclass
class ChildState:
    """What the supervisor knows about one child, for the status view."""

    name: str
    pid: int | None = None
    state: str = "starting"  # starting, running, restarting, exited, failed, stopped
    restarts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0


@dataclass
class ChildProcess:
    """A program to keep running: ``argv`` with ``env``; ``restart`` on crashes or not."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    restart: bool = True
    log_file: Path | None = None
    state: ChildState = field(init=False)

    def __post_init__(self) -> None:
        self.state = ChildState(self.name)


class Supervisor:
    """Starts `ChildProcess`es, pumps their output to ``sink``, restarts crashed ones."""

    def __init__(
        self,
        sink: LineSink,
        *,
        stop_timeout: float = 15.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
    ) -> None:
        self._sink = sink
        self._stop_timeout = stop_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._stable_after = stable_after
        self._children: list[ChildProcess] = []
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()
        self.failed = asyncio.Event()
        """Set when a child exits for good while the supervisor is not stopping."""

    @property
    def children(self) -> list[ChildState]:
        return [child.state for child in self._children]

    async def start(self, child: ChildProcess) -> None:
        """Start ``child`` now and keep it supervised."""
        self._children.append(child)
        await self._spawn(child)
        self._watchers.append(asyncio.create_task(self._watch(child), name=f"watch-{child.name}"))

    async def _spawn(self, child: ChildProcess) -> None:
        process = await asyncio.create_subprocess_exec(
            *child.argv,
            env=dict(child.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._processes[child.name] = process
        child.state.pid = process.pid
        child.state.state = "running"
        child.state.started_at = time.monotonic()

    async def _pump(self, child: ChildProcess, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        log = child.log_file.open("a", encoding="utf-8") if child.log_file else None
        try:
            async for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip()
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                self._sink(child.name, line)
        finally:
            if log is not None:
                log.close()

    async def _watch(self, child: ChildProcess) -> None:
        backoff = self._backoff_initial
        while True:
            process = self._processes[child.name]
            await self._pump(child, process)
            status = await process.wait()
            child.state.last_exit = status
            child.state.pid = None
            if self.stopping.is_set():
                child.state.state = "stopped"
                return
            crashed = status not in (0, EXIT_SETTINGS)
            if not (child.restart and crashed):
                child.state.state = "exited" if status == 0 else "failed"
                self._sink(child.name, f"exited with status {status}; not restarted")
                self.failed.set()
                return
            if time.monotonic() - child.state.started_at >= self._stable_after:
                backoff = self._backoff_initial
            child.state.state = "restarting"
            self._sink(child.name, f"exited with status {status}; restarting in {backoff:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            if self.stopping.is_set():
                child.state.state = "stopped"
                return
            backoff = min(backoff * 2, self._backoff_max)
            child.state.restarts += 1
            await self._spawn(child)

    async def stop(self) -> None:
        """SIGTERM every child (last started first), wait, SIGKILL stragglers."""
        self.stopping.set()
        for child in reversed(self._children):
            process = self._processes.get(child.name)
            if process is None or process.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_timeout)
            except TimeoutError:
                self._sink(child.name, f"did not stop in {self._stop_timeout:g} s; killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def process(self, name: str) -> asyncio.subprocess.Process | None:
        """The running process of child ``name`` (tests kill it to exercise restarts)."""
        return self._processes.get(name)
