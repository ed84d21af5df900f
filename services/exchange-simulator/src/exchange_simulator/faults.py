"""Scripted faults for the REST API, and the middleware that applies them with the weights.

A fault matches requests by path (exact, e.g. "/api/v3/order"; any /api path when absent) and
method, and fires on the next `times` matches, or on every `every`-th match (the k-th, 2k-th,
... ; unlimited unless `times` caps it). Kinds:

    http_429       HTTP 429, -1003, Retry-After: retry_after        (before executing)
    http_418       HTTP 418, -1003 "IP banned", Retry-After          (before executing)
    http_500       HTTP 500, -1000 unknown error                      (before executing)
    http_503       HTTP 503, plain "Service Unavailable."             (before executing)
    delay          wait `delay` seconds, then answer normally
    exec_unknown   execute, then answer HTTP 408 -1007 (execution status unknown)
    drop           execute, then close the connection without any answer
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Middleware

from exchange_simulator import errors
from exchange_simulator.limits import ORDER_COUNTS, WEIGHT_HEADER, WeightMeter, request_weight

BEFORE = frozenset({"http_429", "http_418", "http_500", "http_503"})
AFTER = frozenset({"exec_unknown", "drop"})
KINDS = BEFORE | AFTER | {"delay"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """One scripted fault and how often it has matched and fired."""

    id: int
    kind: str
    path: str | None = None
    method: str | None = None
    times: int | None = None
    every: int | None = None
    retry_after: int = 1
    delay: float = 0.0
    matched: int = 0
    fired: int = 0

    @property
    def active(self) -> bool:
        return self.times is None or self.fired < self.times

    def fire(self, request: web.Request) -> bool:
        """Count a request; True when this fault hits it."""
        if not self.active:
            return False
        if self.path is not None and request.path != self.path:
            return False
        if self.method is not None and request.method != self.method.upper():
            return False
        self.matched += 1
        if self.every is not None and self.matched % self.every:
            return False
        self.fired += 1
        return True

    def json(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


class FaultBook:
    """The scripted faults of one simulator."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        """Add a fault from its JSON description; ValueError names what is wrong."""
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}: expected one of {sorted(KINDS)}")
        unknown = set(spec) - {"kind", "path", "method", "times", "every", "retry_after", "delay"}
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)}")
        every = spec.get("every")
        times = spec.get("times", None if every else 1)
        for name, value in (("times", times), ("every", every)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"fault {name} must be a whole number of at least 1")
        fault = Fault(
            id=next(self._ids),
            kind=kind,
            path=spec.get("path"),
            method=spec.get("method"),
            times=times,
            every=every,
            retry_after=int(spec.get("retry_after", 1)),
            delay=float(spec.get("delay", 0.0)),
        )
        self.faults.append(fault)
        return fault

    def clear(self) -> int:
        count = len(self.faults)
        self.faults.clear()
        return count

    def fire(self, request: web.Request) -> list[Fault]:
        return [f for f in self.faults if f.fire(request)]


def error_response(error: errors.BinanceError) -> web.Response:
    response = web.json_response(error.body(), status=error.status)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _before(fault: Fault, now_ms: int) -> web.Response:
    if fault.kind == "http_429":
        error = errors.too_much_weight(6000)
    elif fault.kind == "http_418":
        error = errors.banned(now_ms + fault.retry_after * 1000)
    elif fault.kind == "http_500":
        error = errors.unknown_error()
    else:
        return web.Response(status=503, text="Service Unavailable.")
    error.retry_after = fault.retry_after if fault.kind != "http_500" else None
    return error_response(error)


def api_middleware(
    faults: FaultBook,
    weights: WeightMeter,
    clock_ms: Callable[[], int],
    log: deque[dict[str, Any]],
) -> Middleware:
    """Faults, weight accounting, Binance error bodies and headers around every /api call."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        fired = faults.fire(request)
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "status": None,
            "fault": ",".join(f.kind for f in fired) or None,
            "client_order_id": None,
        }
        log.append(entry)
        for fault in fired:
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay)
        before = next((f for f in fired if f.kind in BEFORE), None)
        after = next((f for f in fired if f.kind in AFTER), None)
        response: web.StreamResponse
        try:
            used = weights.spend(
                request_weight(
                    request.method,
                    request.path,
                    "symbol" in request.query,
                    "orderId" in request.query,
                ),
                clock_ms(),
            )
            if before is not None:
                response = _before(before, clock_ms())
            else:
                response = await handler(request)
        except errors.BinanceError as error:
            used = weights.used
            response = error_response(error)
        entry["client_order_id"] = await _client_order_id(request)
        if after is not None and after.kind == "drop":
            # The order is executed; the client never hears of it (BINANCE.md pitfall 1).
            entry["status"] = "dropped"
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if after is not None:
            response = error_response(errors.execution_unknown())
        entry["status"] = response.status
        response.headers[WEIGHT_HEADER] = str(used)
        for name, value in request.get(ORDER_COUNTS, {}).items():
            response.headers[name] = value
        return response

    return middleware


async def _client_order_id(request: web.Request) -> str | None:
    values = dict(request.query)
    if request.body_exists:
        values.update(parse_qsl(await request.text()))
    return values.get("newClientOrderId") or values.get("origClientOrderId")
