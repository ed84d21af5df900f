"""Request weight and order counts, reported in Binance's headers and enforced like Binance.

Weights per endpoint are Binance's (spot API docs). Weight is counted per minute of the
wall clock (plus any skew set through /_sim/clock), not of the replay's time: the limits are
about how fast clients really send (Binance resets it on the minute); over the limit,
requests get HTTP 429 -1003 with `Retry-After` set to the seconds left in the minute.
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from exchange_simulator import errors

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
ORDER_COUNT_10S_HEADER = "X-MBX-ORDER-COUNT-10S"
ORDER_COUNT_1D_HEADER = "X-MBX-ORDER-COUNT-1D"
ORDER_COUNTS = web.RequestKey("order_counts", dict[str, str])
"""Where an order handler leaves the order-count headers for the middleware."""

_WEIGHTS = {
    ("GET", "/api/v3/ping"): 1,
    ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/klines"): 2,
    ("GET", "/api/v3/avgPrice"): 2,
    ("GET", "/api/v3/account"): 20,
    ("POST", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/test"): 1,
    ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1,
}


def request_weight(method: str, path: str, has_symbol: bool, has_order_id: bool = False) -> int:
    """Binance's weight of one request."""
    if path == "/api/v3/openOrders":
        return 6 if has_symbol else 80
    if path == "/api/v3/myTrades":
        return 5 if has_order_id else 20
    if path == "/api/v3/ticker/price":
        return 2 if has_symbol else 4
    return _WEIGHTS.get((method, path), 1)


class WeightMeter:
    """Weight used in the current minute of server time."""

    def __init__(self, limit: int = 6000) -> None:
        self.limit = limit
        self._minute = -1
        self.used = 0

    def spend(self, weight: int, now_ms: int) -> int:
        """Add a request's weight; raise 429 -1003 (with the wait) when over the limit."""
        minute = now_ms // 60_000
        if minute != self._minute:
            self._minute, self.used = minute, 0
        self.used += weight
        if self.limit and self.used > self.limit:
            error = errors.too_much_weight(self.limit)
            error.retry_after = 60 - (now_ms // 1000) % 60
            raise error
        return self.used


class OrderCounter:
    """Orders placed per API key in the current 10 seconds and the current day."""

    def __init__(self) -> None:
        self._ten_seconds: Counter[tuple[str, int]] = Counter()
        self._day: Counter[tuple[str, int]] = Counter()

    def count(self, api_key: str, now_ms: int) -> tuple[int, int]:
        ten = (api_key, now_ms // 10_000)
        day = (api_key, now_ms // 86_400_000)
        self._ten_seconds[ten] += 1
        self._day[day] += 1
        return self._ten_seconds[ten], self._day[day]
