"""Binance's spot REST endpoints (`/api/v3/...`) over the simulator's state."""

from __future__ import annotations

import json
import re
import secrets
import zlib
from typing import Any

from aiohttp import web
from shared.models import INTERVALS, Candle

from exchange_simulator import errors, signing
from exchange_simulator.accounts import Account
from exchange_simulator.core import SimulatorCore
from exchange_simulator.filters import fmt
from exchange_simulator.limits import (
    ORDER_COUNT_1D_HEADER,
    ORDER_COUNT_10S_HEADER,
    ORDER_COUNTS,
    OrderCounter,
)
from exchange_simulator.matching import OrderRequest, SimOrder, trade_json
from exchange_simulator.params import Params
from exchange_simulator.replay import ms

CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
MAX_KLINES = 1000
MAX_TRADES = 1000
DAY_MS = 86_400_000


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def rest_kline(candle: Candle) -> list[object]:
    """A kline row as GET /api/v3/klines returns it."""
    return [
        ms(candle.open_time),
        fmt(candle.open),
        fmt(candle.high),
        fmt(candle.low),
        fmt(candle.close),
        fmt(candle.volume),
        ms(candle.close_time),
        fmt(candle.quote_volume or 0),
        candle.trades or 0,
        fmt(0),
        fmt(0),
        "0",
    ]


