"""/metrics as served by the health server: valid for promtool and complete per the spec."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared import healthcheck, metrics


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of `promtool` (Debian's `prometheus` package), installed here when missing."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(
            "promtool is missing: install it with `apt-get install -y prometheus` "
            "(Debian's package ships promtool; ~10 s, ~100 MB), then run the tests again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    found = shutil.which("promtool")
    if result.returncode != 0 or not found:
        pytest.fail(f"`apt-get install -y prometheus` failed: {result.stderr.strip()[-500:]}")
    return found


async def check_metrics(promtool: str, exposition: str) -> tuple[int, str]:
    """Run `promtool check metrics` on ``exposition``; returns (exit code, its output)."""
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate(exposition.encode())
    return await proc.wait(), output.decode()


def exercise_every_metric() -> None:
    """Give each labelled metric a child, as a running service would."""
    metrics.SERVICE_UP.labels("test-metrics").set(1)
    metrics.ERRORS_TOTAL.labels("test-metrics", "ValueError").inc()
    metrics.EVENT_PROCESSING_SECONDS.labels("test-metrics", "candles").observe(0.002)
    metrics.CANDLES_RECEIVED_TOTAL.labels("BTCUSDT", "1m").inc()
    metrics.WS_RECONNECTIONS_TOTAL.inc()
    metrics.SIGNALS_GENERATED_TOTAL.labels("rsi", "BUY").inc()
    metrics.STRATEGY_EXECUTION_SECONDS.labels("rsi").observe(0.0001)
    metrics.ORDERS_TOTAL.labels("FILLED", "BUY").inc()
    metrics.RISK_REJECTIONS_TOTAL.labels("max_position_size").inc()
    metrics.PORTFOLIO_VALUE.set(10_000)
    metrics.UNREALIZED_PNL.labels("BTCUSDT").set(-12.5)
    metrics.BUS_PUBLISHED_TOTAL.labels("candles").inc()
    metrics.BUS_CONSUMED_TOTAL.labels("candles", "engine").inc()
    metrics.BUS_DEAD_LETTERED_TOTAL.labels("candles", "engine").inc(0)
    metrics.BUS_CONSUMER_LAG.labels("candles", "engine").set(0)
    metrics.CIRCUIT_BREAKER_STATE.labels("binance").set(0)
    metrics.TELEGRAM_MESSAGES_SENT_TOTAL.inc(0)
    metrics.TELEGRAM_MESSAGES_DROPPED_TOTAL.labels("queue_full").inc(0)


@pytest.fixture
async def exposition() -> AsyncIterator[tuple[str, str]]:
    """(content type, body) of GET /metrics."""
    exercise_every_metric()
    async with (
        healthcheck.HealthCheckServer("test-metrics", host="127.0.0.1", port=0) as server,
        aiohttp.ClientSession() as http,
        http.get(server.url + "/metrics") as response,
    ):
        assert response.status == 200
        yield response.headers["Content-Type"], await response.text()


async def test_metrics_pass_promtool_check(promtool: str, exposition: tuple[str, str]) -> None:
    content_type, body = exposition
    assert content_type.startswith("text/plain; version=")
    returncode, output = await check_metrics(promtool, body)
    assert returncode == 0, output
    assert output.strip() == ""


async def test_every_spec_metric_is_exposed(exposition: tuple[str, str]) -> None:
    _, body = exposition
    samples = {
        sample.name for family in text_string_to_metric_families(body) for sample in family.samples
    }
    for name in metrics.SPEC_METRIC_NAMES:
        assert {name, f"{name}_bucket", f"{name}_count"} & samples, f"{name} is not exposed"
    assert 'service_up{service="test-metrics"} 1.0' in body
    assert "bus_consumer_lag" in body and "circuit_breaker_state" in body


async def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    async with (
        healthcheck.HealthCheckServer("test-metrics", host="127.0.0.1", port=0) as server,
        aiohttp.ClientSession() as http,
        http.get(
            server.url + "/metrics", headers={"Accept": "application/openmetrics-text"}
        ) as response,
    ):
        body = await response.text()
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


async def test_promtool_rejects_a_bad_exposition(promtool: str) -> None:
    # Guards the check above: promtool must actually lint what it is given.
    bad = "# HELP orders counted\n# TYPE orders counter\norders 1\n"
    returncode, output = await check_metrics(promtool, bad)
    assert returncode != 0
    assert "_total" in output
