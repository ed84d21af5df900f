"""The simulator's messages have the shape of Binance's own documentation examples.

Each example below is copied from Binance's spot API documentation; the simulator's message
must carry the same fields with the same JSON types (strings for decimals, ints for ids and
times, booleans for flags).
"""

from __future__ import annotations

import json

DOC_KLINE_EVENT = {
    "e": "kline", "E": 1672515782136, "s": "BNBBTC",
    "k": {
        "t": 1672515780000, "T": 1672515839999, "s": "BNBBTC", "i": "1m", "f": 100, "L": 200,
        "o": "0.0010", "c": "0.0020", "h": "0.0025", "l": "0.0015", "v": "1000", "n": 100,
        "x": False, "q": "1.0000", "V": "500", "Q": "0.500", "B": "123456",
    },
}  # fmt: skip
DOC_REST_KLINE = [
    1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", "148976.11427815",
    1499644799999, "2434.19055334", 308, "1756.87402397", "28.46694368", "0",
]  # fmt: skip
DOC_ORDER_FULL = {
    "symbol": "BTCUSDT", "orderId": 28, "orderListId": -1,
    "clientOrderId": "6gCrw2kRUAF9CvJDGP16IP", "transactTime": 1507725176595,
    "price": "0.00000000", "origQty": "10.00000000", "executedQty": "10.00000000",
    "origQuoteOrderQty": "0.000000", "cummulativeQuoteQty": "10.00000000", "status": "FILLED",
    "timeInForce": "GTC", "type": "MARKET", "side": "SELL", "workingTime": 1507725176595,
    "selfTradePreventionMode": "NONE",
    "fills": [
        {"price": "4000.00000000", "qty": "1.00000000", "commission": "4.00000000",
         "commissionAsset": "USDT", "tradeId": 56},
    ],
}  # fmt: skip
DOC_ORDER_QUERY = {
    "symbol": "LTCBTC", "orderId": 1, "orderListId": -1, "clientOrderId": "myOrder1",
    "price": "0.1", "origQty": "1.0", "executedQty": "0.0", "cummulativeQuoteQty": "0.0",
    "status": "NEW", "timeInForce": "GTC", "type": "LIMIT", "side": "BUY", "stopPrice": "0.0",
    "icebergQty": "0.0", "time": 1499827319559, "updateTime": 1499827319559, "isWorking": True,
    "workingTime": 1499827319559, "origQuoteOrderQty": "0.000000",
    "selfTradePreventionMode": "NONE",
}  # fmt: skip
DOC_ORDER_CANCEL = {
    "symbol": "LTCBTC", "origClientOrderId": "myOrder1", "orderId": 4, "orderListId": -1,
    "clientOrderId": "cancelMyOrder1", "transactTime": 1684804350068, "price": "2.00000000",
    "origQty": "1.00000000", "executedQty": "0.00000000", "origQuoteOrderQty": "0.000000",
    "cummulativeQuoteQty": "0.00000000", "status": "CANCELED", "timeInForce": "GTC",
    "type": "LIMIT", "side": "BUY", "selfTradePreventionMode": "NONE",
}  # fmt: skip
DOC_ERROR = {"code": -1121, "msg": "Invalid symbol."}


def shape(value: object) -> object:
    """Field names and JSON types, recursively (list items by position)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


async def test_kline_event_has_binances_shape(sim, http) -> None:
    async with http.ws_connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws:
        await sim.control.step(1)
        event = json.loads((await ws.receive(timeout=10)).data)
    assert shape(event) == shape(DOC_KLINE_EVENT)


async def test_rest_kline_has_binances_shape(sim, http) -> None:
    url = f"{sim.base_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1"
    async with http.get(url) as response:
        (row,) = await response.json()
    assert shape(row) == shape(DOC_REST_KLINE)


async def test_order_answers_have_binances_shape(signed, order_params) -> None:
    _, full, _ = await signed.call("POST", "/api/v3/order", order_params())
    assert shape(full) == shape(DOC_ORDER_FULL)
    _, resting, _ = await signed.call(
        "POST", "/api/v3/order", order_params(type="LIMIT", timeInForce="GTC", price="20000")
    )
    ids = {"symbol": "BTCUSDT", "orderId": resting["orderId"]}
    _, queried, _ = await signed.call("GET", "/api/v3/order", ids)
    assert shape(queried) == shape(DOC_ORDER_QUERY)
    _, cancelled, _ = await signed.call("DELETE", "/api/v3/order", ids)
    assert shape(cancelled) == shape(DOC_ORDER_CANCEL)


async def test_error_body_has_binances_shape(sim, http) -> None:
    async with http.get(f"{sim.base_url}/api/v3/avgPrice?symbol=NOPE") as response:
        assert await response.json() == DOC_ERROR
