"""`trading status` against real health servers (shared.healthcheck) on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest
from shared.healthcheck import CheckFailed, HealthCheckServer
from shared.metrics import CANDLES_RECEIVED_TOTAL
from trading_cli.main import app
from trading_cli.service_catalog import SERVICE_NAMES
from typer.testing import CliRunner


def free_port_base() -> int:
    """A base whose next four ports are free now (the servers bind them right after)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + 4 > 65535:
            continue
        try:
            sockets = []
            for offset in range(1, 5):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no four consecutive free ports")


class ServersThread:
    """Health servers for the four services, in an event loop on a background thread."""

    def __init__(self, base: int, failing: set[str] = frozenset(), absent: set[str] = frozenset()):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: list[HealthCheckServer] = []
        for index, name in enumerate(SERVICE_NAMES, start=1):
            if name in absent:
                continue
            server = HealthCheckServer(name, port=base + index)
            if name in failing:
                server.add_check("redis", self._failing_check)
            self.servers.append(server)

    @staticmethod
    async def _failing_check() -> str:
        raise CheckFailed("connection refused")

    def __enter__(self) -> ServersThread:
        self.thread.start()
        for server in self.servers:
            asyncio.run_coroutine_threadsafe(server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            asyncio.run_coroutine_threadsafe(server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def base() -> Iterator[int]:
    yield free_port_base()


def status(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["status", *args])
    return result.exit_code, result.output


def test_all_services_ok_exit_zero_with_their_counters(base: int) -> None:
    CANDLES_RECEIVED_TOTAL.labels("BTCUSDT", "1m")  # the collector creates its children
    with ServersThread(base):
        code, output = status("--port-base", str(base), "--json")
    assert code == 0, output
    probes = json.loads(output)
    assert [p["service"] for p in probes] == list(SERVICE_NAMES)
    assert {p["status"] for p in probes} == {"ok"}
    assert all(p["http_status"] == 200 and p["uptime"] >= 0 for p in probes)
    # Only the collector reports candles, though every process exposes the metric.
    assert "candles" in probes[0]["metrics"]
    assert "candles" not in probes[1]["metrics"]


def test_a_failing_check_makes_the_status_fail_and_names_the_problem(base: int) -> None:
    with ServersThread(base, failing={"order-executor"}):
        code, output = status("--port-base", str(base), "--json")
    assert code == 1
    by_name = {p["service"]: p for p in json.loads(output)}
    assert by_name["order-executor"]["status"] == "fail"
    assert by_name["order-executor"]["http_status"] == 503
    assert by_name["order-executor"]["failing"] == {"redis": "connection refused"}
    assert by_name["strategy-engine"]["status"] == "ok"


def test_a_service_not_running_is_down_in_the_table(base: int) -> None:
    with ServersThread(base, absent={"portfolio-manager"}):
        code, output = status("--port-base", str(base))
    assert code == 1
    rows = {line.split()[1]: line for line in output.splitlines() if "│" in line[:2]}
    assert "down" in rows["portfolio-manager"]
    assert "ok" in rows["data-collector"]
    code, output = status("portfolio-manager", "--port-base", str(base), "--json")
    (probe,) = json.loads(output)
    assert probe["failing"] == {
        "connection": f"nothing answers on 127.0.0.1:{base + 4}: is it running? (trading run)"
    }


def test_only_the_named_services_are_checked(base: int) -> None:
    with ServersThread(base, absent={"portfolio-manager"}):
        code, output = status("data-collector", "strategy-engine", "--port-base", str(base))
    assert code == 0, output
    assert "portfolio-manager" not in output


def test_port_overrides_and_bad_arguments(base: int) -> None:
    with ServersThread(base, absent={"data-collector"}):
        # The collector is found on another service's port when told so.
        code, output = status("data-collector", "--port", f"data-collector={base + 2}", "--json")
    assert code == 0, output
    assert json.loads(output)[0]["url"] == f"http://127.0.0.1:{base + 2}"
    code, output = status("collector")
    assert code == 2
    assert "unknown service collector: choose from data-collector" in output
    code, output = status("--port", "data-collector:8081")
    assert code == 2
    assert "must look like SERVICE=PORT" in output
