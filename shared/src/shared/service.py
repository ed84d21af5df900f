"""The lifecycle every service's ``main.py`` runs: start, serve, stop cleanly or crash loudly.

    def main() -> None:
        run_service("strategy-engine", tasks)

    def tasks(ctx: ServiceContext) -> list[Awaitable[None]]:
        consumer = ctx.consumer("candles", engine.on_candle, accept=[Candle])
        return [consumer.run()]

`run_service` loads the settings (an invalid one: one line on stderr, exit 2), sets up
logging, connects Redis and PostgreSQL (the embedded servers when no URL is configured),
starts the Telegram notifier (its 1 message/s limit shared through Redis by every service
of the platform) and the health + metrics server on HEALTH_PORT, sets
``service_up``, then runs the service's tasks until:

- SIGTERM or SIGINT: intake stops (`ServiceContext.stopping` is set, every consumer made
  with `ServiceContext.consumer` stops reading, ``on_stop`` callbacks run), the tasks get
  ``shutdown_timeout`` seconds to finish their in-flight work, stragglers are cancelled,
  connections are closed, exit status 0;
- the tasks factory or a task raising: the error is logged at ERROR, which `shared.logging`
  counts and hands to the notifier (Telegram), the others are stopped the same
  way, exit status 1, so a supervisor restarts a clean process rather than leaving a
  half-alive one;
- every task returning: a clean exit, status 0;
- a task raising `ServiceUnavailableError` (a dependency that does not answer): as a crash,
  status 1, but its one line is logged without a traceback;
- the tasks factory or a task raising `ServiceConfigError` (a setting only checkable once
  running, such as a symbol the exchange does not list): its one line is logged at ERROR
  (no traceback), the others are stopped, and the exit status is 2, like an invalid
  setting's, so a supervisor does not restart it.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import structlog
from pydantic import BaseModel
from redis.asyncio import Redis

from shared import event_loop
from shared.bus import Consumer, EventBus, Handler
from shared.config import Settings, SettingsError, load_settings
from shared.embedded import resolve_redis_url
from shared.healthcheck import HealthCheck, HealthCheckServer, database_check, redis_check
from shared.metrics import SERVICE_UP
from shared.notifier import TelegramNotifier

if TYPE_CHECKING:
    # shared.db pulls in SQLAlchemy and Alembic (seconds to import): loaded only when used.
    from shared.db import Database

__all__ = [
    "EXIT_CRASHED",
    "EXIT_OK",
    "EXIT_SETTINGS",
    "ServiceConfigError",
    "ServiceContext",
    "ServiceUnavailableError",
    "TasksFactory",
    "run_service",
    "serve",
]

log = structlog.get_logger("shared.service")

EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_SETTINGS = 2

StopCallback = Callable[[], Awaitable[object] | object]


class ServiceUnavailableError(ConnectionError):
    """Something the service cannot work without (the exchange, say) does not answer, after
    the retries of the code that reached it. One line naming what and where (the setting
    that points there: a typo there looks the same); exit status 1, so a supervisor
    restarts the service with its growing delay. No traceback: it would say nothing more."""


class ServiceConfigError(ValueError):
    """A setting that is valid in form but wrong for the world the service runs in (checked
    by its tasks factory or a task: a symbol the exchange does not list, say). One line
    naming the setting and how to fix it; the service exits with `EXIT_SETTINGS`."""


@dataclass
class ServiceContext:
    """What a service's tasks get: settings, connections, the bus and the shutdown signal."""

    name: str
    settings: Settings
    redis: Redis
    bus: EventBus
    database: Database | None
    notifier: TelegramNotifier
    health: HealthCheckServer
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    consumers: list[Consumer] = field(default_factory=list)
    _on_stop: list[StopCallback] = field(default_factory=list)

    def consumer(
        self,
        stream: str,
        handler: Handler,
        *,
        group: str | None = None,
        accept: Sequence[type[BaseModel]] | None = None,
        **options: Any,
    ) -> Consumer:
        """A bus consumer in this service's group (its name), stopped on shutdown."""
        consumer = self.bus.consumer(
            stream, group or self.name, handler, service=self.name, accept=accept, **options
        )
        self.consumers.append(consumer)
        return consumer

    def on_stop(self, callback: StopCallback) -> None:
        """Call ``callback`` (sync or async) when shutdown begins, to stop other intake."""
        self._on_stop.append(callback)

    async def _begin_stop(self) -> None:
        self.stopping.set()
        for consumer in self.consumers:
            consumer.stop()
        for callback in self._on_stop:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_stop callback failed", service=self.name)


