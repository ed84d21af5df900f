"""The health and metrics HTTP server every service runs on HEALTH_PORT (spec 1.4, 1.5).

``GET /health`` runs every registered check concurrently, each under its own timeout, and
answers::

    {"status": "ok" | "degraded" | "fail", "service": "...", "uptime": 12.3,
     "checks": {"redis": {"ok": true, "detail": "PONG", "latency_ms": 0.4},
                "postgres": {"ok": false, "error": "ConnectionRefusedError: ...", ...}}}

- ``ok``: every check passed → HTTP 200.
- ``degraded``: only non-critical checks failed (``critical=False``: something the service
  can live without for a while, e.g. Telegram) → HTTP 503 by default, like ``fail``;
  ``degraded_http_status=200`` makes such a service stay "healthy" for a supervisor.
- ``fail``: at least one critical check failed → HTTP 503.

``GET /metrics`` serves `shared.metrics.REGISTRY` in the Prometheus text format (OpenMetrics
when the scraper asks for it).

Error texts are passed through `redact` first: a URL's password, and any secret handed to
the server, never appear in an answer.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from shared.metrics import REGISTRY

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "CheckFailed",
    "CheckFunc",
    "HealthCheck",
    "HealthCheckServer",
    "age_check",
    "database_check",
    "flag_check",
    "redact",
    "redis_check",
]

CheckFunc = Callable[[], Awaitable[str | None]]
"""An async check: returns an optional detail when healthy, raises when not."""

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords and the given secrets replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One named check; a non-critical one only degrades the status when it fails."""

    name: str
    func: CheckFunc
    critical: bool = True
    timeout: float = 2.0


def redis_check(redis: Redis) -> CheckFunc:
    """A check that PINGs Redis."""

    async def check() -> str:
        await redis.ping()
        return "PONG"

    return check


def database_check(engine: AsyncEngine) -> CheckFunc:
    """A check that runs ``SELECT 1`` on PostgreSQL."""

    async def check() -> str:
        from sqlalchemy import text

        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return "SELECT 1"

    return check


class CheckFailed(RuntimeError):
    """Raised by a check to report an unhealthy state with a readable reason."""


def flag_check(is_ok: Callable[[], bool], failure: str, detail: str = "ok") -> CheckFunc:
    """A check on a flag the service keeps, e.g. "the kline WebSocket is connected"."""

    async def check() -> str:
        if not is_ok():
            raise CheckFailed(failure)
        return detail

    return check


def age_check(
    last_time: Callable[[], datetime | None],
    max_age: timedelta,
    *,
    what: str = "last event",
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CheckFunc:
    """A check that ``last_time()`` (e.g. the last closed candle's close) is recent enough."""

    async def check() -> str:
        last = last_time()
        if last is None:
            raise CheckFailed(f"no {what} yet")
        age = (clock() - last).total_seconds()
        if age > max_age.total_seconds():
            raise CheckFailed(
                f"{what} is {age:.1f} s old (more than {max_age.total_seconds():g} s)"
            )
        return f"{what} {age:.1f} s ago"

    return check


class HealthCheckServer:
    """aiohttp server with ``/health`` and ``/metrics``; ``port=0`` picks a free port."""

    def __init__(
        self,
        service: str,
        *,
        host: str = "0.0.0.0",
        port: int = 8080,
        checks: Iterable[HealthCheck] = (),
        registry: CollectorRegistry = REGISTRY,
        secrets: Iterable[str] = (),
        degraded_http_status: int = 503,
    ) -> None:
        self.service = service
        self.host = host
        self._requested_port = port
        self._checks: dict[str, HealthCheck] = {check.name: check for check in checks}
        self._registry = registry
        self._secrets = tuple(s for s in secrets if s)
        self._degraded_http_status = degraded_http_status
        self._started = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def add_check(
        self, name: str, func: CheckFunc, *, critical: bool = True, timeout: float = 2.0
    ) -> None:
        """Register (or replace) the check called ``name``."""
        self._checks[name] = HealthCheck(name, func, critical, timeout)

    @property
    def port(self) -> int:
        """The port actually listened on (after `start`)."""
        if self._port is None:
            raise RuntimeError("the health server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL to reach the server locally, e.g. ``http://127.0.0.1:8080``."""
        host = "127.0.0.1" if self.host in {"0.0.0.0", "", "::"} else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen on ``host:port``."""
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HealthCheckServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def report(self) -> tuple[int, dict[str, Any]]:
        """Run every check; returns (HTTP status, body)."""
        checks = list(self._checks.values())
        results = await asyncio.gather(*(self._run(check) for check in checks))
        by_name = {check.name: result for check, result in zip(checks, results, strict=True)}
        failed = [check for check in checks if not by_name[check.name]["ok"]]
        if not failed:
            status, http = "ok", 200
        elif any(check.critical for check in failed):
            status, http = "fail", 503
        else:
            status, http = "degraded", self._degraded_http_status
        body = {
            "status": status,
            "service": self.service,
            "uptime": round(time.monotonic() - self._started, 3),
            "checks": by_name,
        }
        return http, body

    async def _run(self, check: HealthCheck) -> dict[str, Any]:
        started = time.perf_counter()
        result: dict[str, Any]
        try:
            async with asyncio.timeout(check.timeout):
                detail = await check.func()
            result = {"ok": True}
            if detail:
                result["detail"] = redact(str(detail), self._secrets)
        except TimeoutError:
            result = {"ok": False, "error": f"timed out after {check.timeout:g} s"}
        except CheckFailed as exc:
            result = {"ok": False, "error": redact(str(exc), self._secrets)}
        except Exception as exc:
            result = {"ok": False, "error": redact(f"{type(exc).__name__}: {exc}", self._secrets)}
        result["critical"] = check.critical
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    async def _health(self, request: web.Request) -> web.Response:
        http, body = await self.report()
        return web.json_response(body, status=http)

    async def _metrics(self, request: web.Request) -> web.Response:
        # The scraper's Accept header picks the Prometheus text or the OpenMetrics format.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})
