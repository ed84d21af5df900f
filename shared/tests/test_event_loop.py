"""`shared.event_loop.run`: the services' loop is uvloop's, the standard one without it."""

from __future__ import annotations

import asyncio
import sys

import pytest

from shared import event_loop


async def loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_runs_on_uvloop() -> None:
    assert event_loop.run(loop_module()).startswith("uvloop")


def test_without_uvloop_runs_on_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert event_loop.run(loop_module()).startswith("asyncio")
