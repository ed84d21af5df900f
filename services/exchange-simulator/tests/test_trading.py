"""Trading through ccxt: market fills with the fee, limit fills when the replay crosses."""

from __future__ import annotations

from decimal import Decimal

import ccxt.async_support as ccxt
import pytest
from exchange_simulator.testing import synthetic_candles

FEE = Decimal("0.001")


async def test_market_buy_fills_at_current_price_and_charges_the_fee(sim, exchange) -> None:
    price = Decimal((await sim.control.state())["prices"]["BTCUSDT"])
    order = await exchange.create_order(
        "BTC/USDT", "market", "buy", 0.01, None, {"clientOrderId": "mkt-1"}
    )
    assert order["status"] == "closed" and order["clientOrderId"] == "mkt-1"
    balances = await sim.control.balances(sim.api_key)
    cost = price * Decimal("0.01")
    assert balances["BTC"]["free"] == Decimal("0.01")
    assert balances["USDT"]["free"] == Decimal(10_000) - cost - cost * FEE
    # selling it back returns the proceeds minus the fee
    await exchange.create_order(
        "BTC/USDT", "market", "sell", 0.01, None, {"clientOrderId": "mkt-2"}
    )
    balances = await sim.control.balances(sim.api_key)
    assert balances["BTC"]["free"] == 0
    assert balances["USDT"]["free"] == Decimal(10_000) - 2 * cost * FEE


async def test_quote_order_qty_market_buy_spends_about_that_much(sim, exchange) -> None:
    price = Decimal((await sim.control.state())["prices"]["BTCUSDT"])
    # ccxt turns a market buy with a price into quoteOrderQty = amount × price
    order = await exchange.create_order(
        "BTC/USDT", "market", "buy", 100, 1, {"clientOrderId": "quote-1"}
    )
    bought = Decimal(str(order["filled"]))
    assert bought == (Decimal(100) / price).quantize(Decimal("0.00001"), rounding="ROUND_DOWN")
    assert Decimal(100) - price * Decimal("0.00001") < bought * price <= Decimal(100)


async def test_limit_buy_rests_then_fills_when_a_replayed_candle_crosses(sim, exchange) -> None:
    candles = synthetic_candles("BTCUSDT", 200)
    future = candles[50:]
    # a price below the current one that a later candle's low reaches
    target = next(c for c in future[1:] if c.low < future[0].open).low
    order = await exchange.create_order(
        "BTC/USDT", "limit", "buy", 0.01, float(target), {"clientOrderId": "lim-1"}
    )
    assert order["status"] == "open"
    balances = await sim.control.balances(sim.api_key)
    assert balances["USDT"]["locked"] == target * Decimal("0.01") * (1 + FEE)
    for _ in range(len(future)):
        await sim.control.advance(1)
        if (await exchange.fetch_order(order["id"], "BTC/USDT"))["status"] == "closed":
            break
    fetched = await exchange.fetch_order(None, "BTC/USDT", {"origClientOrderId": "lim-1"})
    assert fetched["status"] == "closed"
    assert Decimal(str(fetched["average"])) == target
    balances = await sim.control.balances(sim.api_key)
    assert balances["USDT"]["locked"] == 0
    assert balances["BTC"]["free"] == Decimal("0.01")


async def test_set_price_fills_a_resting_sell(sim, exchange) -> None:
    await exchange.create_order("BTC/USDT", "market", "buy", 0.01, None, {"clientOrderId": "b"})
    price = Decimal((await sim.control.state())["prices"]["BTCUSDT"])
    ask = (price * Decimal("1.5")).quantize(Decimal("0.01"))
    sell = await exchange.create_order(
        "BTC/USDT", "limit", "sell", 0.01, float(ask), {"clientOrderId": "s"}
    )
    assert (await exchange.fetch_open_orders("BTC/USDT"))[0]["id"] == sell["id"]
    await sim.control.set_price("BTCUSDT", ask)
    assert (await exchange.fetch_order(sell["id"], "BTC/USDT"))["status"] == "closed"
    assert await exchange.fetch_open_orders("BTC/USDT") == []


async def test_ccxt_reports_insufficient_funds_and_unknown_orders(exchange) -> None:
    await exchange.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        await exchange.create_order("BTC/USDT", "market", "buy", 5, None, {"clientOrderId": "x"})
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.fetch_order("424242", "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.cancel_order("424242", "BTC/USDT")
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):
        await exchange.create_order(
            "BTC/USDT", "limit", "buy", 0.0001, 20000, {"clientOrderId": "y"}
        )


async def test_ccxt_reads_markets_klines_and_balances(sim, exchange) -> None:
    markets = await exchange.load_markets()
    market = markets["BTC/USDT"]
    assert market["precision"]["amount"] == 0.00001 and market["precision"]["price"] == 0.01
    assert market["limits"]["cost"]["min"] == 5
    ohlcv = await exchange.fetch_ohlcv("BTC/USDT", "1m", limit=1000)
    assert len(ohlcv) == 51
    recorded = synthetic_candles("BTCUSDT", 200)[49]
    assert ohlcv[49][4] == float(recorded.close)
    assert (await exchange.fetch_balance())["USDT"]["total"] == 10_000
