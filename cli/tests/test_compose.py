"""docker-compose.yml, Dockerfile and monitoring/ checked for structure and consistency.

There is no Docker engine (nor the compose plugin) here, so the compose file is parsed as YAML
and checked against what the platform itself declares: the services and health ports of
`trading run` (service_catalog), the Settings fields, the `trading` commands and the
workspace members. `docker compose config` runs too where the plugin exists.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from shared.config import Settings, load_settings
from trading_cli.main import app
from trading_cli.service_catalog import SERVICES
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
LIVE = {spec.name: spec for spec in SERVICES}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def test_compose_declares_infrastructure_migration_services_and_monitoring(
    services: dict[str, Any],
) -> None:
    expected = {"postgres", "redis", "migrate", *LIVE, "backtester", "prometheus", "grafana"}
    assert set(services) == expected
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert services["redis"]["image"].split(":")[1].startswith("7")


def test_each_live_service_runs_its_module_on_its_health_port(services: dict[str, Any]) -> None:
    for name, spec in LIVE.items():
        service = services[name]
        assert service["command"] == ["python", "-m", spec.module], name
        assert importlib.util.find_spec(spec.module) is not None, f"{spec.module} not installed"
        assert service["environment"]["HEALTH_PORT"] == str(spec.health_port), name
        assert f"{spec.health_port}:{spec.health_port}" in service["ports"], name
        assert "profiles" not in service, f"{name} must start with a plain `docker compose up`"


def test_each_live_service_is_health_checked_on_its_own_health_endpoint(
    services: dict[str, Any],
) -> None:
    for name, spec in LIVE.items():
        check = services[name]["healthcheck"]
        command = " ".join(check["test"])
        assert f"http://127.0.0.1:{spec.health_port}/health" in command, name
        assert check["retries"] >= 1 and check["interval"] and check["start_period"], name
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name


def test_services_start_after_healthy_stores_and_a_completed_migration(
    services: dict[str, Any],
) -> None:
    for name in LIVE:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("strategy-engine", "order-executor", "portfolio-manager"):
        # They warm up from the candles the collector backfills (as `trading run` orders it).
        assert services[name]["depends_on"]["data-collector"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"


def test_migration_step_is_a_real_trading_command(services: dict[str, Any]) -> None:
    command = services["migrate"]["command"]
    assert command[0] == "trading"
    result = CliRunner().invoke(app, [*command[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert "head" in result.output.lower() or "upgrade" in result.output.lower()


def test_every_environment_key_is_a_setting_and_every_value_is_valid(
    services: dict[str, Any],
) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for name in (*LIVE, "migrate", "backtester"):
        environment = services[name]["environment"]
        unknown = set(environment) - fields
        assert not unknown, f"{name}: {sorted(unknown)} are not Settings fields"
        # The values are what the container gets: Settings must accept them as they are.
        settings = load_settings(**{key.lower(): value for key, value in environment.items()})
        assert settings.database_url and "@postgres:5432/" in settings.database_url
        assert settings.redis_url and settings.redis_url.startswith("redis://redis:6379")


def test_database_credentials_match_the_postgres_service(services: dict[str, Any]) -> None:
    env = services["postgres"]["environment"]
    url = services["data-collector"]["environment"]["DATABASE_URL"]
    match = re.fullmatch(r"postgresql\+asyncpg://([^:]+):([^@]+)@postgres:5432/(\w+)", url)
    assert match is not None, url
    assert match.groups() == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"])


def test_monitoring_and_tools_are_behind_profiles(services: dict[str, Any]) -> None:
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    assert services["backtester"]["profiles"] == ["tools"]
    mounts = services["prometheus"]["volumes"]
    assert any(
        m.startswith("./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml") for m in mounts
    )
    for mount in [*mounts, *services["grafana"]["volumes"]]:
        assert (ROOT / mount.split(":")[0]).exists(), mount


def test_backtester_tool_runs_the_trading_backtest_command(services: dict[str, Any]) -> None:
    service = services["backtester"]
    command = [*service["entrypoint"], *service["command"]]
    assert command[:2] == ["trading", "backtest"]
    result = CliRunner().invoke(app, command[1:])
    assert result.exit_code == 0, result.output


def test_prometheus_scrapes_every_live_service_on_its_health_port() -> None:
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == {name: f"{name}:{spec.health_port}" for name, spec in LIVE.items()}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"


def test_grafana_provisions_the_prometheus_data_source(services: dict[str, Any]) -> None:
    folder = ROOT / "monitoring" / "grafana" / "provisioning" / "datasources"
    sources = [yaml.safe_load(path.read_text()) for path in folder.glob("*.yml")]
    urls = [source["url"] for config in sources for source in config["datasources"]]
    assert urls == ["http://prometheus:9090"]
    assert "9090:9090" in services["prometheus"]["ports"]


def test_dockerfile_installs_every_workspace_member() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    members = sorted(p.relative_to(ROOT) for p in ROOT.glob("services/*/pyproject.toml"))
    members += [Path("shared/pyproject.toml"), Path("cli/pyproject.toml")]
    for member in members:
        assert f"COPY {member} {member}" in dockerfile, f"Dockerfile misses {member}"
    assert "uv sync --frozen --no-dev" in dockerfile


def _compose_plugin() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
