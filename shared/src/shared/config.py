"""One typed `Settings` for every service, read from the environment and `.env`.

Load it once with `load_settings()` at start-up and pass it in; nothing reads the
environment anywhere else. An invalid value raises `SettingsError` with one line that
names the variable and what it accepts, so the program stops before it does anything.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.models import INTERVALS

BINANCE_REST_URL = "https://api.binance.com"
BINANCE_STREAM_URL = "wss://stream.binance.com:9443"
BINANCE_TESTNET_REST_URL = "https://testnet.binance.vision"
BINANCE_TESTNET_STREAM_URL = "wss://stream.testnet.binance.vision"
TELEGRAM_BOT_API_URL = "https://api.telegram.org"

SECRET_FIELDS = frozenset({"binance_api_key", "binance_api_secret", "telegram_bot_token"})


class SettingsError(ValueError):
    """A setting has a value the platform cannot run with; the message is one line."""


class Settings(BaseSettings):
    """Every setting of the platform. Field names are the environment variables, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # Exchange
    binance_api_key: SecretStr = SecretStr("")
    binance_api_secret: SecretStr = SecretStr("")
    binance_base_url: str = BINANCE_REST_URL
    binance_ws_url: str = BINANCE_STREAM_URL
    binance_testnet: bool = False

    # Infrastructure: unset means "start the embedded server under trading_data_dir"
    redis_url: str | None = None
    database_url: str | None = None
    trading_data_dir: Path = Path(".trading")

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Telegram
    telegram_bot_token: SecretStr = SecretStr("")
    telegram_chat_id: str = ""
    telegram_enabled: bool = False
    telegram_api_url: str = TELEGRAM_BOT_API_URL

    # Risk management (0 disables a rule)
    risk_max_position_size: Decimal = Field(default=Decimal("0.1"), ge=0, le=1)
    risk_stop_loss_pct: Decimal = Field(default=Decimal("5"), ge=0, le=100)
    risk_daily_loss_limit_pct: Decimal = Field(default=Decimal("10"), ge=0, le=100)
    dry_run: bool = True

    # Health & metrics
    health_port: int = Field(default=8080, ge=1, le=65535)
    circuit_breaker_threshold: int = Field(default=5, ge=1)
    circuit_breaker_timeout: float = Field(default=60.0, gt=0)

    # Strategies: an extra folder searched for strategy plugins besides `strategies/`
    strategies_extra_dir: Path | None = None

    # Event bus: deliveries before dead-lettering, idle time before another consumer
    # takes over a pending entry, approximate stream length (MAXLEN ~)
    bus_max_deliveries: int = Field(default=5, ge=1)
    bus_claim_idle_ms: int = Field(default=30_000, ge=1)
    bus_stream_maxlen: int = Field(default=100_000, ge=1)

    # Live services: a prefix for every bus stream key (side-by-side runs and tests), the
    # strategy engine's instances file (unset: services/strategy-engine/config/engine.yaml),
    # the portfolio's snapshot interval (seconds of candle time) and its starting USDT cash
    bus_namespace: str = ""
    strategy_engine_config: Path | None = None
    portfolio_snapshot_interval: int = Field(default=300, ge=1)
    portfolio_initial_cash: Decimal = Field(default=Decimal(10000), gt=0)

    # Data collector: comma-separated symbols and intervals (every pair is collected) and how
    # many closed candles of each series to fetch on the first start (nothing stored yet)
    collector_symbols: str = "BTCUSDT,ETHUSDT"  # the series of the default engine.yaml
    collector_intervals: str = "1m"
    collector_history_candles: int = Field(default=500, ge=0)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.strip().upper() if value.strip().upper() in _LEVELS else value.strip().lower()

    @field_validator(
        "redis_url", "database_url", "strategies_extra_dir", "strategy_engine_config", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith(_POSTGRES_SCHEMES):
            raise ValueError(
                "expected a PostgreSQL URL such as postgresql://user:password@host:5432/trading"
                " (or leave it empty for the embedded server)"
            )
        return value

    @field_validator(*SECRET_FIELDS, mode="before")
    @classmethod
    def _secret_is_one_word(cls, value: Any) -> Any:
        # Keys and tokens never contain blanks: one inside is a paste error (two values, a
        # line break) that would otherwise surface later as a baffling authentication failure.
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        if any(character.isspace() for character in raw.strip()):
            raise ValueError("must be one word: it contains a space or line break")
        return raw.strip()

    @field_validator("collector_symbols")
    @classmethod
    def _binance_symbols(cls, value: str) -> str:
        symbols = [symbol.strip().upper() for symbol in value.split(",") if symbol.strip()]
        wrong = [symbol for symbol in symbols if not symbol.isascii() or not symbol.isalnum()]
        if not symbols or wrong:
            named = f" ({', '.join(map(repr, wrong))} is not one)" if wrong else ""
            raise ValueError(
                f"expected comma-separated Binance symbols such as BTCUSDT,ETHUSDT{named}"
            )
        return ",".join(symbols)

    @field_validator("collector_intervals")
    @classmethod
    def _binance_intervals(cls, value: str) -> str:
        intervals = [interval.strip() for interval in value.split(",") if interval.strip()]
        wrong = [interval for interval in intervals if interval not in INTERVALS]
        if not intervals or wrong:
            named = f" ({', '.join(map(repr, wrong))} is not one)" if wrong else ""
            raise ValueError(
                f"expected comma-separated Binance intervals from {', '.join(INTERVALS)}{named}"
            )
        return ",".join(intervals)

    @field_validator("trading_data_dir", mode="before")
    @classmethod
    def _blank_is_default_dir(cls, value: Any) -> Any:
        # TRADING_DATA_DIR= (blank) would otherwise mean the current folder.
        return Path(".trading") if isinstance(value, str) and not value.strip() else value

    @property
    def collector_series(self) -> list[tuple[str, str]]:
        """Every (symbol, interval) pair of COLLECTOR_SYMBOLS × COLLECTOR_INTERVALS: the
        series the data collector collects."""
        symbols = self.collector_symbols.split(",")
        intervals = self.collector_intervals.split(",")
        return [(symbol, interval) for symbol in symbols for interval in intervals]

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        # Telegram turns itself off without a token: an enabled notifier with no token
        # would only fill the logs with 404s.
        if self.telegram_enabled and not self.telegram_bot_token.get_secret_value():
            self.telegram_enabled = False
        if self.binance_testnet:
            if self.binance_base_url == BINANCE_REST_URL:
                self.binance_base_url = BINANCE_TESTNET_REST_URL
            if self.binance_ws_url == BINANCE_STREAM_URL:
                self.binance_ws_url = BINANCE_TESTNET_STREAM_URL
        return self


_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+")
_URL_FIELDS = frozenset({"database_url", "redis_url"})
_URL_PASSWORD = re.compile(r"(//[^/@:]*:)[^@/]*@")


def _shown(field: str, value: Any) -> str:
    """How a bad value is echoed: secrets not at all, URLs without their password."""
    if field in SECRET_FIELDS:
        return ""
    if field in _URL_FIELDS and isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\1***@", value)
    return f"={value!r}"


def _bounds(metadata: list[Any]) -> str:
    """The numeric limits a field's `Field(ge=..., le=...)` declares, in words."""
    limits: dict[str, Any] = {}
    for item in metadata:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(item, name, None) is not None:
                limits[name] = getattr(item, name)
    if "ge" in limits and "le" in limits:
        return f" from {limits['ge']} to {limits['le']}"
    words = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
    parts = [f"{words[name]} {value}" for name, value in limits.items()]
    return f" {' and '.join(parts)}" if parts else ""


def _describe(field: str, error: ErrorDetails) -> str:
    """Turn one pydantic error into 'what the variable accepts'."""
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '')}"
    if kind in {"bool_parsing", "bool_type"}:
        return "expected true or false"
    if kind == "value_error" and ctx.get("error") is not None:
        return str(ctx["error"])
    info = Settings.model_fields.get(field)
    if info is not None and info.annotation in (int, float, Decimal):
        noun = "a whole number" if info.annotation is int else "a number"
        return f"expected {noun}{_bounds(info.metadata)}"
    return str(error["msg"]).lower()


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; on a bad value raise `SettingsError` naming the variable.

    The value itself is echoed back to help the user, except secrets and URL passwords.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            shown = _shown(field, error.get("input"))
            lines.append(f"{field.upper()}{shown}: {_describe(field, error)}")
        raise SettingsError("Invalid setting " + "; ".join(lines)) from None
