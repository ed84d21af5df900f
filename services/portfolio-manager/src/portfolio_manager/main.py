"""The portfolio-manager service: ``python -m portfolio_manager``.

Consumes the orders stream (`Order` and `Trade` events) and the candles stream, both in the
group "portfolio-manager", and keeps positions, PnL and snapshots (see `manager`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta

from shared.config import Settings
from shared.models import Candle, Order, Trade
from shared.service import ServiceContext, run_service
from shared.streams import CANDLES, ORDERS

from portfolio_manager.manager import SERVICE, PortfolioManager


async def tasks(ctx: ServiceContext) -> list[Awaitable[None]]:
    """The service's tasks for `shared.service.serve`."""
    assert ctx.database is not None
    manager = make_manager(ctx)
    await manager.start()
    orders = ctx.consumer(ORDERS, manager.on_order_event, accept=[Order, Trade])
    candles = ctx.consumer(CANDLES, manager.on_candle, accept=[Candle])
    return [orders.run(), candles.run()]


def make_manager(ctx: ServiceContext) -> PortfolioManager:
    """A `PortfolioManager` wired to the context's database, settings and notifier."""
    assert ctx.database is not None
    settings: Settings = ctx.settings
    return PortfolioManager(
        sessions=ctx.database.sessions,
        initial_cash=settings.portfolio_initial_cash,
        snapshot_interval=timedelta(seconds=settings.portfolio_snapshot_interval),
        notifier=ctx.notifier,
        writer=ctx.database.writer,
    )


def main() -> None:
    """Run the service until SIGTERM (exit 0) or a crash (exit 1)."""
    run_service(SERVICE, tasks)
