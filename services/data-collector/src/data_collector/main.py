"""data-collector: wires the exchange, PostgreSQL and the bus to the `DataCollector`.

Run it with ``python -m data_collector``. It collects every pair of COLLECTOR_SYMBOLS ×
COLLECTOR_INTERVALS from BINANCE_BASE_URL / BINANCE_WS_URL and publishes closed candles on
the candles stream. /health adds "websocket" (connected) and, per series, the age of the last
closed candle on the exchange's clock (failing beyond two intervals).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from shared.config import Settings
from shared.exchange import BinanceExchange, TransientExchangeError
from shared.healthcheck import CheckFunc, age_check, flag_check
from shared.models import interval_delta
from shared.service import (
    ServiceConfigError,
    ServiceContext,
    ServiceUnavailableError,
    run_service,
)

from data_collector.collector import DataCollector
from data_collector.storage import CandleStorage

SERVICE = "data-collector"


async def require_listed_symbols(exchange: BinanceExchange, settings: Settings) -> None:
    """Stop with one line when a COLLECTOR_SYMBOLS entry is not a spot market on the exchange
    (a typo, or a pair the simulator does not replay): otherwise every start would fail on
    its first kline request, restarted forever."""
    unknown = await exchange.unknown_symbols(settings.collector_symbols.split(","))
    if unknown:
        raise ServiceConfigError(
            f"COLLECTOR_SYMBOLS: {', '.join(unknown)} "
            f"{'is not a spot market' if len(unknown) == 1 else 'are not spot markets'} on "
            f"{settings.binance_base_url}: check the spelling (Binance writes BTCUSDT)"
        )


def health_checks(collector: DataCollector) -> dict[str, CheckFunc]:
    """/health's "websocket" (connected) and, per series, the age of its last closed candle
    on the exchange's clock, failing when older than two intervals."""
    down = "kline WebSocket is not connected"
    checks = {"websocket": flag_check(collector.connected, down, "connected")}
    for series in collector.series:
        symbol, interval = series
        checks[f"candles {symbol} {interval}"] = age_check(
            collector.last_close_of(series),
            2 * interval_delta(interval),
            what=f"last closed {symbol} {interval} candle",
            clock=collector.exchange_now,
        )
    return checks


async def build_tasks(ctx: ServiceContext) -> list[Awaitable[Any]]:
    """The collector's one long task, with its health checks registered."""
    settings = ctx.settings
    assert ctx.database is not None
    exchange = BinanceExchange(
        settings, on_alert=lambda text: ctx.notifier.send_error(text, SERVICE)
    )
    collector = DataCollector(
        exchange=exchange,
        storage=CandleStorage(ctx.database.sessions, ctx.database.writer),
        bus=ctx.bus,
        ws_url=settings.binance_ws_url,
        series=settings.collector_series,
        history_candles=settings.collector_history_candles,
    )
    for name, check in health_checks(collector).items():
        ctx.health.add_check(name, check)
    ctx.on_stop(collector.stop)

    async def run() -> None:
        try:
            # In the task, so that a stop during an exchange outage cancels its retries.
            await require_listed_symbols(exchange, settings)
            if not ctx.stopping.is_set():  # a stop that came meanwhile found nothing running
                await collector.run()
        except TransientExchangeError as exc:
            # Its REST retries are spent: restart (with the supervisor's growing delay).
            raise ServiceUnavailableError(
                f"the exchange at BINANCE_BASE_URL={settings.binance_base_url} does not "
                f"answer ({exc}); check the URL and the network"
            ) from exc
        finally:
            await exchange.close()

    return [run()]


def main() -> None:
    """Run the data collector until SIGTERM."""
    run_service(SERVICE, build_tasks)


if __name__ == "__main__":
    main()
