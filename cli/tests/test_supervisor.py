"""The supervisor behind `trading run`, on real child processes."""

from __future__ import annotations

import asyncio
import signal
import sys

from trading_cli.supervisor import ChildProcess, Supervisor


class Lines:
    """A sink that records lines and wakes waiters when a wanted one arrives."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, name: str, line: str) -> None:
        self.lines.append((name, line))
        self._changed.set()

    async def wait_for(self, predicate: object, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            while not predicate(self.lines):  # type: ignore[operator]
                self._changed.clear()
                await self._changed.wait()


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_output_is_passed_on_per_child_and_kept_in_its_log_file(tmp_path) -> None:
    lines = Lines()
    supervisor = Supervisor(lines)
    log = tmp_path / "one.log"
    await supervisor.start(
        ChildProcess("one", python("print('hello'); print('world')"), {}, log_file=log)
    )
    await supervisor.start(ChildProcess("two", python("print('other')"), {}))
    await lines.wait_for(lambda seen: sum("exited" in line for _, line in seen) == 2)
    assert ("one", "hello") in lines.lines and ("one", "world") in lines.lines
    assert ("two", "other") in lines.lines
    assert log.read_text() == "hello\nworld\n"
    await supervisor.stop()


async def test_a_crashing_child_is_restarted_with_growing_backoff() -> None:
    lines = Lines()
    supervisor = Supervisor(lines, backoff_initial=0.01, backoff_max=0.04)
    await supervisor.start(ChildProcess("crasher", python("import sys; sys.exit(3)"), {}))
    await lines.wait_for(lambda seen: sum("restarting" in line for _, line in seen) >= 4)
    waits = [line.split("restarting in ")[1] for _, line in lines.lines if "restarting" in line]
    assert waits[:4] == ["0.01 s", "0.02 s", "0.04 s", "0.04 s"]
    assert supervisor.children[0].restarts >= 3
    assert supervisor.children[0].last_exit == 3
    assert not supervisor.failed.is_set()
    await supervisor.stop()
    assert supervisor.children[0].state == "stopped"


async def test_a_settings_error_is_reported_and_not_restarted() -> None:
    lines = Lines()
    supervisor = Supervisor(lines, backoff_initial=0.01)
    await supervisor.start(
        ChildProcess(
            "misconfigured", python("import sys; print('bad HEALTH_PORT'); sys.exit(2)"), {}
        )
    )
    async with asyncio.timeout(30):
        await supervisor.failed.wait()
    state = supervisor.children[0]
    assert (state.state, state.restarts, state.last_exit) == ("failed", 0, 2)
    assert ("misconfigured", "exited with status 2; not restarted") in lines.lines
    await supervisor.stop()


async def test_stop_terminates_children_and_kills_one_that_ignores_sigterm() -> None:
    lines = Lines()
    supervisor = Supervisor(lines, stop_timeout=0.5)
    await supervisor.start(
        ChildProcess("polite", python("import time; print('up', flush=True); time.sleep(60)"), {})
    )
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    await supervisor.start(ChildProcess("stubborn", python(stubborn), {}))
    await lines.wait_for(lambda seen: [line for _, line in seen].count("up") == 2)
    polite, obstinate = supervisor.process("polite"), supervisor.process("stubborn")
    assert polite is not None and obstinate is not None
    await supervisor.stop()
    assert polite.returncode == -signal.SIGTERM
    assert obstinate.returncode == -signal.SIGKILL
    assert ("stubborn", "did not stop in 0.5 s; killed") in lines.lines
    assert [state.state for state in supervisor.children] == ["stopped", "stopped"]


async def test_a_child_killed_from_outside_is_started_again() -> None:
    lines = Lines()
    supervisor = Supervisor(lines, backoff_initial=0.01)
    code = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    await supervisor.start(ChildProcess("victim", python(code), {}))
    await lines.wait_for(lambda seen: any(line.startswith("pid") for _, line in seen))
    first = supervisor.process("victim")
    assert first is not None
    first.send_signal(signal.SIGKILL)
    await lines.wait_for(lambda seen: sum(line.startswith("pid") for _, line in seen) == 2)
    second = supervisor.process("victim")
    assert second is not None and second.pid != first.pid
    assert supervisor.children[0].restarts == 1
    assert ("victim", f"exited with status {-signal.SIGKILL}; restarting in 0.01 s") in lines.lines
    await supervisor.stop()
