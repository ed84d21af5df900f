"""`trading status`: every live service's /health, as a table or JSON; exit 1 if any fails.

`probe_services` is also what the live view of `trading run` polls: besides /health it reads
the few counters a user watches (candles, signals, orders, portfolio value) from /metrics.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import aiohttp
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from trading_cli.service_catalog import (
    SERVICE_NAMES,
    ServiceSpec,
    parse_port_overrides,
    service_specs,
)

__all__ = [
    "WATCHED_METRICS",
    "ServiceProbe",
    "activity",
    "format_metric",
    "probe_services",
    "status",
    "status_table",
]

console = Console()

WATCHED_METRICS = {
    "candles": ("data-collector", "candles_received_total"),
    "signals": ("strategy-engine", "signals_generated_total"),
    "orders": ("order-executor", "orders_total"),
    "portfolio_value": ("portfolio-manager", "portfolio_value"),
}
"""Column -> (the service that counts it, metric summed over its label sets)."""


@dataclass
class ServiceProbe:
    """What one service answered: health status, failing checks, watched metric values."""

    service: str
    url: str
    status: str  # "ok", "degraded", "fail" or "down" (no answer)
    http_status: int | None = None
    uptime: float | None = None
    failing: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.status == "ok"


def _sum_metrics(text: str, service: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    # Every process exposes every metric of the shared registry; only the owner's count.
    wanted = {
        metric: column for column, (owner, metric) in WATCHED_METRICS.items() if owner == service
    }
    for family in text_string_to_metric_families(text):
        # The parser drops a counter's _total suffix from the family name but not the samples'.
        for sample in family.samples:
            column = wanted.get(sample.name)
            if column is not None:
                totals[column] = totals.get(column, 0.0) + sample.value
    return totals


def activity(probe: ServiceProbe) -> str:
    """The service's watched counters in words, e.g. ``candles 640``."""
    return ", ".join(
        f"{column.replace('_', ' ')} {format_metric(column, value)}"
        for column, value in probe.metrics.items()
    )


async def _probe(
    session: aiohttp.ClientSession, host: str, spec: ServiceSpec, with_metrics: bool
) -> ServiceProbe:
    url = f"http://{host}:{spec.health_port}"
    try:
        async with session.get(f"{url}/health") as response:
            body: dict[str, Any] = await response.json(content_type=None)
            probe = ServiceProbe(
                service=spec.name,
                url=url,
                status=str(body.get("status", "fail")),
                http_status=response.status,
                uptime=body.get("uptime"),
                failing={
                    name: str(check.get("error", "failed"))
                    for name, check in (body.get("checks") or {}).items()
                    if not check.get("ok")
                },
            )
        if with_metrics:
            async with session.get(f"{url}/metrics") as response:
                probe.metrics = _sum_metrics(await response.text(), spec.name)
        return probe
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        if isinstance(exc, aiohttp.ClientConnectorError):
            # aiohttp's own text ("Cannot connect to host ... ssl:default [Connect call
            # failed ...]") says the same in three times the width of the table's column.
            reason = f"nothing answers on {host}:{spec.health_port}: is it running? (trading run)"
        elif isinstance(exc, TimeoutError):
            reason = f"no answer from {url}/health in time: the service is stuck or overloaded"
        else:
            reason = str(exc) or type(exc).__name__
        return ServiceProbe(spec.name, url, "down", failing={"connection": reason})


async def probe_services(
    specs: list[ServiceSpec],
    *,
    host: str = "127.0.0.1",
    wait_seconds: float = 3.0,
    metrics: bool = False,
) -> list[ServiceProbe]:
    """Ask every service for /health (and /metrics when ``metrics``), concurrently."""
    client_timeout = aiohttp.ClientTimeout(total=wait_seconds)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        return list(await asyncio.gather(*(_probe(session, host, s, metrics) for s in specs)))


def format_metric(column: str, value: float | None) -> str:
    """A watched metric as shown: money with cents, counts whole, blank when absent."""
    if value is None:
        return ""
    return f"{value:,.2f}" if column == "portfolio_value" else f"{value:,.0f}"


_STYLES = {"ok": "green", "degraded": "yellow", "fail": "red", "down": "red"}


def status_table(probes: list[ServiceProbe]) -> Table:
    """A rich table of the probes."""
    table = Table(title="Services", title_justify="left")
    for column in ("service", "health", "uptime", "activity", "problem"):
        table.add_column(column, overflow="fold")
    for probe in probes:
        style = _STYLES.get(probe.status, "red")
        uptime = "" if probe.uptime is None else f"{probe.uptime:.0f}s"
        problem = "; ".join(f"{name}: {error}" for name, error in probe.failing.items())
        health = f"[{style}]{probe.status}[/]"
        table.add_row(probe.service, health, uptime, activity(probe), problem)
    return table


def status(
    service: Annotated[
        list[str] | None,
        typer.Argument(help=f"Services to check (default: all): {', '.join(SERVICE_NAMES)}."),
    ] = None,
    host: Annotated[str, typer.Option(help="Host the services listen on.")] = "127.0.0.1",
    port: Annotated[
        list[str] | None,
        typer.Option(help="A service's health port when not the default, SERVICE=PORT."),
    ] = None,
    port_base: Annotated[
        int | None,
        typer.Option(help="As given to `trading run --port-base`: ports BASE+1, BASE+2, ..."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 3.0,
) -> None:
    """Show every live service's /health; exit status 1 when any is not ok."""
    try:
        specs = service_specs(service, port_base)
        overrides = parse_port_overrides(port or [])
    except ValueError as exc:
        console.print(f"Error: {exc}", style="red", highlight=False)
        raise typer.Exit(2) from None
    specs = [ServiceSpec(s.name, s.module, overrides.get(s.name, s.health_port)) for s in specs]
    probes = asyncio.run(probe_services(specs, host=host, wait_seconds=timeout, metrics=True))
    if as_json:
        print(json.dumps([asdict(probe) for probe in probes], indent=2))
    else:
        console.print(status_table(probes))
    if not all(probe.healthy for probe in probes):
        raise typer.Exit(1)