TasksFactory = Callable[
    [ServiceContext], Iterable[Awaitable[Any]] | Awaitable[Iterable[Awaitable[Any]]]
]
"""Builds the service's long-running tasks from its context (may be async)."""


def run_service(
    name: str,
    tasks_factory: TasksFactory,
    *,
    settings: Settings | None = None,
    use_database: bool = True,
    checks: Iterable[HealthCheck] = (),
    shutdown_timeout: float = 10.0,
    bus_namespace: str | None = None,
) -> NoReturn:
    """Run the service ``name`` to completion and exit the process with its status.

    ``checks`` are health checks besides Redis and PostgreSQL; ``bus_namespace`` prefixes
    every stream key (default: the BUS_NAMESPACE setting; tests and side-by-side demos use
    it); ``use_database=False`` for a service that needs no PostgreSQL.
    """
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            sys.exit(EXIT_SETTINGS)
    status = event_loop.run(
        serve(
            name,
            tasks_factory,
            settings=settings,
            use_database=use_database,
            checks=checks,
            shutdown_timeout=shutdown_timeout,
            bus_namespace=bus_namespace,
        )
    )
    sys.exit(status)


def _secrets(settings: Settings) -> list[str]:
    values = [
        settings.binance_api_key.get_secret_value(),
        settings.binance_api_secret.get_secret_value(),
        settings.telegram_bot_token.get_secret_value(),
    ]
    return [value for value in values if value]


async def serve(
    name: str,
    tasks_factory: TasksFactory,
    *,
    settings: Settings,
    use_database: bool = True,
    checks: Iterable[HealthCheck] = (),
    shutdown_timeout: float = 10.0,
    bus_namespace: str | None = None,
) -> int:
    """The lifecycle inside a running event loop; returns the exit status."""
    from shared.logging import setup_logging

    if bus_namespace is None:
        bus_namespace = settings.bus_namespace

    secrets = _secrets(settings)
    notifier = TelegramNotifier.from_settings(settings)
    setup_logging(
        name,
        settings.log_level,
        log_format=settings.log_format,
        notifier=notifier,
        secrets=secrets,
    )
    await notifier.start()
    redis: Redis | None = None
    database: Database | None = None
    health: HealthCheckServer | None = None
    try:
        try:
            redis_url = await asyncio.to_thread(resolve_redis_url, settings)
            redis = Redis.from_url(redis_url, health_check_interval=30)
            await redis.ping()
            # Telegram's 1 message/s is per bot and chat: every service shares one limit in
            # Redis (the local one covers sends before this, and any Redis outage).
            notifier.share_rate_limit(redis, namespace=bus_namespace)
            if use_database:
                from shared.db import open_database

                database = await open_database(settings)
            health = HealthCheckServer(name, port=settings.health_port, secrets=secrets)
            health.add_check("redis", redis_check(redis))
            if database is not None:
                health.add_check("postgres", database_check(database.engine))
            for check in checks:
                health.add_check(
                    check.name, check.func, critical=check.critical, timeout=check.timeout
                )
            await health.start()
        except Exception as exc:
            # Logged at ERROR: the logging chain counts it and alerts Telegram (once).
            log.error("service failed to start", service=name, error=f"{type(exc).__name__}: {exc}")
            return EXIT_CRASHED
        context = ServiceContext(
            name=name,
            settings=settings,
            redis=redis,
            bus=EventBus.from_settings(redis, settings, namespace=bus_namespace),
            database=database,
            notifier=notifier,
            health=health,
        )
        SERVICE_UP.labels(name).set(1)
        log.info("service started", service=name, health_port=health.port)
        return await _run_tasks(context, tasks_factory, shutdown_timeout)
    finally:
        SERVICE_UP.labels(name).set(0)
        if health is not None:
            await health.stop()
        if database is not None:
            await database.close()
        await notifier.close()  # before Redis: draining still uses the shared rate limit
        if redis is not None:
            await redis.aclose()
        log.info("service stopped", service=name)


