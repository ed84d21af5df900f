"""order-executor: wires Redis, PostgreSQL, the exchange (live) and the notifier to the executor.

Run it with ``python -m order_executor``. It reads SIGNALS and CANDLES in the group
"order-executor" and publishes `Order` and `Trade` events on ORDERS. DRY_RUN=true (default)
fills with the shared fill model; DRY_RUN=false sends to BINANCE_BASE_URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from shared.fill_model import FillModel
from shared.models import Candle, Signal
from shared.service import ServiceContext, run_service
from shared.streams import CANDLES, SIGNALS

from order_executor.executor import OrderExecutor
from order_executor.risk import RiskLimits, RiskManager
from order_executor.risk_store import RiskStateStore

SERVICE = "order-executor"


async def build_tasks(ctx: ServiceContext) -> list[Awaitable[Any]]:
    """The executor's two consumers, after its start-up recovery pass."""
    settings = ctx.settings
    assert ctx.database is not None
    fill_model = FillModel()
    broker = None
    exchange = None
    if not settings.dry_run:
        from shared.exchange import BinanceExchange

        from order_executor.live import LiveBroker

        exchange = BinanceExchange(
            settings, on_alert=lambda text: ctx.notifier.send_error(text, SERVICE)
        )
        broker = LiveBroker(exchange, fee_rate=fill_model.fee_rate)
    executor = OrderExecutor(
        sessions=ctx.database.sessions,
        bus=ctx.bus,
        risk=RiskManager(RiskLimits.from_settings(settings)),
        fill_model=fill_model,
        initial_cash=settings.portfolio_initial_cash,
        broker=broker,
        risk_store=RiskStateStore(ctx.redis, ctx.bus.namespace),
        notifier=ctx.notifier,
        writer=ctx.database.writer,
    )
    try:
        await executor.start()
    except BaseException:
        if exchange is not None:
            await exchange.close()
        raise
    signals = ctx.consumer(SIGNALS, executor.on_signal, accept=[Signal])
    candles = ctx.consumer(CANDLES, executor.on_candle, accept=[Candle])

    async def consume() -> None:
        try:
            await asyncio.gather(signals.run(), candles.run())
        finally:  # after the in-flight orders are done (the consumers drain first)
            if exchange is not None:
                await exchange.close()

    return [consume()]


def main() -> None:
    """Run the order executor until SIGTERM."""
    run_service(SERVICE, build_tasks)


if __name__ == "__main__":
    main()
