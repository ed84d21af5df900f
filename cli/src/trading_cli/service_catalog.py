"""The live services `trading run` starts and `trading status` checks: module and health port.

One table, so the supervisor, the status command, docker-compose.yml and
monitoring/prometheus.yml (kept equal to it by cli/tests/test_compose.py) agree on the ports.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SERVICES", "SERVICE_NAMES", "ServiceSpec", "parse_port_overrides", "service_specs"]


@dataclass(frozen=True)
class ServiceSpec:
    """A live service: its name, the module `python -m` runs and its HEALTH_PORT."""

    name: str
    module: str
    health_port: int


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("data-collector", "data_collector", 8081),
    ServiceSpec("strategy-engine", "strategy_engine", 8082),
    ServiceSpec("order-executor", "order_executor", 8083),
    ServiceSpec("portfolio-manager", "portfolio_manager", 8084),
)
"""In pipeline order; started in this order and stopped in reverse."""

SERVICE_NAMES = tuple(spec.name for spec in SERVICES)


def service_specs(
    names: list[str] | None = None, port_base: int | None = None
) -> list[ServiceSpec]:
    """The named services (all when none) in pipeline order; ``port_base`` renumbers the
    health ports as port_base+1, +2, ... (side-by-side runs, tests). Unknown names raise
    ValueError naming the accepted ones."""
    wanted = list(dict.fromkeys(names or SERVICE_NAMES))
    unknown = [name for name in wanted if name not in SERVICE_NAMES]
    if unknown:
        raise ValueError(
            f"unknown service {', '.join(unknown)}: choose from {', '.join(SERVICE_NAMES)}"
        )
    specs = []
    for index, spec in enumerate(SERVICES, start=1):
        if spec.name in wanted:
            port = spec.health_port if port_base is None else port_base + index
            specs.append(ServiceSpec(spec.name, spec.module, port))
    return specs


def parse_port_overrides(values: list[str]) -> dict[str, int]:
    """``SERVICE=PORT`` pairs (e.g. ``order-executor=9083``), or ValueError naming the bad one."""
    ports: dict[str, int] = {}
    for value in values:
        name, sep, port = value.partition("=")
        if not sep or name not in SERVICE_NAMES or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"--port {value!r} must look like SERVICE=PORT with SERVICE one of "
                f"{', '.join(SERVICE_NAMES)} and PORT from 1 to 65535"
            )
        ports[name] = int(port)
    return ports