class RestApi:
    """The handlers of /api/v3; each reads `Params` and raises `BinanceError` on refusal."""

    def __init__(self, core: SimulatorCore) -> None:
        self.core = core
        self.order_counter = OrderCounter()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/ping", self.ping)
        app.router.add_get("/api/v3/time", self.time)
        app.router.add_get("/api/v3/exchangeInfo", self.exchange_info)
        app.router.add_get("/api/v3/klines", self.klines)
        app.router.add_get("/api/v3/ticker/price", self.ticker_price)
        app.router.add_get("/api/v3/avgPrice", self.avg_price)
        app.router.add_get("/api/v3/account", self.account)
        app.router.add_post("/api/v3/order", self.new_order)
        app.router.add_post("/api/v3/order/test", self.test_order)
        app.router.add_get("/api/v3/order", self.query_order)
        app.router.add_delete("/api/v3/order", self.cancel_order)
        app.router.add_get("/api/v3/openOrders", self.open_orders)
        app.router.add_get("/api/v3/myTrades", self.my_trades)

    # --- helpers -------------------------------------------------------------------------

    def _symbol(self, params: Params, required: bool = True) -> str | None:
        symbol = params.require("symbol") if required else params.get("symbol")
        if symbol is not None and symbol not in self.core.rules:
            raise errors.invalid_symbol()
        return symbol

    def _authenticate(self, request: web.Request, params: Params) -> Account:
        """Binance's SIGNED check: API key, timestamp window, then the HMAC signature."""
        api_key = request.headers.get("X-MBX-APIKEY")
        if not api_key:
            raise errors.api_key_format_invalid()
        account = self.core.accounts.get(api_key)
        if account is None:
            raise errors.invalid_api_key()
        timestamp = params.integer("timestamp")
        if timestamp is None:
            raise errors.mandatory("timestamp")
        window = params.integer("recvWindow") or signing.DEFAULT_RECV_WINDOW_MS
        # Judged by the wall-rate request clock, not the replay's time (see clock.py).
        self.core.clock.check_timestamp(timestamp, window)
        signature = params.require("signature")
        signing.verify(account.secret, params.query_string, params.body, signature)
        return account

    # --- public --------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def time(self, request: web.Request) -> web.Response:
        # The replay's time; the offset a client learns from it is remembered (clock.py).
        return json_response({"serverTime": self.core.clock.server_time_for_sync()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        wanted: list[str] = list(self.core.rules)
        if (symbol := params.get("symbol")) is not None:
            wanted = [symbol]
        elif (symbols := params.get("symbols")) is not None:
            try:
                wanted = [str(s) for s in json.loads(symbols)]
            except (ValueError, TypeError):
                raise errors.BinanceError(
                    -1100, "Illegal characters found in parameter 'symbols'"
                ) from None
        if any(s not in self.core.rules for s in wanted):
            raise errors.invalid_symbol()
        return json_response(
            {
                "timezone": "UTC",
                "serverTime": self.core.clock.now_ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": self.core.setup.weight_limit,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 100,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "DAY",
                        "intervalNum": 1,
                        "limit": 200000,
                    },
                ],
                "exchangeFilters": [],
                "symbols": [self.core.rules[s].symbol_json() for s in wanted],
            }
        )

    async def klines(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        symbol = self._symbol(params)
        assert symbol is not None
        interval = params.require("interval")
        if interval not in INTERVALS:
            raise errors.invalid_interval()
        limit = params.integer("limit") or 500
        if not 1 <= limit <= MAX_KLINES:
            raise errors.BinanceError(-1130, "Invalid data sent for a parameter.")
        if interval != self.core.interval:
            return json_response([])  # the simulator replays one interval only
        candles = self.core.replay.klines(
            symbol, params.integer("startTime"), params.integer("endTime"), limit
        )
        return json_response([rest_kline(c) for c in candles])

    async def ticker_price(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        symbol = self._symbol(params, required=False)
        symbols = [symbol] if symbol else list(self.core.rules)
        prices = [{"symbol": s, "price": fmt(self.core.replay.price(s))} for s in symbols]
        return json_response(prices[0] if symbol else prices)

    async def avg_price(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        symbol = self._symbol(params)
        assert symbol is not None
        mins = self.core.rules[symbol].avg_price_mins
        return json_response(
            {
                "mins": mins,
                "price": fmt(self.core.avg_price(symbol)),
                "closeTime": self.core.clock.now_ms(),
            }
        )

    # --- signed --------------------------------------------------------------------------

    async def account(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        account = self._authenticate(request, params)
        balances = account.balances_json(self.core.assets)
        if params.get("omitZeroBalances") == "true":
            balances = [b for b in balances if b["free"] != fmt(0) or b["locked"] != fmt(0)]
        return json_response(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {
                    "maker": "0.00100000",
                    "taker": "0.00100000",
                    "buyer": "0.00000000",
                    "seller": "0.00000000",
                },
                "canTrade": True,
                "canWithdraw": False,
                "canDeposit": False,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": self.core.clock.now_ms(),
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": zlib.crc32(account.api_key.encode()),
            }
        )

    def _order_request(self, params: Params) -> OrderRequest:
        symbol = self._symbol(params)
        assert symbol is not None
        side = params.require("side")
        if side not in ("BUY", "SELL"):
            raise errors.BinanceError(-1117, "Invalid side.")
        order_type = params.require("type")
        if order_type not in ("MARKET", "LIMIT"):
            raise errors.BinanceError(-1116, "Invalid orderType.")
        quantity = params.decimal("quantity")
        quote_qty = params.decimal("quoteOrderQty")
        price = params.decimal("price")
        time_in_force = params.get("timeInForce")
        client_id = params.get("newClientOrderId")
        if client_id is not None and not CLIENT_ORDER_ID.match(client_id):
            raise errors.BinanceError(
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; "
                "legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        if order_type == "MARKET":
            if price is not None:
                raise errors.not_required("price")
            if quantity is None and quote_qty is None:
                raise errors.either_mandatory("quantity", "quoteOrderQty")
            if quantity is not None and quote_qty is not None:
                raise errors.not_required("quoteOrderQty")
        else:
            if time_in_force is None:
                raise errors.mandatory("timeInForce")
            if time_in_force not in ("GTC", "IOC", "FOK"):
                raise errors.BinanceError(-1115, "Invalid timeInForce.")
            if quantity is None:
                raise errors.mandatory("quantity")
            if price is None:
                raise errors.mandatory("price")
            if quote_qty is not None:
                raise errors.not_required("quoteOrderQty")
        return OrderRequest(
            symbol, side, order_type, quantity, quote_qty, price, time_in_force, client_id
        )

    async def new_order(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        account = self._authenticate(request, params)
        order_request = self._order_request(params)
        # Order-rate limits count real time, whatever pace the replay keeps.
        ten_seconds, day = self.order_counter.count(account.api_key, self.core.clock.wall_ms())
        request[ORDER_COUNTS] = {
            ORDER_COUNT_10S_HEADER: str(ten_seconds),
            ORDER_COUNT_1D_HEADER: str(day),
        }
        async with self.core.lock:
            order = self.core.matcher.place(account, order_request)
        response_type = params.get("newOrderRespType") or "FULL"
        if response_type == "ACK":
            return json_response(order.ack_json())
        if response_type == "RESULT":
            return json_response(order.result_json())
        return json_response(order.full_json())

    async def test_order(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        self._authenticate(request, params)
        self._order_request(params)
        return json_response({})

    def _find(self, params: Params, account: Account, missing: errors.BinanceError) -> SimOrder:
        symbol = self._symbol(params)
        assert symbol is not None
        order_id = params.integer("orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and client_id is None:
            raise errors.either_mandatory("orderId", "origClientOrderId")
        order = self.core.matcher.find(account.api_key, symbol, order_id, client_id)
        if order is None:
            raise missing
        return order

    async def query_order(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        account = self._authenticate(request, params)
        order = self._find(params, account, errors.order_does_not_exist())
        return json_response(order.query_json())

    async def cancel_order(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        account = self._authenticate(request, params)
        async with self.core.lock:
            order = self._find(params, account, errors.unknown_order())
            if not order.is_open:
                raise errors.unknown_order()
            self.core.matcher.cancel(account, order)
        new_client_id = params.get("newClientOrderId") or secrets.token_urlsafe(16)[:22]
        result = order.result_json()
        del result["workingTime"]
        return json_response(
            {
                "symbol": order.symbol,
                "origClientOrderId": order.client_order_id,
                "orderId": order.order_id,
                "orderListId": -1,
                "clientOrderId": new_client_id,
                **{k: v for k, v in result.items() if k not in _ID_KEYS},
                "transactTime": self.core.clock.now_ms(),
            }
        )

    async def open_orders(self, request: web.Request) -> web.Response:
        params = await Params.read(request)
        account = self._authenticate(request, params)
        symbol = self._symbol(params, required=False)
        orders = self.core.matcher.open_orders(account.api_key, symbol)
        return json_response([o.query_json() for o in orders])

    async def my_trades(self, request: web.Request) -> web.Response:
        """GET /api/v3/myTrades: the account's trades on a symbol, oldest first.

        Binance's combinations: symbol alone (the most recent `limit`), + orderId, + fromId
        (ids >= fromId), + startTime and/or endTime (at most 24 hours apart; from startTime
        on, else the most recent up to endTime), + orderId + fromId. Others get -1128.
        """
        params = await Params.read(request)
        account = self._authenticate(request, params)
        symbol = self._symbol(params)
        assert symbol is not None
        order_id = params.integer("orderId")
        from_id = params.integer("fromId")
        start, end = params.integer("startTime"), params.integer("endTime")
        limit = params.integer("limit") or 500
        if not 1 <= limit <= MAX_TRADES:
            raise errors.BinanceError(-1130, "Invalid data sent for a parameter.")
        timed = start is not None or end is not None
        if timed and (order_id is not None or from_id is not None):
            raise errors.BinanceError(-1128, "Combination of optional parameters invalid.")
        if start is not None and end is not None:
            if end < start:
                raise errors.BinanceError(-1128, "Combination of optional parameters invalid.")
            if end - start > DAY_MS:
                raise errors.BinanceError(
                    -1127, "More than 24 hours between startTime and endTime."
                )
        trades = [
            (order, fill)
            for order, fill in self.core.matcher.trades(account.api_key, symbol)
            if (order_id is None or order.order_id == order_id)
            and (from_id is None or fill.trade_id >= from_id)
            and (start is None or fill.time_ms >= start)
            and (end is None or fill.time_ms <= end)
        ]
        oldest_first = from_id is not None or start is not None
        chosen = trades[:limit] if oldest_first else trades[-limit:]
        return json_response([trade_json(order, fill) for order, fill in chosen])


_ID_KEYS = frozenset({"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"})
