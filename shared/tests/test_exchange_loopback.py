"""The adapter against the exchange simulator over loopback (issue 6's "Must show").

Every test's HTTP goes through a session whose resolver and request trace refuse any
host that is not loopback, so a stray call to the internet fails the test.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from exchange_simulator.testing import RunningSimulator, running_simulator, synthetic_candles
from shared.config import Settings, load_settings
from shared.exchange import (
    BinanceExchange,
    ExchangeAuthError,
    FilterRejectedError,
    OrderRequest,
    TradingHaltedError,
    TransientExchangeError,
    classify_ccxt_error,
)
from shared.exchange.parsers import ms_to_datetime
from shared.models import OrderStatus, OrderType, Side, Signal
from shared.resilience import CircuitBreaker, CircuitOpenError, CircuitState
from shared.testing.virtual_time import VirtualTime

SYMBOL = "BTCUSDT"
LOOPBACK_NAMES = {"localhost"}


class NonLoopbackConnection(AssertionError):
    """Raised by the guard when something tries to reach a host outside loopback."""


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LoopbackOnlyResolver(AbstractResolver):
    """Resolves only loopback names; anything else fails the test before a packet leaves."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if not _is_loopback(host):
            raise NonLoopbackConnection(f"connection attempt to non-loopback host {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


def loopback_session(seen_hosts: list[str]) -> aiohttp.ClientSession:
    """A session that records every request's host and refuses non-loopback ones."""

    async def on_request_start(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        host = params.url.host or ""
        seen_hosts.append(host)
        if not _is_loopback(host):
            raise NonLoopbackConnection(f"request to non-loopback URL {params.url}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    connector = aiohttp.TCPConnector(resolver=LoopbackOnlyResolver())
    return aiohttp.ClientSession(connector=connector, trace_configs=[trace])


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(synthetic_candles(SYMBOL, 300), history=200) as running:
        yield running


@pytest.fixture
def seen_hosts() -> list[str]:
    return []


@pytest.fixture
async def session(seen_hosts: list[str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with loopback_session(seen_hosts) as guarded:
        yield guarded
    assert seen_hosts, "the guard saw no request at all"
    assert all(_is_loopback(h) for h in seen_hosts)


def sim_settings(sim: RunningSimulator, *, secret: str | None = None) -> Settings:
    return load_settings(
        binance_base_url=sim.base_url,
        binance_ws_url=sim.ws_url,
        binance_api_key=sim.api_key,
        binance_api_secret=secret or sim.api_secret,
        circuit_breaker_threshold=5,
        circuit_breaker_timeout=30,
    )


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def alerts() -> list[str]:
    return []


@pytest.fixture
async def exchange(
    sim: RunningSimulator, session: aiohttp.ClientSession, vt: VirtualTime, alerts: list[str]
) -> AsyncIterator[BinanceExchange]:
    adapter = BinanceExchange(
        sim_settings(sim),
        session=session,
        sleep=vt.sleep,
        on_alert=alerts.append,
        enable_rate_limit=False,
    )
    async with adapter:
        yield adapter


def signal(n: int, quantity: str = "0.001", side: Side = Side.BUY) -> Signal:
    return Signal(
        id=f"{n:032x}",
        strategy="test",
        symbol=SYMBOL,
        interval="1m",
        side=side,
        quantity=Decimal(quantity),
        price=Decimal("30000"),
        candle_time=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=n),
    )


async def test_the_guard_itself_refuses_a_non_loopback_host():
    hosts: list[str] = []
    async with loopback_session(hosts) as guarded:
        with pytest.raises(NonLoopbackConnection):
            async with guarded.get("http://api.binance.com/api/v3/ping"):
                pass
        # A hostname that would resolve elsewhere is refused by the resolver too.
        with pytest.raises(NonLoopbackConnection):
            await LoopbackOnlyResolver().resolve("stream.binance.com", 443)
    assert hosts == ["api.binance.com"]


async def test_adapter_does_everything_the_platform_needs_on_loopback_only(
    exchange: BinanceExchange, sim: RunningSimulator, seen_hosts: list[str]
):
    await exchange.load_markets()
    state = await sim.control.state()
    now_open_ms = state["replay"]["current_open_time"]
    candles = await exchange.fetch_klines(
        SYMBOL,
        "1m",
        ms_to_datetime(now_open_ms) - timedelta(minutes=30),
        ms_to_datetime(now_open_ms) - timedelta(minutes=1),
    )
    assert len(candles) == 30
    assert all(isinstance(c.close, Decimal) for c in candles)

    balances = await exchange.fetch_balances()
    assert balances["USDT"].free == Decimal("10000")

    price = Decimal(state["prices"][SYMBOL])
    limit = await exchange.submit_order(
        OrderRequest(
            SYMBOL,
            Side.BUY,
            Decimal("0.001"),
            "limit-1",
            type=OrderType.LIMIT,
            price=(price * Decimal("0.5")).quantize(Decimal("0.01")),
        )
    )
    assert limit.order.status is OrderStatus.SENT
    assert [o.client_order_id for o in await exchange.fetch_open_orders(SYMBOL)] == ["limit-1"]
    assert (await exchange.fetch_order(SYMBOL, "limit-1")).exchange_order_id == (
        limit.order.exchange_order_id
    )
    canceled = await exchange.cancel_order(SYMBOL, "limit-1")
    assert canceled.status is OrderStatus.CANCELED
    assert await exchange.fetch_open_orders(SYMBOL) == []

    market = await exchange.submit_order(OrderRequest.from_signal(signal(1)))
    assert market.order.status is OrderStatus.FILLED
    assert market.trades and sum(t.quantity for t in market.trades) == Decimal("0.001")
    assert (await exchange.fetch_balances())["BTC"].free == Decimal("0.001")

    # Anything outside spot fails closed, in ccxt, before any request.
    requests_before = len(seen_hosts)
    with pytest.raises(ccxt.NotSupported):
        await exchange.ccxt.sapiGetMarginAccount()
    with pytest.raises(ccxt.NotSupported):
        await exchange.ccxt.fapiPublicGetPing()
    assert len(seen_hosts) == requests_before
    assert set(seen_hosts) == {"127.0.0.1"}


async def test_wrong_secret_gets_1022_as_an_auth_error_that_halts_and_alerts(
    sim: RunningSimulator, session: aiohttp.ClientSession, alerts: list[str]
):
    adapter = BinanceExchange(
        sim_settings(sim, secret="not-the-secret"),
        session=session,
        on_alert=alerts.append,
        enable_rate_limit=False,
    )
    async with adapter:
        with pytest.raises(ExchangeAuthError) as caught:
            await adapter.fetch_balances()
        assert caught.value.code == -1022
        assert adapter.trading_halted is not None
        assert len(alerts) == 1 and "-1022" in alerts[0]
        assert "not-the-secret" not in alerts[0] + str(caught.value)


async def test_stale_timestamp_gets_1021_then_the_clock_is_resynced_and_the_call_succeeds(
    exchange: BinanceExchange, sim: RunningSimulator
):
    await exchange.load_markets()
    before = exchange.ccxt.options["timeDifference"]
    await sim.control.set_clock(offset_ms=120_000)  # the exchange runs 2 minutes ahead
    balances = await exchange.fetch_balances()
    assert balances["USDT"].free == Decimal("10000")
    statuses = [(r["path"], r["status"]) for r in await sim.control.requests()]
    assert statuses[-3:] == [
        ("/api/v3/account", 400),
        ("/api/v3/time", 200),
        ("/api/v3/account", 200),
    ]
    assert exchange.ccxt.options["timeDifference"] - before == pytest.approx(-120_000, abs=2_000)


async def test_quantities_and_prices_are_rounded_and_notional_is_caught_before_sending(
    exchange: BinanceExchange, sim: RunningSimulator
):
    f = await exchange.filters(SYMBOL)
    raw_quantity = Decimal("0.0123456789")
    rounded = await exchange.round_quantity(SYMBOL, raw_quantity)
    assert rounded <= raw_quantity and (raw_quantity - rounded) < f.step_size
    assert rounded % f.step_size == 0
    rounded_price = await exchange.round_price(SYMBOL, Decimal("30000.123456"))
    assert rounded_price % f.tick_size == 0
    assert abs(rounded_price - Decimal("30000.123456")) <= f.tick_size / 2

    posts_before = [r for r in await sim.control.requests() if r["method"] == "POST"]
    tiny = (f.min_notional / Decimal("30000") / 2).quantize(f.step_size)
    with pytest.raises(FilterRejectedError) as caught:
        await exchange.submit_order(OrderRequest.from_signal(signal(7, quantity=str(tiny))))
    assert caught.value.filter_name == "NOTIONAL"
    nearest = caught.value.nearest_valid_quantity
    assert nearest is not None and nearest * Decimal("30000") >= f.min_notional
    assert (nearest - f.step_size) * Decimal("30000") < f.min_notional
    posts_after = [r for r in await sim.control.requests() if r["method"] == "POST"]
    assert posts_after == posts_before  # nothing was sent


async def test_100_signals_with_every_other_response_dropped_make_exactly_100_orders(
    exchange: BinanceExchange, sim: RunningSimulator
):
    await exchange.load_markets()
    await sim.control.add_fault("drop", path="/api/v3/order", method="POST", every=2)
    results = [
        await exchange.submit_order(OrderRequest.from_signal(signal(n)), lookup_first=False)
        for n in range(100)
    ]
    orders = await sim.control.orders(api_key=sim.api_key)
    assert len(orders) == 100
    assert len({o["clientOrderId"] for o in orders}) == 100
    assert sum(r.found_by_lookup for r in results) == 50
    assert {r.order.status for r in results} == {OrderStatus.FILLED}
    # recovered or answered, every order comes with its one fill and its fee
    assert all(len(r.trades) == 1 and r.order.fee > 0 for r in results)

    await sim.control.clear_faults()
    again = [await exchange.submit_order(OrderRequest.from_signal(signal(n))) for n in (3, 4)]
    assert all(r.found_by_lookup for r in again)
    assert len(await sim.control.orders(api_key=sim.api_key)) == 100


async def test_an_order_recovered_after_a_dropped_response_has_the_recorded_fills_and_fee(
    exchange: BinanceExchange, sim: RunningSimulator
):
    await exchange.load_markets()
    await sim.control.add_fault("drop", path="/api/v3/order", method="POST", times=1)
    request = OrderRequest.from_signal(signal(77, quantity="0.013"))
    result = await exchange.submit_order(request, lookup_first=False)
    assert result.found_by_lookup
    [recorded] = await sim.control.orders(api_key=sim.api_key)
    fills = recorded_fills(sim, recorded["orderId"])
    assert fills  # the simulator executed it although the answer was dropped
    assert [
        (t.trade_id, t.price, t.quantity, t.fee, t.fee_asset, t.side, t.client_order_id)
        for t in result.trades
    ] == [
        (
            str(f.trade_id),
            f.price,
            f.qty,
            f.commission,
            f.commission_asset,
            Side.BUY,
            request.client_order_id,
        )
        for f in fills
    ]
    assert result.order.fee == sum(f.commission for f in fills) and result.order.fee > 0
    assert result.order.fee_asset == "USDT"
    assert result.order.avg_fill_price == fills[0].price
    assert all(t.time == ms_to_datetime(recorded["updateTime"]) for t in result.trades)
    # a redelivered signal finds the same order with the same fills, placing nothing
    again = await exchange.submit_order(request)
    assert again == result
    assert len(await sim.control.orders(api_key=sim.api_key)) == 1


async def test_a_found_order_that_has_not_traded_comes_without_a_trades_request(
    exchange: BinanceExchange, sim: RunningSimulator
):
    await exchange.load_markets()
    far_below = (Decimal((await sim.control.state())["prices"][SYMBOL]) / 2).quantize(
        Decimal("0.01")
    )
    request = OrderRequest(
        SYMBOL, Side.BUY, Decimal("0.001"), "rests", type=OrderType.LIMIT, price=far_below
    )
    await exchange.submit_order(request, lookup_first=False)
    found = await exchange.submit_order(request)
    assert found.found_by_lookup and found.trades == () and found.order.fee == 0
    paths = [r["path"] for r in await sim.control.requests()]
    assert "/api/v3/myTrades" not in paths


def recorded_fills(sim: RunningSimulator, order_id: int) -> list[Any]:
    """What the simulator itself recorded for the order (not what it answered)."""
    [order] = [o for o in sim.simulator.core.matcher.orders if o.order_id == order_id]
    return list(order.fills)


async def test_429_with_retry_after_is_waited_out_then_the_call_succeeds(
    exchange: BinanceExchange, sim: RunningSimulator, vt: VirtualTime
):
    await exchange.load_markets()
    await sim.control.add_fault("http_429", path="/api/v3/account", times=1, retry_after=7)
    balances = await exchange.fetch_balances()
    assert balances["USDT"].free == Decimal("10000")
    assert vt.sleeps == [7.0]


async def test_five_500s_open_the_breaker_the_next_call_fails_at_once_a_trial_closes_it(
    sim: RunningSimulator, session: aiohttp.ClientSession, vt: VirtualTime
):
    breaker = CircuitBreaker(
        "binance-test", 5, 30.0, clock=vt.now, counted_errors=(TransientExchangeError,)
    )
    adapter = BinanceExchange(
        sim_settings(sim),
        session=session,
        breaker=breaker,
        sleep=vt.sleep,
        max_retries=0,
        enable_rate_limit=False,
    )
    async with adapter:
        await adapter.load_markets()
        await sim.control.add_fault("http_500", path="/api/v3/account", times=5)
        for _ in range(5):
            with pytest.raises(TransientExchangeError):
                await adapter.fetch_balances()
        assert breaker.state is CircuitState.OPEN
        seen = len(await sim.control.requests())
        with pytest.raises(CircuitOpenError):
            await adapter.fetch_balances()
        assert len(await sim.control.requests()) == seen  # refused without a request
        await vt.advance(30.0)
        assert (await adapter.fetch_balances())["USDT"].free == Decimal("10000")
        assert breaker.state is CircuitState.CLOSED


async def test_a_notional_violation_sent_raw_is_refused_by_the_simulator_and_mapped_by_name(
    exchange: BinanceExchange,
):
    await exchange.load_markets()
    # Bypass our pre-check: ccxt straight to the simulator with a tiny market order.
    with pytest.raises(ccxt.BaseError) as raised:
        await exchange.ccxt.create_order(
            "BTC/USDT", "market", "buy", "0.00001", None, {"newClientOrderId": "raw-tiny"}
        )
    error = classify_ccxt_error(raised.value, None, exchange.ccxt.last_http_response)
    assert isinstance(error, FilterRejectedError)
    assert (error.code, error.filter_name) == (-1013, "NOTIONAL")


async def test_execution_status_unknown_on_create_is_resolved_by_lookup_not_by_resending(
    exchange: BinanceExchange, sim: RunningSimulator
):
    await exchange.load_markets()
    await sim.control.add_fault("exec_unknown", path="/api/v3/order", method="POST", times=1)
    result = await exchange.submit_order(OrderRequest.from_signal(signal(42)), lookup_first=False)
    assert result.found_by_lookup
    assert result.order.status is OrderStatus.FILLED
    orders = await sim.control.orders(api_key=sim.api_key)
    assert [o["clientOrderId"] for o in orders] == [result.order.client_order_id]
    posts = [r for r in await sim.control.requests() if r["method"] == "POST"]
    assert len(posts) == 1


async def test_418_halts_trading_alerts_once_and_refuses_orders_without_sending(
    exchange: BinanceExchange, sim: RunningSimulator, alerts: list[str]
):
    await exchange.load_markets()
    await sim.control.add_fault("http_418", path="/api/v3/order", times=1, retry_after=120)
    with pytest.raises(TradingHaltedError) as caught:
        await exchange.submit_order(OrderRequest.from_signal(signal(1)), lookup_first=False)
    assert caught.value.retry_after == 120.0
    assert exchange.trading_halted is not None
    assert len(alerts) == 1 and "418" in alerts[0]
    seen = len(await sim.control.requests())
    with pytest.raises(TradingHaltedError):
        await exchange.submit_order(OrderRequest.from_signal(signal(2)))
    assert len(await sim.control.requests()) == seen
    assert await sim.control.orders(api_key=sim.api_key) == []


async def test_kline_history_is_paged_1000_at_a_time_without_gaps_or_repeats(
    session: aiohttp.ClientSession,
):
    series = synthetic_candles(SYMBOL, 2600)
    async with running_simulator(series, history=2550) as running:
        adapter = BinanceExchange(sim_settings(running), session=session, enable_rate_limit=False)
        async with adapter:
            pages: list[int] = []
            candles = await adapter.fetch_klines(
                SYMBOL, "1m", series[10].open_time, series[2509].open_time, on_page=pages.append
            )
            klines_requests = [
                r for r in await running.control.requests() if r["path"] == "/api/v3/klines"
            ]
    assert [c.open_time for c in candles] == [c.open_time for c in series[10:2510]]
    assert [c.close for c in candles] == [c.close for c in series[10:2510]]
    assert pages == [1000, 2000, 2500]
    assert len(klines_requests) == 3


async def test_a_resent_open_order_refused_as_duplicate_is_returned_not_placed_again(
    exchange: BinanceExchange, sim: RunningSimulator
):
    await exchange.load_markets()
    state = await sim.control.state()
    far_below = (Decimal(state["prices"][SYMBOL]) / 2).quantize(Decimal("0.01"))
    request = OrderRequest(
        SYMBOL, Side.BUY, Decimal("0.001"), "open-limit", type=OrderType.LIMIT, price=far_below
    )
    first = await exchange.submit_order(request, lookup_first=False)
    again = await exchange.submit_order(request, lookup_first=False)  # -2010 Duplicate
    assert again.found_by_lookup
    assert again.order.exchange_order_id == first.order.exchange_order_id
    statuses = [r["status"] for r in await sim.control.requests() if r["method"] == "POST"]
    assert statuses == [200, 400]
    assert len(await sim.control.orders(api_key=sim.api_key)) == 1
