"""GET /api/v3/myTrades: the account's fills as Binance lists them, with its filters."""

from __future__ import annotations

from decimal import Decimal

FIELDS = [
    "symbol",
    "id",
    "orderId",
    "orderListId",
    "price",
    "qty",
    "quoteQty",
    "commission",
    "commissionAsset",
    "time",
    "isBuyer",
    "isMaker",
    "isBestMatch",
]


async def place(signed, order_params, **extra) -> dict:
    status, body, _ = await signed.call("POST", "/api/v3/order", order_params(**extra))
    assert status == 200, body
    return body


async def my_trades(signed, **params) -> tuple[int, object]:
    status, body, _ = await signed.call("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", **params})
    return status, body


async def test_trades_repeat_the_fills_of_the_full_responses(sim, signed, order_params) -> None:
    buy = await place(signed, order_params, newClientOrderId="t-buy")
    sell = await place(signed, order_params, side="SELL", newClientOrderId="t-sell")
    status, trades = await my_trades(signed)
    assert status == 200
    assert [list(t) for t in trades] == [FIELDS, FIELDS]
    for trade, order, is_buyer in ((trades[0], buy, True), (trades[1], sell, False)):
        [fill] = order["fills"]
        assert trade["id"] == fill["tradeId"] and trade["orderId"] == order["orderId"]
        assert (trade["price"], trade["qty"]) == (fill["price"], fill["qty"])
        assert (trade["commission"], trade["commissionAsset"]) == (
            fill["commission"],
            fill["commissionAsset"],
        )
        assert Decimal(trade["quoteQty"]) == Decimal(fill["price"]) * Decimal(fill["qty"])
        assert trade["time"] == order["transactTime"]
        assert (trade["isBuyer"], trade["isMaker"], trade["orderListId"]) == (is_buyer, False, -1)


async def test_a_resting_limit_order_fills_as_maker(sim, signed, order_params) -> None:
    price = Decimal((await sim.control.state())["prices"]["BTCUSDT"])
    below = (price * Decimal("0.99")).quantize(Decimal("0.01"))
    order = await place(
        signed, order_params, type="LIMIT", timeInForce="GTC", price=str(below), quantity="0.01"
    )
    assert order["status"] == "NEW" and order["fills"] == []
    await sim.control.set_price("BTCUSDT", below)
    status, trades = await my_trades(signed, orderId=order["orderId"])
    assert status == 200 and len(trades) == 1
    assert trades[0]["isMaker"] is True and Decimal(trades[0]["price"]) == below


async def test_order_id_from_id_limit_and_time_select_trades(sim, signed, order_params) -> None:
    orders = [await place(signed, order_params) for _ in range(5)]
    ids = [o["fills"][0]["tradeId"] for o in orders]
    assert [t["id"] for t in (await my_trades(signed))[1]] == ids
    assert [t["id"] for t in (await my_trades(signed, limit=2))[1]] == ids[-2:]  # most recent
    assert [t["id"] for t in (await my_trades(signed, fromId=ids[1], limit=2))[1]] == ids[1:3]
    by_order = (await my_trades(signed, orderId=orders[3]["orderId"]))[1]
    assert [t["id"] for t in by_order] == [ids[3]]
    at = orders[0]["transactTime"]  # manual replay: every order at the same market time
    assert len((await my_trades(signed, startTime=at, endTime=at))[1]) == 5
    assert (await my_trades(signed, startTime=at + 1))[1] == []
    other_key = "someone-else"
    await sim.control.open_account(other_key, "their-secret", {"USDT": "100"})
    status, theirs, _ = await signed.call(
        "GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"}, key=other_key, secret="their-secret"
    )
    assert (status, theirs) == (200, [])


async def test_bad_combinations_are_refused_as_binance_does(sim, signed) -> None:
    day = 86_400_000
    status, body = await my_trades(signed, startTime=0, endTime=day + 1)
    assert (status, body["code"]) == (400, -1127)
    status, body = await my_trades(signed, fromId=1, startTime=0)
    assert (status, body["code"]) == (400, -1128)
    status, body = await my_trades(signed, limit=1001)
    assert (status, body["code"]) == (400, -1130)
    status, body, _ = await signed.call("GET", "/api/v3/myTrades", {})
    assert (status, body["code"]) == (400, -1102)
