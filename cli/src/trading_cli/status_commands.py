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
    "format_metric",
    "probe_services",
    "status",
    "status_table",
]

console = Console()

WATCHED_METRICS = {
    "candles": "candles_received_total",
    "signals": "signals_generated_total",
    "orders": "orders_total",
    "portfolio_value": "portfolio_value",
}
"""Column name -> metric summed over its label sets (each service exposes its own)."""


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


def _sum_metrics(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    wanted = {metric: column for column, metric in WATCHED_METRICS.items()}
    for family in text_string_to_metric_families(text):
        # The parser drops a counter's _total suffix from the family name but not the samples'.
        for sample in family.samples:
            column = wanted.get(sample.name)
            if column is not None:
                totals[column] = totals.get(column, 0.0) + sample.value
    return totals


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
                probe.metrics = _sum_metrics(await response.text())
        return probe
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
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


def status_table(probes: list[ServiceProbe], *, metrics: bool = False) -> Table:
    """A rich table of the probes (with the watched metrics when ``metrics``)."""
    table = Table(title="Services")
    table.add_column("service")
    table.add_column("health")
    table.add_column("uptime", justify="right")
    if metrics:
        for column in WATCHED_METRICS:
            table.add_column(column.replace("_", " "), justify="right")
    table.add_column("problem", overflow="fold")
    for probe in probes:
        style = _STYLES.get(probe.status, "red")
        uptime = "" if probe.uptime is None else f"{probe.uptime:.0f}s"
        row = [probe.service, f"[{style}]{probe.status}[/]", uptime]
        if metrics:
            for column in WATCHED_METRICS:
                value = probe.metrics.get(column)
                row.append(
                    ""
                    if value is None
                    else f"{value:,.2f}"
                    if "value" in column
                    else f"{value:,.0f}"
                )
        row.append("; ".join(f"{name}: {error}" for name, error in probe.failing.items()))
        table.add_row(*row)
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
        console.print(status_table(probes, metrics=True))
    if not all(probe.healthy for probe in probes):
        raise typer.Exit(1)
