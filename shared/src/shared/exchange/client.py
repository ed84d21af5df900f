"""`BinanceExchange`: the platform's only REST door to Binance spot, through ccxt.

- Spot only, fail closed: ccxt's URL map is replaced by the configured base URL's
  ``/api/v3`` alone, so any non-spot call (sapi, fapi...) raises ``NotSupported`` instead
  of reaching for the internet, and nothing is contacted at construction.
- Exact numbers: Binance's JSON (``info`` of ccxt's answers, or the raw endpoint methods)
  is parsed by `shared.exchange.parsers`, never ccxt's floats.
- Errors become the kinds of `shared.exchange.errors`; transient ones are retried with
  backoff under the circuit breaker, 429 waits Retry-After, -1021 resyncs the clock and
  retries once, 418 and authentication failures halt order placement and alert.
- Orders are idempotent: the client order id is derived from the signal id; before placing
  (by default) and after any create whose outcome is unknown (network error, timeout, 5xx,
  -1007) the order is looked up by ``origClientOrderId`` before anything is resent. An order
  found that way gets its fills from ``GET /api/v3/myTrades`` (raw, so prices and fees stay
  Binance's exact strings), as a create answer would have listed them.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import ccxt.async_support as ccxt
import structlog

from shared.config import Settings
from shared.exchange.errors import (
    ClockSkewError,
    ExchangeAuthError,
    ExchangeError,
    FilterRejectedError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    TradingHaltedError,
    TransientExchangeError,
    classify_ccxt_error,
)
from shared.exchange.filters import SymbolFilters, check_order
from shared.exchange.orders import OrderRequest, OrderResult, order_with_trades, parse_my_trades
from shared.exchange.parsers import (
    AssetBalance,
    ParsedOrder,
    parse_balances,
    parse_order,
    parse_rest_kline,
)
from shared.models import Candle, Order, OrderType, Trade, interval_delta
from shared.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    Sleep,
    backoff_delay,
    retry_with_backoff,
)

__all__ = ["AlertCallback", "BinanceExchange"]

T = TypeVar("T")
AlertCallback = Callable[[str], Any]
"""Called with an alert text (418, bad credentials, breaker opened); may be async."""

KLINES_PER_REQUEST = 1000
_log = structlog.get_logger("shared.exchange")


class BinanceExchange:
    """Binance spot over ccxt. Construct with settings; nothing connects until first use.

    ``breaker`` guards every request (by default one from the settings' threshold and
    timeout that counts only transient errors); ``on_alert`` receives alert texts, e.g.
    ``lambda text: notifier.send_error(text, "order-executor")``. ``session`` lets the
    caller supply the aiohttp session (tests use it to watch every connection).
    ``enable_rate_limit=False`` turns off ccxt's client-side throttle (tests, benchmarks).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        breaker: CircuitBreaker | None = None,
        on_alert: AlertCallback | None = None,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        enable_rate_limit: bool = True,
        max_retries: int = 3,
        retry_base_delay: float = 0.5,
        max_rate_limit_waits: int = 3,
        request_timeout: float = 10.0,
        weight_limit_per_minute: int = 6000,
        weight_budget: float = 0.8,
    ) -> None:
        self._settings = settings
        self._on_alert = on_alert
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rng = rng
        self._max_retries = max_retries
        self._retry_base_delay = retry_base_delay
        self._max_rate_limit_waits = max_rate_limit_waits
        self._weight_ceiling = int(weight_limit_per_minute * weight_budget)
        self.breaker = breaker or CircuitBreaker(
            "binance",
            settings.circuit_breaker_threshold,
            float(settings.circuit_breaker_timeout),
            on_open=self._alert,
            counted_errors=(TransientExchangeError,),
        )
        config: dict[str, Any] = {
            "apiKey": settings.binance_api_key.get_secret_value(),
            "secret": settings.binance_api_secret.get_secret_value(),
            "enableRateLimit": enable_rate_limit,
            "timeout": int(request_timeout * 1000),
            "options": {
                "defaultType": "spot",
                "fetchMarkets": {"types": ["spot"]},  # the default also loads fapi/dapi
                "fetchCurrencies": False,  # the default calls sapi capital/config/getall
                "fetchMargins": False,  # the default calls sapi margin endpoints
                "warnOnFetchOpenOrdersWithoutSymbol": False,
            },
        }
        if session is not None:
            config["session"] = session
        self._ex = ccxt.binance(config)
        self._ex.urls["api"] = self.spot_url_map(settings)
        # ccxt picks Binance's spot error table by URL prefix; off api.binance.com add it back.
        self._ex.exceptions["exact"].update(self._ex.exceptions["spot"]["exact"])
        self._filters: dict[str, SymbolFilters] = {}
        self._clock_synced = False
        self._halted: str | None = None

    @staticmethod
    def spot_url_map(settings: Settings) -> dict[str, Any]:
        """ccxt's whole URL map for us: spot REST and stream URLs from the settings only."""
        base = settings.binance_base_url.rstrip("/")
        ws = settings.binance_ws_url.rstrip("/")
        return {"public": f"{base}/api/v3", "private": f"{base}/api/v3", "ws": {"spot": f"{ws}/ws"}}

    @property
    def ccxt(self) -> Any:
        """The underlying ccxt exchange (for tests and diagnostics; don't trade through it)."""
        return self._ex

    @property
    def trading_halted(self) -> str | None:
        """Why order placement is halted (418 ban, refused credentials), or None."""
        return self._halted

    def resume_trading(self) -> None:
        """Lift a halt after the operator has dealt with its cause."""
        self._halted = None

    async def close(self) -> None:
        """Close ccxt's HTTP session (not a session the caller passed in)."""
        await self._ex.close()

    async def __aenter__(self) -> BinanceExchange:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- plumbing -------------------------------------------------------------------

    async def _alert(self, text: str) -> None:
        _log.error("exchange_alert", alert=text)
        if self._on_alert is None:
            return
        try:
            result = self._on_alert(text)
            if inspect.isawaitable(result):
                await result
        except Exception as alert_error:  # an alert must never break the caller
            _log.warning("exchange_alert_failed", error=str(alert_error))

    async def _halt(self, error: ExchangeError) -> None:
        first = self._halted is None
        self._halted = str(error)
        if first:
            await self._alert(f"Trading halted: {error}")

    async def _once(self, func: Callable[[], Awaitable[T]]) -> T:
        async with self.breaker:
            try:
                result = await func()
            except ccxt.BaseError as exc:
                error = classify_ccxt_error(
                    exc, self._ex.last_response_headers, self._ex.last_http_response
                )
                if isinstance(error, TradingHaltedError | ExchangeAuthError):
                    await self._halt(error)
                raise error from exc
        await self._respect_weight()
        return result

    async def _attempt(self, func: Callable[[], Awaitable[T]]) -> T:
        """One logical request: resync and retry once on -1021, wait out 429s."""
        resynced = False
        waits = 0
        while True:
            try:
                return await self._once(func)
            except ClockSkewError:
                if resynced:
                    raise
                resynced = True
                offset = await self.sync_clock()
                _log.warning("exchange_clock_resynced", offset_ms=offset)
            except RateLimitedError as exc:
                if waits >= self._max_rate_limit_waits:
                    raise
                delay = exc.retry_after
                if delay is None:
                    delay = backoff_delay(waits, max(self._retry_base_delay, 1.0), rng=self._rng)
                waits += 1
                _log.warning("exchange_rate_limited", wait_seconds=delay, error=str(exc))
                await self._sleep(delay)

    async def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        """`_attempt`, retried with backoff on transient errors (never for order creates)."""

        async def attempt() -> T:
            return await self._attempt(func)

        retrying = retry_with_backoff(
            attempt,
            self._max_retries,
            self._retry_base_delay,
            retry_on=(TransientExchangeError,),
            sleep=self._sleep,
            rng=self._rng,
        )
        return await retrying()

    def _used_weight(self) -> int | None:
        headers: Mapping[str, str] = self._ex.last_response_headers or {}
        for name, value in headers.items():
            if name.lower() == "x-mbx-used-weight-1m":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    async def _respect_weight(self) -> None:
        used = self._used_weight()
        if used is not None and used >= self._weight_ceiling:
            wait = 60.0 - (self._wall_clock() % 60.0) + 0.5
            _log.warning("exchange_weight_budget_spent", used_weight=used, wait_seconds=wait)
            await self._sleep(wait)

    # --- markets and time -------------------------------------------------------------

    async def sync_clock(self) -> int:
        """Measure the exchange clock's offset (ccxt ``load_time_difference``); returns ms."""
        try:
            offset = int(await self._ex.load_time_difference())
        except ccxt.BaseError as exc:
            raise classify_ccxt_error(exc, self._ex.last_response_headers) from exc
        self._clock_synced = True
        return offset

    def exchange_now_ms(self) -> int:
        """The exchange's clock now, in epoch ms, as estimated after `sync_clock`."""
        return int(self._ex.milliseconds() - int(self._ex.options.get("timeDifference", 0)))

    async def load_markets(self, reload: bool = False) -> None:
        """Load spot exchangeInfo (precision, filters) and sync the clock, once."""
        if self._ex.markets is None or reload:
            await self._call(lambda: self._ex.load_markets(reload))
            self._filters.clear()
        if not self._clock_synced:
            await self._call(self.sync_clock)

    async def unknown_symbols(self, symbols: Iterable[str]) -> list[str]:
        """Those of `symbols` (Binance ids such as BTCUSDT) that are not spot markets here."""
        await self.load_markets()
        markets = self._ex.markets_by_id or {}
        return [symbol for symbol in symbols if not markets.get(symbol)]

    def _unified(self, symbol: str) -> str:
        markets = self._ex.markets_by_id or {}
        found = markets.get(symbol)
        if not found:
            raise OrderRejectedError(
                f"unknown symbol {symbol!r}: not a spot market on "
                f"{self._settings.binance_base_url}",
                code=-1121,
                reason="Invalid symbol.",
            )
        return str(found[0]["symbol"])

    async def filters(self, symbol: str) -> SymbolFilters:
        """The symbol's LOT_SIZE/PRICE_FILTER/NOTIONAL rules from exchangeInfo."""
        await self.load_markets()
        if symbol not in self._filters:
            market = self._ex.market(self._unified(symbol))
            self._filters[symbol] = SymbolFilters.from_exchange_info(
                symbol, market["info"].get("filters", [])
            )
        return self._filters[symbol]

    async def round_quantity(self, symbol: str, quantity: Decimal) -> Decimal:
        """``quantity`` truncated to the symbol's LOT_SIZE step (ccxt amount_to_precision)."""
        await self.load_markets()
        try:
            return Decimal(self._ex.amount_to_precision(self._unified(symbol), str(quantity)))
        except ccxt.InvalidOrder:
            f = await self.filters(symbol)
            nearest = max(f.min_qty, f.step_size) or None
            raise FilterRejectedError(
                f"Filter failure: LOT_SIZE: quantity {quantity} of {symbol} is below one step "
                f"({f.step_size}); the nearest valid quantity is {nearest}",
                filter_name="LOT_SIZE",
                nearest_valid_quantity=nearest,
            ) from None

    async def round_price(self, symbol: str, price: Decimal) -> Decimal:
        """``price`` rounded to the symbol's PRICE_FILTER tick (ccxt price_to_precision)."""
        await self.load_markets()
        return Decimal(self._ex.price_to_precision(self._unified(symbol), str(price)))

    async def average_price(self, symbol: str) -> Decimal:
        """Binance's average price (``GET /api/v3/avgPrice``), what MARKET NOTIONAL uses."""
        raw = await self._call(lambda: self._ex.publicGetAvgPrice({"symbol": symbol}))
        return Decimal(str(raw["price"]))

    async def ping(self) -> str:
        """A health check: ``GET /api/v3/ping`` answered (raises when not)."""
        await self._once(lambda: self._ex.publicGetPing())
        return "ping ok"

    # --- market data and account ------------------------------------------------------

    async def fetch_klines(
        self,
        symbol: str,
        interval: str,
        start: datetime,
        end: datetime,
        *,
        on_page: Callable[[int], Any] | None = None,
    ) -> list[Candle]:
        """Every candle of ``symbol``/``interval`` opened in [start, end], oldest first.

        Pages of 1000 (Binance's maximum); between pages the used weight is checked and,
        near the budget, the call waits for the next minute. A candle whose close time is
        not yet past on the exchange's clock comes back with ``closed=False``.
        ``on_page(candles_so_far)`` is called after each page (for a progress bar).
        """
        step_ms = int(interval_delta(interval).total_seconds() * 1000)
        start_ms = int(start.timestamp() * 1000)
        end_ms = int(end.timestamp() * 1000)
        if end_ms < start_ms:
            raise ValueError(f"fetch_klines: end {end} is before start {start}")
        if not self._clock_synced:
            await self._call(self.sync_clock)
        candles: list[Candle] = []
        cursor = start_ms
        while cursor <= end_ms:
            params = {
                "symbol": symbol,
                "interval": interval,
                "startTime": cursor,
                "endTime": end_ms,
                "limit": KLINES_PER_REQUEST,
            }
            rows: list[Any] = await self._call(
                lambda p=params: self._ex.publicGetKlines(p)  # type: ignore[misc]
            )
            if not rows:
                break
            now_ms = self.exchange_now_ms()
            for row in rows:
                candle = parse_rest_kline(row, symbol, interval, now_ms=now_ms)
                if not candles or candle.open_time > candles[-1].open_time:
                    candles.append(candle)
            if on_page is not None:
                on_page(len(candles))
            last_open = int(rows[-1][0])
            if len(rows) < KLINES_PER_REQUEST or last_open < cursor:
                break
            cursor = last_open + step_ms
        return candles

    async def fetch_balances(self) -> dict[str, AssetBalance]:
        """The spot account's balances by asset (``GET /api/v3/account``), exact."""
        raw = await self._call(lambda: self._ex.fetch_balance())
        return parse_balances(raw["info"])

    # --- orders -----------------------------------------------------------------------

    async def _prepare(self, request: OrderRequest) -> tuple[str, Decimal, Decimal | None]:
        await self.load_markets()
        unified = self._unified(request.symbol)
        market = request.type is OrderType.MARKET
        quantity = await self.round_quantity(request.symbol, request.quantity)
        price = None
        if request.price is not None:
            price = await self.round_price(request.symbol, request.price)
        f = await self.filters(request.symbol)
        judged_at = price
        if market:
            judged_at = request.reference_price
            if judged_at is None and f.min_notional and f.apply_min_to_market:
                judged_at = await self.average_price(request.symbol)
        check_order(f, quantity, judged_at, market=market)
        return unified, quantity, price

    async def find_order(
        self,
        symbol: str,
        client_order_id: str,
        *,
        signal_id: str | None = None,
        strategy: str | None = None,
    ) -> Order | None:
        """The order with this client order id (``origClientOrderId``), or None."""
        await self.load_markets()
        unified = self._unified(symbol)
        try:
            raw = await self._call(
                lambda: self._ex.fetch_order("", unified, {"origClientOrderId": client_order_id})
            )
        except OrderNotFoundError:
            return None
        return parse_order(raw["info"], signal_id=signal_id, strategy=strategy).order

    async def order_trades(self, order: Order) -> tuple[Trade, ...]:
        """The fills of ``order`` (``GET /api/v3/myTrades`` by its exchange order id), exact;
        none for an order that has not traded (no request is sent then)."""
        if order.filled_quantity <= 0 or order.exchange_order_id is None:
            return ()
        params = {"symbol": order.symbol, "orderId": order.exchange_order_id, "limit": 1000}
        rows: list[Any] = await self._call(lambda: self._ex.privateGetMyTrades(params))
        return parse_my_trades(rows, order)

    async def find_order_result(
        self,
        symbol: str,
        client_order_id: str,
        *,
        signal_id: str | None = None,
        strategy: str | None = None,
    ) -> OrderResult | None:
        """The order with this client order id with its fills (`order_trades`) and the fee
        they add up to, as ``found_by_lookup``; None when there is no such order.

        The order exists whatever happens next, so a failure to list its fills does not
        raise (the caller must not take the order for unplaced): it is logged and the order
        comes back without them, as the exchange's query answered it."""
        order = await self.find_order(
            symbol, client_order_id, signal_id=signal_id, strategy=strategy
        )
        if order is None:
            return None
        try:
            trades = await self.order_trades(order)
        except (ExchangeError, CircuitOpenError) as exc:
            _log.warning(
                "order_trades_unavailable", client_order_id=client_order_id, error=str(exc)
            )
            trades = ()
        return OrderResult(order_with_trades(order, trades), trades, found_by_lookup=True)

    async def submit_order(
        self, request: OrderRequest, *, lookup_first: bool = True
    ) -> OrderResult:
        """Place ``request`` at most once, whatever fails along the way.

        With ``lookup_first`` (the default) an order already known under the client order
        id is returned instead of placing another: a redelivered signal places nothing.
        Pass False only for a request that has certainly never been sent (saves one query).
        After a create whose outcome is unknown the order is looked up before any resend.
        Raises `FilterRejectedError` before sending when a filter would refuse the order.
        """
        if self._halted is not None:
            raise TradingHaltedError(
                f"order {request.client_order_id} not sent: trading is halted ({self._halted})",
                retry_after=None,
            )
        unified, quantity, price = await self._prepare(request)
        ids = {"signal_id": request.signal_id, "strategy": request.strategy}
        if lookup_first:
            found = await self.find_order_result(request.symbol, request.client_order_id, **ids)
            if found is not None:
                return found
        unknown_outcomes = 0
        while True:
            try:
                raw = await self._attempt(
                    lambda: self._ex.create_order(
                        unified,
                        request.type.value.lower(),
                        request.side.value.lower(),
                        str(quantity),
                        None if price is None else str(price),
                        {"newClientOrderId": request.client_order_id},
                    )
                )
            except OrderRejectedError as exc:
                if exc.reason != "Duplicate order sent.":
                    raise
                # Binance refuses a client order id only while its order is open: it exists.
                found = await self.find_order_result(request.symbol, request.client_order_id, **ids)
                if found is None:
                    raise
                return found
            except TransientExchangeError as exc:
                # The order may exist although we saw an error (BINANCE.md pitfall 1).
                _log.warning(
                    "order_outcome_unknown",
                    client_order_id=request.client_order_id,
                    error=str(exc),
                )
                await self._sleep(
                    backoff_delay(unknown_outcomes, self._retry_base_delay, rng=self._rng)
                )
                unknown_outcomes += 1
                found = await self.find_order_result(request.symbol, request.client_order_id, **ids)
                if found is not None:
                    return found
                if unknown_outcomes > self._max_retries:
                    raise
                continue
            parsed: ParsedOrder = parse_order(
                raw["info"], signal_id=request.signal_id, strategy=request.strategy
            )
            return OrderResult(parsed.order, parsed.trades)

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order:
        """The order with this client order id; `OrderNotFoundError` when there is none."""
        order = await self.find_order(symbol, client_order_id)
        if order is None:
            raise OrderNotFoundError(
                f"no order {client_order_id!r} on {symbol}",
                code=-2013,
                reason="Order does not exist.",
            )
        return order

    async def cancel_order(self, symbol: str, client_order_id: str) -> Order:
        """Cancel the open order with this client order id; returns it as CANCELED."""
        await self.load_markets()
        unified = self._unified(symbol)
        raw = await self._call(
            lambda: self._ex.cancel_order("", unified, {"origClientOrderId": client_order_id})
        )
        return parse_order(raw["info"]).order

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders, of one symbol or all."""
        await self.load_markets()
        unified = None if symbol is None else self._unified(symbol)
        raw = await self._call(lambda: self._ex.fetch_open_orders(unified))
        return [parse_order(entry["info"]).order for entry in raw]
