"""Settings: environment and .env, one-line errors naming the variable, secrets kept secret."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from shared.config import (
    BINANCE_TESTNET_REST_URL,
    BINANCE_TESTNET_STREAM_URL,
    Settings,
    SettingsError,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"

# The spec's .env.example, in its order, with its values.
SPEC_KEYS = {
    "BINANCE_API_KEY": "",
    "BINANCE_API_SECRET": "",
    "REDIS_URL": "redis://localhost:6379",
    "DATABASE_URL": "postgresql+asyncpg://trading:trading@localhost:5432/trading",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "json",
    "TELEGRAM_BOT_TOKEN": "",
    "TELEGRAM_CHAT_ID": "",
    "TELEGRAM_ENABLED": "false",
    "RISK_MAX_POSITION_SIZE": "0.1",
    "RISK_STOP_LOSS_PCT": "5",
    "RISK_DAILY_LOSS_LIMIT_PCT": "10",
    "DRY_RUN": "true",
    "HEALTH_PORT": "8080",
    "CIRCUIT_BREAKER_THRESHOLD": "5",
    "CIRCUIT_BREAKER_TIMEOUT": "60",
}
SETTING = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting from the machine's environment, and a folder without a .env file."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def settings_error(monkeypatch: pytest.MonkeyPatch, **environment: str) -> str:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_defaults_run_safely_with_nothing_configured() -> None:
    settings = load_settings()

    assert settings.dry_run is True
    assert settings.telegram_enabled is False
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.trading_data_dir == Path(".trading")
    assert settings.risk_stop_loss_pct == Decimal(5)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "RISK_STOP_LOSS_PCT",
            "abc",
            "Invalid setting RISK_STOP_LOSS_PCT='abc': expected a number from 0 to 100",
        ),
        (
            "LOG_FORMAT",
            "xml",
            "Invalid setting LOG_FORMAT='xml': expected one of 'json' or 'console'",
        ),
        (
            "HEALTH_PORT",
            "99999",
            "Invalid setting HEALTH_PORT='99999': expected a whole number from 1 to 65535",
        ),
        (
            "DRY_RUN",
            "maybe",
            "Invalid setting DRY_RUN='maybe': expected true or false",
        ),
        (
            "CIRCUIT_BREAKER_TIMEOUT",
            "0",
            "Invalid setting CIRCUIT_BREAKER_TIMEOUT='0': expected a number greater than 0",
        ),
        (
            "COLLECTOR_SYMBOLS",
            "btc/usdt,ETHUSDT",
            "Invalid setting COLLECTOR_SYMBOLS='btc/usdt,ETHUSDT': expected comma-separated "
            "Binance symbols such as BTCUSDT,ETHUSDT ('BTC/USDT' is not one)",
        ),
        (
            "COLLECTOR_SYMBOLS",
            " , ",
            "Invalid setting COLLECTOR_SYMBOLS=' , ': expected comma-separated "
            "Binance symbols such as BTCUSDT,ETHUSDT",
        ),
        (
            "COLLECTOR_INTERVALS",
            "1m,7m",
            "Invalid setting COLLECTOR_INTERVALS='1m,7m': expected comma-separated Binance "
            "intervals from 1s, 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w "
            "('7m' is not one)",
        ),
    ],
)
def test_a_bad_value_fails_with_one_line_naming_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    assert settings_error(monkeypatch, **{variable: value}) == expected


def test_collector_series_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_SYMBOLS", " btcusdt, EthUsdt ,")
    monkeypatch.setenv("COLLECTOR_INTERVALS", "1m, 15m")
    settings = load_settings()
    assert settings.collector_symbols == "BTCUSDT,ETHUSDT"
    assert settings.collector_intervals == "1m,15m"


def test_every_bad_value_is_named_in_the_same_line(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, LOG_LEVEL="loud", RISK_MAX_POSITION_SIZE="2")

    assert "LOG_LEVEL='loud': expected one of 'DEBUG', 'INFO'" in message
    assert "RISK_MAX_POSITION_SIZE='2': expected a number from 0 to 1" in message


@pytest.mark.parametrize(
    "variable", ["BINANCE_API_KEY", "BINANCE_API_SECRET", "TELEGRAM_BOT_TOKEN"]
)
def test_an_invalid_secret_is_named_but_its_value_never_shown(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    message = settings_error(monkeypatch, **{variable: "s3cr3t-part-one s3cr3t-part-two"})

    assert (
        message
        == f"Invalid setting {variable}: must be one word: it contains a space or line break"
    )
    assert "s3cr3t" not in message


def test_secrets_stay_hidden_when_another_setting_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_SECRET", "s3cr3t-value")
    message = settings_error(monkeypatch, HEALTH_PORT="http")

    assert message.startswith("Invalid setting HEALTH_PORT='http'")
    assert "s3cr3t" not in message


def test_secrets_do_not_show_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", " s3cr3t-key\n")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:s3cr3t-token")

    settings = load_settings()

    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)
    assert settings.binance_api_key.get_secret_value() == "s3cr3t-key"  # trimmed


def test_telegram_turns_itself_off_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_ENABLED", "true")
    assert load_settings().telegram_enabled is False

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    assert load_settings().telegram_enabled is True


def test_dotenv_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, clean_environment: Path
) -> None:
    (clean_environment / ".env").write_text(
        "HEALTH_PORT=9100\nLOG_LEVEL=debug\nDATABASE_URL=postgresql://u@db/trading\n"
    )
    monkeypatch.setenv("HEALTH_PORT", "9200")

    settings = load_settings()

    assert settings.health_port == 9200
    assert settings.log_level == "DEBUG"
    assert settings.database_url == "postgresql://u@db/trading"


def test_a_bad_value_in_dotenv_is_named_too(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text("LOG_FORMAT=yaml\n")

    with pytest.raises(SettingsError, match=r"^Invalid setting LOG_FORMAT='yaml'"):
        load_settings()


def test_blank_urls_and_data_dir_mean_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("DATABASE_URL", "REDIS_URL", "TRADING_DATA_DIR", "STRATEGIES_EXTRA_DIR"):
        monkeypatch.setenv(variable, " ")

    settings = load_settings()

    assert (settings.database_url, settings.redis_url, settings.strategies_extra_dir) == (
        None,
        None,
        None,
    )
    assert settings.trading_data_dir == Path(".trading")


def test_testnet_switches_the_default_endpoints_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_TESTNET", "true")
    settings = load_settings()
    assert (settings.binance_base_url, settings.binance_ws_url) == (
        BINANCE_TESTNET_REST_URL,
        BINANCE_TESTNET_STREAM_URL,
    )

    monkeypatch.setenv("BINANCE_BASE_URL", "http://127.0.0.1:9000")
    assert load_settings().binance_base_url == "http://127.0.0.1:9000"


def _example_lines() -> list[tuple[bool, str, str]]:
    """(commented out, name, value) of every setting line in .env.example."""
    found = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = SETTING.match(line)
        if match:
            found.append((match.group(1) is not None, match.group(2), match.group(3)))
    return found


def test_env_example_names_every_setting() -> None:
    named = [name for _, name, _ in _example_lines()]

    assert sorted(named) == sorted(name.upper() for name in Settings.model_fields)


def test_env_example_starts_with_the_specs_keys_in_order_with_its_values() -> None:
    active = [(name, value) for commented, name, value in _example_lines() if not commented]

    assert active == list(SPEC_KEYS.items())


def test_env_example_loads_as_valid_settings(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(ENV_EXAMPLE.read_text())

    settings = load_settings()

    assert settings.database_url == SPEC_KEYS["DATABASE_URL"]
    assert settings.redis_url == SPEC_KEYS["REDIS_URL"]
    assert settings.circuit_breaker_timeout == 60.0


def test_env_example_shows_the_true_defaults_of_the_optional_settings(
    clean_environment: Path,
) -> None:
    uncommented = "\n".join(
        line.lstrip("# ") if SETTING.match(line) else line
        for line in ENV_EXAMPLE.read_text().splitlines()
    )
    (clean_environment / ".env").write_text(uncommented)

    settings = load_settings()

    for commented, name, _ in _example_lines():
        default = Settings.model_fields[name.lower()].default
        # A setting whose default is None ("unset") may show what unset stands for instead.
        if commented and default is not None:
            assert getattr(settings, name.lower()) == default, name


def test_a_database_url_that_is_not_postgresql_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = settings_error(monkeypatch, DATABASE_URL="mysql://root:hunter2@db:3306/trading")

    assert message.startswith("Invalid setting DATABASE_URL='mysql://root:***@db:3306/trading': ")
    assert "expected a PostgreSQL URL" in message
    assert "hunter2" not in message
