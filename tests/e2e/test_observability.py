"""What an operator sees of the running pipeline: a real Prometheus scraping every service
with monitoring/prometheus.yml's jobs, the spec's metrics, and the Telegram messages."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from shared.metrics import SPEC_METRIC_NAMES

from tests.e2e.platform_harness import (
    free_port,
    running_platform,
    write_exploding_strategy,
    write_slice,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]
# 2023-03-17T22:00 in the real file: 60 closed at start, then live candles across midnight
# (the portfolio's daily summary) until 01:29 on the 18th.
SKIP, HISTORY, LIVE = 1425, 60, 150


def prometheus_binary() -> str:
    """Debian's `prometheus`, installed when missing (as shared/tests/test_metrics.py does)."""
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("prometheus is missing: install it with `apt-get install -y prometheus`")
    result = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
        capture_output=True,
        text=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        timeout=300,
        check=False,
    )
    found = shutil.which("prometheus")
    if result.returncode != 0 or not found:
        pytest.fail(f"`apt-get install -y prometheus` failed: {result.stderr.strip()[-500:]}")
    return found


def local_scrape_config(ports: dict[str, int], folder: Path) -> Path:
    """monitoring/prometheus.yml with each job's target moved to 127.0.0.1:<its test port>
    and a 1 s scrape interval; every other field is kept."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    for job in config["scrape_configs"]:
        (target,) = [t for group in job["static_configs"] for t in group["targets"]]
        service = target.split(":")[0]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[service]}"]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def test_prometheus_sees_every_service_up_and_every_spec_metric_and_telegram_gets_each_kind(
    tmp_path: Path,
    shared_data: Path,
    migrated_database_url: str,
    redis_server_url: str,
    redis_namespace: str,
) -> None:
    binary = prometheus_binary()
    data = write_slice(shared_data, tmp_path, HISTORY + LIVE, skip=SKIP)
    async with running_platform(
        tmp_path=tmp_path,
        data=data,
        database_url=migrated_database_url,
        redis_url=redis_server_url,
        namespace=redis_namespace,
        history=HISTORY,
        extra_strategies=("exploding",),
        env={
            "STRATEGIES_EXTRA_DIR": str(write_exploding_strategy(tmp_path)),
            # Small enough that a BUY of the default 0.001 BTC is reduced or refused: a
            # rejection to count.
            "RISK_MAX_POSITION_SIZE": "0.001",
        },
    ) as platform:
        await platform.advance(LIVE)
        await platform.wait_until(platform.drained, "every stream drained")
        ports = {spec.name: spec.health_port for spec in platform.specs}
        config = local_scrape_config(ports, tmp_path)
        web_port = free_port()
        prometheus = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{web_port}"
        try:
            async with aiohttp.ClientSession() as session:

                async def every_target_up() -> list[dict[str, Any]] | None:
                    try:
                        found = await query(session, base, "up == 1")
                    except aiohttp.ClientError:
                        return None
                    return found if len(found) == len(ports) else None

                up = await platform.wait_until(every_target_up, "up == 1 for every job", 60)
                assert {sample["metric"]["job"] for sample in up} == set(ports)

                async def every_metric() -> set[str] | None:
                    names = "|".join(SPEC_METRIC_NAMES)
                    pattern = f'{{__name__=~"({names})(_bucket|_count|_sum)?"}}'
                    found = await query(session, base, f"count by (__name__) ({pattern})")
                    seen = {re.sub(r"_(bucket|count|sum)$", "", s["metric"]["__name__"])
                            for s in found}  # fmt: skip
                    return seen if seen >= set(SPEC_METRIC_NAMES) else None

                try:
                    seen = await platform.wait_until(every_metric, "every spec metric", 30)
                except AssertionError:
                    seen = await every_metric_now(session, base)
                    missing = set(SPEC_METRIC_NAMES) - seen
                    raise AssertionError(f"Prometheus lacks {sorted(missing)}") from None
                assert seen >= set(SPEC_METRIC_NAMES)
                rejections = await query(session, base, "sum(risk_rejections_total)")
                assert float(rejections[0]["value"][1]) >= 1
                errors = await query(session, base, 'sum(errors_total{service="strategy-engine"})')
                assert float(errors[0]["value"][1]) >= 1
        finally:
            prometheus.terminate()
            await prometheus.wait()

        messages = platform.standin.messages
        texts = [m.text for m in messages]
        assert any("signal</b>" in t or " signal" in t for t in texts), texts[:5]
        assert any("Order" in t for t in texts), texts[:5]
        assert any("exploding" in t for t in texts), "the failing strategy was not alerted"
        assert sum("exploding strategy blew up" in t for t in texts) == 1
        assert any("summary" in t.lower() for t in texts), "no daily summary at 00:00 UTC"
        # The four processes share one send slot per bot and chat (a limiter in Redis), so
        # the stand-in never sees two messages less than a second apart, whoever sent them.
        senders = {sender(message.text) for message in messages}
        assert senders >= {"strategy-engine", "order-executor", "portfolio-manager"}
        arrivals = sorted(message.arrived_at for message in messages)
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert min(gaps, default=1.0) >= 0.95, f"two messages {min(gaps):.3f} s apart"


def sender(text: str) -> str:
    """Which service sent a message, from its kind (shared.notifier_messages formats)."""
    if "signal</b>" in text or "exploding" in text:
        return "strategy-engine"
    if "<b>Order" in text:
        return "order-executor"
    if "summary" in text.lower():
        return "portfolio-manager"
    return "other"


async def every_metric_now(session: aiohttp.ClientSession, base: str) -> set[str]:
    names = "|".join(SPEC_METRIC_NAMES)
    pattern = f'{{__name__=~"({names})(_bucket|_count|_sum)?"}}'
    found = await query(session, base, f"count by (__name__) ({pattern})")
    return {re.sub(r"_(bucket|count|sum)$", "", s["metric"]["__name__"]) for s in found}


def test_slice_crosses_midnight(shared_data: Path, tmp_path: Path) -> None:
    lines = write_slice(shared_data, tmp_path, HISTORY + LIVE, skip=SKIP).read_text().splitlines()
    first_live = datetime.utcfromtimestamp(int(lines[1 + HISTORY].split(",")[0]) / 1000)
    last = datetime.utcfromtimestamp(int(lines[-1].split(",")[0]) / 1000)
    assert first_live.date() < last.date()
