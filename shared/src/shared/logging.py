"""Structured logging for every service (spec 1.2).

`setup_logging` configures structlog and the standard library's root logger to share one
processor chain, so records from aiohttp, SQLAlchemy, Alembic, ccxt and asyncio come out in
the same format as our own ``structlog.get_logger().info("event", key=value)`` lines:

    filter by level → contextvars → level, logger name → ISO-8601 UTC timestamp → service
    → count errors → exception text → redact secrets → hand ERROR+ to the notifier → render

``LOG_FORMAT=json`` (default) renders one JSON object per line; ``console`` renders
structlog's ConsoleRenderer (coloured on a terminal, or with FORCE_COLOR set).

Redaction runs after exceptions are turned into text and before anything leaves the
process (stdout or Telegram): every configured secret (API key and secret, bot token) is
replaced wherever it appears in any string of the event, including URLs such as
``/bot<token>/sendMessage`` and exception messages, and so is the password of any
``scheme://user:password@host`` URL. Values of fields named like credentials (``password``,
``api_secret``, ...) are masked whatever they contain.

An event at ERROR or above is handed to ``notifier.send_error`` (enqueue only; it never
blocks the caller). Events logged by the notifier itself, or while handing one over, are
not handed over again, so a failing notifier cannot loop.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from shared.metrics import ERRORS_TOTAL

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.notifier import TelegramNotifier

REDACTED = "***"

ROUTED_STDLIB_LOGGERS = ("aiohttp", "sqlalchemy", "alembic", "ccxt", "asyncio", "redis")
"""Third-party loggers whose own handlers are removed so they go through our chain."""

_CREDENTIAL_FIELDS = frozenset(
    {
        "password", "passwd", "secret", "api_key", "api_secret", "apikey", "token",
        "bot_token", "authorization", "binance_api_key", "binance_api_secret",
        "telegram_bot_token",
    }
)  # fmt: skip
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_ERROR_LEVELS = frozenset({"error", "critical", "exception", "fatal"})
_CONTEXT_FIELDS = frozenset({"timestamp", "level", "service", "logger", "event", "exception"})

_handing_over: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "logging_handing_over_to_notifier", default=False
)


class SecretRedactor:
    """A structlog processor that masks secrets anywhere in an event. See the module docs."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {s for s in secrets if s and s.strip()}
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(unique, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact_text(self, text: str) -> str:
        """``text`` with secrets and URL passwords masked."""
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return _URL_PASSWORD.sub(rf"\g<prefix>:{REDACTED}@", text)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in list(event_dict.items()):
            if key.startswith("_"):
                continue  # structlog's own bookkeeping (the LogRecord), removed before render
            if key.lower() in _CREDENTIAL_FIELDS and value not in (None, ""):
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._redact(value)
        return event_dict

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {
                self._redact(k): REDACTED
                if isinstance(k, str) and k.lower() in _CREDENTIAL_FIELDS
                else self._redact(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(self._redact(v) for v in value)
        # Anything else is rendered with repr/str later; mask it now if that would leak.
        shown = repr(value)
        masked = self.redact_text(shown)
        return value if masked == shown else masked


class ErrorNotifier:
    """A structlog processor that hands ERROR-and-above events to ``notifier.send_error``."""

    def __init__(self, notifier: TelegramNotifier, service: str) -> None:
        self.notifier = notifier
        self.service = service

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        from shared.notifier import in_notifier_context

        level = str(event_dict.get("level", method_name)).lower()
        if level not in _ERROR_LEVELS or in_notifier_context() or _handing_over.get():
            return event_dict
        token = _handing_over.set(True)
        try:
            self.notifier.send_error(describe_event(event_dict), self.service)
        except Exception:  # a notifier problem must never break the caller's logging
            pass
        finally:
            _handing_over.reset(token)
        return event_dict


def describe_event(event_dict: EventDict) -> str:
    """The event as alert text: its name, its own fields, and the exception if any."""
    fields = " ".join(
        f"{key}={value}"
        for key, value in event_dict.items()
        if key not in _CONTEXT_FIELDS and not key.startswith("_")
    )
    text = str(event_dict.get("event", ""))
    if fields:
        text = f"{text} {fields}"
    exception = event_dict.get("exception")
    if exception:
        text = f"{text}\n{exception}"
    return text


def _count_errors(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    level = str(event_dict.get("level", method_name)).lower()
    if level in _ERROR_LEVELS:
        ERRORS_TOTAL.labels(
            service=str(event_dict.get("service", "")), error_type=_error_type(event_dict)
        ).inc()
    return event_dict


def _error_type(event_dict: EventDict) -> str:
    named = event_dict.get("error_type")
    if isinstance(named, str) and named:
        return named
    exc_info = event_dict.get("exc_info")
    if isinstance(exc_info, BaseException):
        return type(exc_info).__name__
    if isinstance(exc_info, tuple) and exc_info and exc_info[0] is not None:
        return str(exc_info[0].__name__)
    if exc_info is True:
        current = sys.exc_info()[0]
        if current is not None:
            return current.__name__
    return "logged_error"


def _add_service(service_name: str) -> Processor:
    def add_service(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service_name)
        return event_dict

    return add_service


def _wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `setup_logging` installed, so a second call replaces it."""


def setup_logging(
    service_name: str,
    log_level: str = "INFO",
    *,
    log_format: str = "json",
    notifier: TelegramNotifier | None = None,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and stdlib logging for a service (idempotent; call again freely).

    ``secrets`` are masked wherever they appear (the notifier's bot token is added
    automatically); ERROR-and-above events go to ``notifier.send_error`` when a notifier is
    given. ``stream`` defaults to stdout.
    """
    level = logging.getLevelName(log_level.strip().upper())
    if not isinstance(level, int):
        raise ValueError(
            f"LOG_LEVEL={log_level!r} is not a level: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    fmt = log_format.strip().lower()
    if fmt not in {"json", "console"}:
        raise ValueError(f"LOG_FORMAT={log_format!r} is not a format: use json or console")
    out = stream if stream is not None else sys.stdout

    all_secrets = list(secrets)
    if notifier is not None:
        all_secrets.append(notifier.bot_token)

    chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service_name),
        structlog.stdlib.PositionalArgumentsFormatter(),
        _count_errors,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        SecretRedactor(all_secrets),
    ]
    if notifier is not None:
        chain.append(ErrorNotifier(notifier, service_name))

    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_wants_colour(out))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *chain,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a later setup_logging (tests, reconfiguration) must take effect
        # on loggers that modules created at import time.
        cache_logger_on_first_use=False,
    )

    handler = _OurHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=chain,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ROUTED_STDLIB_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True


def setup_logging_from_settings(
    service_name: str, settings: Settings, *, notifier: TelegramNotifier | None = None
) -> None:
    """`setup_logging` with LOG_LEVEL, LOG_FORMAT and the secrets of ``settings``."""
    setup_logging(
        service_name,
        settings.log_level,
        log_format=settings.log_format,
        notifier=notifier,
        secrets=[
            settings.binance_api_key.get_secret_value(),
            settings.binance_api_secret.get_secret_value(),
            settings.telegram_bot_token.get_secret_value(),
        ],
    )
