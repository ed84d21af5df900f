"""The REST protocol on the wire: formats, filters, errors and headers, as Binance sends them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from exchange_simulator.testing import running_simulator, synthetic_candles

KLINE_FIELDS = 12


async def test_exchange_info_lists_the_four_filters(sim, http) -> None:
    async with http.get(f"{sim.base_url}/api/v3/exchangeInfo?symbol=BTCUSDT") as r:
        info = await r.json()
        weight = r.headers["X-MBX-USED-WEIGHT-1M"]
    (symbol,) = info["symbols"]
    names = [f["filterType"] for f in symbol["filters"]]
    assert names == ["PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "NOTIONAL"]
    assert symbol["baseAsset"] == "BTC" and symbol["quoteAsset"] == "USDT"
    assert int(weight) >= 20


async def test_bad_symbol_gets_1121(sim, http) -> None:
    async with http.get(f"{sim.base_url}/api/v3/klines?symbol=NOPEUSDT&interval=1m") as r:
        assert (r.status, (await r.json())["code"]) == (400, -1121)


async def test_rest_klines_end_at_the_open_candle_and_grow_as_the_replay_moves(sim, http) -> None:
    url = f"{sim.base_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000"
    async with http.get(url) as r:
        before = await r.json()
    await sim.control.advance(3)
    async with http.get(url) as r:
        after = await r.json()
    assert len(before) == 51  # 50 closed + the open one, as Binance includes it
    assert len(after) == 54
    assert all(len(row) == KLINE_FIELDS for row in after)
    assert after[0][6] == after[0][0] + 60_000 - 1
    recorded = synthetic_candles("BTCUSDT", 200)[50]
    # the open candle showed only its open; closed, it shows what was recorded
    assert before[50][1:5] == [f"{recorded.open:.8f}"] * 4
    assert after[50][1:5] == [
        f"{v:.8f}" for v in (recorded.open, recorded.high, recorded.low, recorded.close)
    ]
    times = [row[0] for row in after]
    assert times == sorted(set(times))


async def test_klines_start_time_and_limit_page_forward(sim, http) -> None:
    base = f"{sim.base_url}/api/v3/klines?symbol=BTCUSDT&interval=1m"
    async with http.get(f"{base}&limit=5") as r:
        last_five = await r.json()
    start = last_five[0][0]
    async with http.get(f"{base}&startTime={start}&limit=2") as r:
        page = await r.json()
    async with http.get(f"{base}&endTime={start}&limit=3") as r:
        ending = await r.json()
    assert [row[0] for row in page] == [start, start + 60_000]
    assert [row[0] for row in ending] == [start - 120_000, start - 60_000, start]


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        (
            {"type": "LIMIT", "timeInForce": "GTC", "price": "20000.001", "quantity": "0.01"},
            "PRICE_FILTER",
        ),
        (
            {"type": "LIMIT", "timeInForce": "GTC", "price": "20000", "quantity": "0.000015"},
            "LOT_SIZE",
        ),
        ({"quantity": "150"}, "MARKET_LOT_SIZE"),
        ({"quantity": "0.0001"}, "NOTIONAL"),
        ({"type": "LIMIT", "timeInForce": "GTC", "price": "100", "quantity": "0.01"}, "NOTIONAL"),
    ],
)
async def test_filters_rejected_raw_with_1013_and_the_filter_name(
    signed, order_params, extra, name
) -> None:
    status, body, _ = await signed.call("POST", "/api/v3/order", order_params(**extra))
    assert (status, body) == (400, {"code": -1013, "msg": f"Filter failure: {name}"})


async def test_insufficient_balance_has_binances_exact_message(signed, order_params) -> None:
    status, body, _ = await signed.call("POST", "/api/v3/order", order_params(quantity="1"))
    assert status == 400
    assert body == {
        "code": -2010,
        "msg": "Account has insufficient balance for requested action.",
    }


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        ({"quantity": "1e-3"}, -1100, "'quantity'"),
        ({"quantity": None}, -1102, "'quantity' or 'quoteOrderQty'"),
        ({"side": None}, -1102, "'side'"),
        ({"type": "LIMIT", "price": "20000"}, -1102, "'timeInForce'"),
        ({"price": "20000"}, -1106, "'price'"),
        ({"side": "HOLD"}, -1117, "side"),
    ],
)
async def test_bad_order_parameters_are_named(signed, order_params, params, code, fragment):
    values = {k: v for k, v in order_params(**params).items() if v is not None}
    status, body, _ = await signed.call("POST", "/api/v3/order", values)
    assert status == 400
    assert body["code"] == code
    assert fragment in body["msg"]


async def test_order_full_response_and_headers(signed, order_params) -> None:
    status, body, headers = await signed.call(
        "POST", "/api/v3/order", order_params(newClientOrderId="sig-1")
    )
    assert status == 200
    assert {
        "symbol",
        "orderId",
        "orderListId",
        "clientOrderId",
        "transactTime",
        "price",
        "origQty",
        "executedQty",
        "origQuoteOrderQty",
        "cummulativeQuoteQty",
        "status",
        "timeInForce",
        "type",
        "side",
        "workingTime",
        "selfTradePreventionMode",
        "fills",
    } <= set(body)
    assert body["clientOrderId"] == "sig-1" and body["status"] == "FILLED"
    (fill,) = body["fills"]
    assert Decimal(fill["commission"]) == Decimal(fill["price"]) * Decimal("0.01") / 1000
    assert fill["commissionAsset"] == "USDT"
    assert headers["X-MBX-ORDER-COUNT-10S"] == "1"
    assert headers["X-MBX-ORDER-COUNT-1D"] == "1"
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 1


async def test_get_order_fields_and_unknown_orders(signed, order_params) -> None:
    _, placed, _ = await signed.call("POST", "/api/v3/order", order_params())
    status, got, _ = await signed.call(
        "GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]}
    )
    assert status == 200
    assert {"stopPrice", "icebergQty", "time", "updateTime", "isWorking"} <= set(got)
    assert got["executedQty"] == placed["executedQty"]
    status, body, _ = await signed.call(
        "GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": 999999}
    )
    assert (status, body) == (400, {"code": -2013, "msg": "Order does not exist."})
    status, body, _ = await signed.call(
        "DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]}
    )
    assert (status, body) == (400, {"code": -2011, "msg": "Unknown order sent."})


async def test_cancel_answers_with_orig_and_new_client_order_id(signed, order_params) -> None:
    _, placed, _ = await signed.call(
        "POST",
        "/api/v3/order",
        order_params(type="LIMIT", timeInForce="GTC", price="20000", newClientOrderId="rest-1"),
    )
    assert placed["status"] == "NEW"
    status, body, _ = await signed.call(
        "DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "rest-1"}
    )
    assert status == 200
    assert body["origClientOrderId"] == "rest-1"
    assert body["clientOrderId"] != "rest-1"
    assert body["status"] == "CANCELED"
    _, open_orders, _ = await signed.call("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
    assert open_orders == []


async def test_duplicate_client_order_id_refused_only_while_the_first_is_open(
    sim, signed, order_params
) -> None:
    resting = order_params(type="LIMIT", timeInForce="GTC", price="20000", newClientOrderId="dup-1")
    assert (await signed.call("POST", "/api/v3/order", resting))[0] == 200
    status, body, _ = await signed.call("POST", "/api/v3/order", resting)
    assert (status, body) == (400, {"code": -2010, "msg": "Duplicate order sent."})
    # A filled MARKET order's id can be used again: Binance would fill it twice.
    market = order_params(newClientOrderId="dup-2")
    assert (await signed.call("POST", "/api/v3/order", market))[1]["status"] == "FILLED"
    assert (await signed.call("POST", "/api/v3/order", market))[1]["status"] == "FILLED"
    orders = await sim.control.orders(symbol="BTCUSDT")
    assert [o["clientOrderId"] for o in orders].count("dup-2") == 2
    _, latest, _ = await signed.call(
        "GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "dup-2"}
    )
    assert latest["orderId"] == max(o["orderId"] for o in orders)


async def test_weight_limit_answers_429_with_retry_after(http) -> None:
    async with running_simulator(synthetic_candles("BTCUSDT", 10), weight_limit=40) as sim:
        statuses = []
        for _ in range(3):
            async with http.get(f"{sim.base_url}/api/v3/exchangeInfo") as r:
                statuses.append(r.status)
                retry_after = r.headers.get("Retry-After")
                body = await r.json()
    assert statuses == [200, 200, 429]
    assert body["code"] == -1003
    assert retry_after is not None and 0 < int(retry_after) <= 60


async def test_marketable_limit_fills_at_the_better_current_price(sim, signed, order_params):
    price = Decimal((await sim.control.state())["prices"]["BTCUSDT"])
    limit = (price * Decimal("1.01")).quantize(Decimal("0.01"))
    _, body, _ = await signed.call(
        "POST", "/api/v3/order", order_params(type="LIMIT", timeInForce="GTC", price=str(limit))
    )
    assert body["status"] == "FILLED"
    assert Decimal(body["fills"][0]["price"]) == price
    assert (await sim.control.balances(sim.api_key))["USDT"]["locked"] == 0


async def test_ioc_limit_that_cannot_fill_expires_and_unlocks(sim, signed, order_params) -> None:
    _, body, _ = await signed.call(
        "POST", "/api/v3/order", order_params(type="LIMIT", timeInForce="IOC", price="20000")
    )
    assert (body["status"], body["executedQty"]) == ("EXPIRED", "0.00000000")
    usdt = (await sim.control.balances(sim.api_key))["USDT"]
    assert (usdt["free"], usdt["locked"]) == (Decimal(10_000), 0)


async def test_market_sell_without_the_base_asset_is_refused(signed, order_params) -> None:
    status, body, _ = await signed.call("POST", "/api/v3/order", order_params(side="SELL"))
    assert (status, body["code"]) == (400, -2010)
    assert body["msg"] == "Account has insufficient balance for requested action."
