"""The control API under `/_sim/` (JSON), for tests and demos; not part of Binance's protocol.

    GET    /_sim/state                 clock, replay position, prices, connection count
    POST   /_sim/advance               {"candles": N} or {"stages": N}  → {"moved", "moved_at_ms",
                                        "replay"} (moved_at_ms: this machine's wall clock,
                                        in ms since the epoch, as the move began: when the
                                        candle closed, for latency measurements)
    POST   /_sim/price                 {"symbol", "price"}               → {"symbol", "price"}
    POST   /_sim/clock                 {"offset_ms"} or {"server_time_ms"} → server time, offset
                                        (serverTime follows the replay; offset_ms skews it and
                                        the clocks request timestamps are judged by,
                                        server_time_ms shifts the market time only: clock.py)
    GET    /_sim/faults                → {"faults": [...]}
    POST   /_sim/faults                {"kind", "path"?, "method"?, "times"?, "every"?,
                                        "retry_after"?, "delay"?}    → the fault with its "id"
    DELETE /_sim/faults                → {"cleared": N}
    POST   /_sim/websockets/close      → {"closed": N}
    POST   /_sim/websockets/wait       {"subscribers": N, "timeout": s} → {"subscribers": n}
                                        once N connections subscribe (408 on timeout)
    GET    /_sim/orders?api_key=&symbol=  → {"orders": [GET-order JSON + "apiKey"]}
    GET    /_sim/accounts?api_key=     → {"accounts": {key: {asset: {"free", "locked"}}}}
    POST   /_sim/accounts              {"api_key", "api_secret", "balances": {asset: "amount"}}
    GET    /_sim/requests              → {"requests": [{"method","path","status","fault",
                                        "client_order_id"}]} (the last 10,000 /api requests)

A bad body is answered 400 with {"error": "..."} naming what was wrong.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from exchange_simulator.core import SimulatorCore
from exchange_simulator.faults import FaultBook
from exchange_simulator.filters import fmt


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise _bad("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def _decimal(value: Any, name: str) -> Decimal:
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise _bad(f"{name} must be a decimal number, got {value!r}") from None
    if not result.is_finite():
        raise _bad(f"{name} must be a finite number")
    return result


class ControlApi:
    """Handlers of /_sim/*."""

    def __init__(
        self, core: SimulatorCore, faults: FaultBook, requests: deque[dict[str, Any]]
    ) -> None:
        self.core = core
        self.faults = faults
        self.requests = requests

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/_sim/state", self.state)
        app.router.add_post("/_sim/advance", self.advance)
        app.router.add_post("/_sim/price", self.price)
        app.router.add_post("/_sim/clock", self.clock)
        app.router.add_get("/_sim/faults", self.list_faults)
        app.router.add_post("/_sim/faults", self.add_fault)
        app.router.add_delete("/_sim/faults", self.clear_faults)
        app.router.add_post("/_sim/websockets/close", self.close_websockets)
        app.router.add_post("/_sim/websockets/wait", self.wait_for_subscribers)
        app.router.add_get("/_sim/orders", self.orders)
        app.router.add_get("/_sim/accounts", self.accounts)
        app.router.add_post("/_sim/accounts", self.open_account)
        app.router.add_get("/_sim/requests", self.list_requests)

    def _replay_state(self) -> dict[str, Any]:
        replay = self.core.replay
        return {
            "interval": replay.interval,
            "position": replay.position,
            "stage": replay.stage,
            "length": len(replay.timeline),
            "finished": replay.finished,
            "current_open_time": replay.current_open_ms,
            "symbols": replay.symbols,
        }

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "server_time_ms": self.core.clock.now_ms(),
                "replay_time_ms": self.core.clock.replay_ms(),
                "clock_offset_ms": self.core.clock.skew_ms,
                "market_shift_ms": self.core.clock.shift_ms,
                "replay": self._replay_state(),
                "prices": {s: fmt(self.core.replay.price(s)) for s in self.core.replay.symbols},
                "websocket_connections": len(self.core.hub.connections),
            }
        )

    async def advance(self, request: web.Request) -> web.Response:
        body = await _body(request)
        by_stage = "stages" in body
        count = body["stages"] if by_stage else body.get("candles", 1)
        if not isinstance(count, int) or count < 1:
            raise _bad("candles/stages must be a whole number of at least 1")
        moved_at_ms = time.time() * 1000
        moved = await (self.core.step(count) if by_stage else self.core.advance(count))
        return web.json_response(
            {"moved": moved, "moved_at_ms": moved_at_ms, "replay": self._replay_state()}
        )

    async def price(self, request: web.Request) -> web.Response:
        body = await _body(request)
        symbol = body.get("symbol")
        if symbol not in self.core.rules:
            raise _bad(f"unknown symbol {symbol!r}: expected one of {list(self.core.rules)}")
        price = _decimal(body.get("price"), "price")
        if price <= 0:
            raise _bad("price must be positive")
        await self.core.set_price(symbol, price)
        return web.json_response({"symbol": symbol, "price": fmt(price)})

    async def clock(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body.get("server_time_ms"), int):
            self.core.clock.set_time(body["server_time_ms"])
        elif isinstance(body.get("offset_ms"), int):
            self.core.clock.set_offset(body["offset_ms"])
        else:
            raise _bad(
                'send {"offset_ms": int} (ms ahead of the replay\'s time; 0 follows it) '
                'or {"server_time_ms": int}'
            )
        return web.json_response(
            {
                "server_time_ms": self.core.clock.now_ms(),
                "offset_ms": self.core.clock.skew_ms,
                "market_shift_ms": self.core.clock.shift_ms,
            }
        )

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.json() for f in self.faults.faults]})

    async def add_fault(self, request: web.Request) -> web.Response:
        try:
            fault = self.faults.add(await _body(request))
        except ValueError as error:
            raise _bad(str(error)) from None
        return web.json_response(fault.json())

    async def clear_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.faults.clear()})

    async def close_websockets(self, request: web.Request) -> web.Response:
        return web.json_response({"closed": await self.core.hub.close_all()})

    async def wait_for_subscribers(self, request: web.Request) -> web.Response:
        body = await _body(request)
        count, timeout = body.get("subscribers", 1), body.get("timeout", 10)
        if not isinstance(count, int) or count < 1:
            raise _bad("subscribers must be a whole number of at least 1")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise _bad("timeout must be a positive number of seconds")
        try:
            async with asyncio.timeout(timeout):
                await self.core.hub.wait_for_subscriber(count)
        except TimeoutError:
            return web.json_response(
                {"error": f"fewer than {count} subscribed connections after {timeout} s"},
                status=408,
            )
        return web.json_response({"subscribers": self.core.hub.subscriber_count})

    async def orders(self, request: web.Request) -> web.Response:
        api_key = request.query.get("api_key")
        symbol = request.query.get("symbol")
        orders = [
            {**o.query_json(), "apiKey": o.api_key}
            for o in self.core.matcher.orders
            if (api_key is None or o.api_key == api_key) and (symbol is None or o.symbol == symbol)
        ]
        return web.json_response({"orders": orders})

    async def accounts(self, request: web.Request) -> web.Response:
        api_key = request.query.get("api_key")
        result = {
            key: {
                asset: {"free": fmt(b.free), "locked": fmt(b.locked)}
                for asset, b in account.balances.items()
            }
            for key, account in self.core.accounts.items()
            if api_key is None or key == api_key
        }
        return web.json_response({"accounts": result})

    async def open_account(self, request: web.Request) -> web.Response:
        body = await _body(request)
        key, secret = body.get("api_key"), body.get("api_secret")
        if not isinstance(key, str) or not key or not isinstance(secret, str) or not secret:
            raise _bad("api_key and api_secret must be non-empty strings")
        balances = body.get("balances", self.core.setup.balances)
        if not isinstance(balances, dict):
            raise _bad("balances must map assets to amounts")
        amounts = {a: _decimal(v, f"balances.{a}") for a, v in balances.items()}
        self.core.open_account(key, secret, amounts)
        return web.json_response(
            {"api_key": key, "balances": {a: fmt(v) for a, v in amounts.items()}}
        )

    async def list_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": list(self.requests)})