async def _run_tasks(
    context: ServiceContext, tasks_factory: TasksFactory, shutdown_timeout: float
) -> int:
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()

    def request_stop(signame: str) -> None:
        if not stop_requested.is_set():
            log.info("shutdown requested", service=context.name, signal=signame)
        stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)
    try:
        try:
            made = tasks_factory(context)
            if inspect.isawaitable(made):
                made = await made
        except Exception as exc:
            # Logged at ERROR, so counted and alerted (Telegram) like a task's crash.
            return _failure_status(context, exc, "service failed to start")
        tasks: set[asyncio.Future[Any]] = {asyncio.ensure_future(work) for work in made}
        stop_waiter = asyncio.ensure_future(stop_requested.wait())
        status = EXIT_OK
        try:
            while tasks and not stop_requested.is_set():
                done, _ = await asyncio.wait(
                    tasks | {stop_waiter}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done - {stop_waiter}:
                    tasks.discard(task)
                    status = max(status, _exit_status(context, task))
                if status != EXIT_OK:
                    break
        finally:
            stop_waiter.cancel()
        if tasks:
            await context._begin_stop()
            status = max(status, await _drain(context, tasks, shutdown_timeout))
        return status
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _exit_status(context: ServiceContext, task: asyncio.Future[Any]) -> int:
    """`EXIT_OK` for a task that did not raise; else its error's status (`_failure_status`)."""
    if task.cancelled():
        return EXIT_OK
    error = task.exception()
    if error is None:
        return EXIT_OK
    return _failure_status(context, error, "service task crashed")


def _failure_status(context: ServiceContext, error: BaseException, event: str) -> int:
    """Log and alert an error of the tasks factory or a task; its exit status:
    `EXIT_SETTINGS` for a `ServiceConfigError` and `EXIT_CRASHED` for any other, with a
    traceback except for those two and `ServiceUnavailableError` (their line says it all)."""
    # Logged at ERROR: shared.logging counts it in errors_total and hands it to the
    # notifier's send_error, so it is alerted exactly once.
    if isinstance(error, ServiceConfigError):
        log.error("service misconfigured", service=context.name, error=str(error))
        return EXIT_SETTINGS
    if isinstance(error, ServiceUnavailableError):
        log.error("service dependency unavailable", service=context.name, error=str(error))
        return EXIT_CRASHED
    log.error(
        event,
        service=context.name,
        error=f"{type(error).__name__}: {error}",
        exc_info=error,
    )
    return EXIT_CRASHED


async def _drain(
    context: ServiceContext, tasks: set[asyncio.Future[Any]], shutdown_timeout: float
) -> int:
    """Give the tasks ``shutdown_timeout`` s to finish, then cancel the rest."""
    done, pending = await asyncio.wait(tasks, timeout=shutdown_timeout)
    status = EXIT_OK
    if pending:
        log.warning(
            "tasks did not finish in time; cancelling",
            service=context.name,
            count=len(pending),
            shutdown_timeout=shutdown_timeout,
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        status = max(status, _exit_status(context, task))
    return status
