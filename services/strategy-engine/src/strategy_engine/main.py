"""The strategy-engine service: ``python -m strategy_engine``.

Reads the settings and the engine config (STRATEGY_ENGINE_CONFIG; a bad one is one line on
stderr and exit status 2), warms the strategies up from PostgreSQL, then consumes the
candles stream in the group "strategy-engine" and publishes signals (see `engine`).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable

import structlog
from shared.config import Settings, SettingsError, load_settings
from shared.models import Candle
from shared.service import EXIT_SETTINGS, ServiceContext, TasksFactory, run_service
from shared.streams import CANDLES

from strategy_engine.engine import SERVICE, StrategyEngine
from strategy_engine.instances import EngineConfigError, StrategyInstance, load_instances

log = structlog.get_logger("strategy_engine")


def uncollected(instances: list[StrategyInstance], settings: Settings) -> list[StrategyInstance]:
    """The instances whose series the data collector, configured by these same settings,
    does not collect (COLLECTOR_SYMBOLS × COLLECTOR_INTERVALS): they would get no candles."""
    collected = set(settings.collector_series)
    return [i for i in instances if (i.symbol, i.interval) not in collected]


def build_tasks(instances: list[StrategyInstance]) -> TasksFactory:
    """The service's tasks factory for `shared.service.serve`, running ``instances``."""

    async def tasks(ctx: ServiceContext) -> list[Awaitable[None]]:
        assert ctx.database is not None
        for instance in uncollected(instances, ctx.settings):
            # A warning, not an error: another collector, set up differently, may store it.
            log.warning(
                "no candles will come for this instance unless another collector stores them",
                instance=instance.key,
                series=f"{instance.symbol} {instance.interval}",
                hint="add the symbol to COLLECTOR_SYMBOLS and the interval to COLLECTOR_INTERVALS",
            )
        engine = StrategyEngine(
            instances,
            sessions=ctx.database.sessions,
            bus=ctx.bus,
            notifier=ctx.notifier,
            service=ctx.name,
            writer=ctx.database.writer,
        )
        await engine.start()
        consumer = ctx.consumer(CANDLES, engine.on_candle, accept=[Candle])
        return [consumer.run()]

    return tasks


def main() -> None:
    """Run the service until SIGTERM (exit 0) or a crash (exit 1)."""
    try:
        settings = load_settings()
        instances = load_instances(settings.strategy_engine_config, settings.strategies_extra_dir)
    except (SettingsError, EngineConfigError) as exc:
        print(f"{SERVICE}: {exc}", file=sys.stderr)
        sys.exit(EXIT_SETTINGS)
    run_service(
        SERVICE,
        build_tasks(instances),
        settings=settings,
        bus_namespace=settings.bus_namespace,
    )
