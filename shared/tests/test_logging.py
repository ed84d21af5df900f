"""setup_logging: the JSON/console format, stdlib routing, redaction and ERROR → Telegram."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import aiohttp
import pytest
import structlog
from shared.logging import setup_logging, setup_logging_from_settings
from shared.metrics import REGISTRY
from shared.notifier import TelegramNotifier
from shared.testing.telegram_standin import TelegramStandIn
from shared.testing.virtual_time import VirtualTime

TOKEN = "555000:BOT-token-must-stay-hidden"
API_KEY = "binance-key-AbC123xyz"
API_SECRET = "binance-secret-Zz9Yy8Xx7"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _json_lines(out: io.StringIO) -> list[dict[str, object]]:
    lines = out.getvalue().splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # fails unless every line is one JSON object


def test_json_output_is_one_object_per_line_with_service_level_timestamp_event() -> None:
    out = io.StringIO()
    setup_logging("strategy-engine", "INFO", stream=out)
    log = structlog.get_logger().bind(symbol="BTCUSDT")
    log.info("signal_generated", strategy="rsi", side="BUY", price=Decimal("68500.5"))
    log.debug("not_shown")
    log.warning("multi\nline", detail="a\nb")
    try:
        raise ValueError("bad candle")
    except ValueError:
        log.exception("candle_rejected")
    logging.getLogger("aiohttp.client").info("connected to %s", "127.0.0.1")

    events = _json_lines(out)
    assert [e["event"] for e in events] == [
        "signal_generated",
        "multi\nline",
        "candle_rejected",
        "connected to 127.0.0.1",
    ]
    for event in events:
        assert event["service"] == "strategy-engine"
        stamp = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
        assert stamp.utcoffset() == timedelta(0)
    assert [e["level"] for e in events] == ["info", "warning", "error", "info"]
    assert events[0]["symbol"] == "BTCUSDT" and events[0]["price"] == "68500.5"
    assert "ValueError: bad candle" in str(events[2]["exception"])
    assert events[3]["logger"] == "aiohttp.client"


def test_console_format_renders_readable_lines_through_the_same_chain() -> None:
    out = io.StringIO()
    setup_logging("collector", "debug", log_format="CONSOLE", stream=out)
    structlog.get_logger().info("candle_stored", symbol="ETHUSDT")
    logging.getLogger("sqlalchemy.engine").warning("pool exhausted")
    text = out.getvalue()
    assert "candle_stored" in text and "symbol=ETHUSDT" in text and "service=collector" in text
    assert "pool exhausted" in text
    assert "\x1b[" not in text  # no colour codes when the stream is not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_setup_logging_is_idempotent() -> None:
    out1, out2 = io.StringIO(), io.StringIO()
    setup_logging("svc", stream=out1)
    setup_logging("svc", stream=out2)
    structlog.get_logger().info("once")
    assert out1.getvalue() == ""
    assert len(_json_lines(out2)) == 1


def test_bad_level_or_format_is_refused_with_the_variable_named() -> None:
    with pytest.raises(ValueError, match="LOG_LEVEL='LOUD'"):
        setup_logging("svc", "LOUD")
    with pytest.raises(ValueError, match=r"LOG_FORMAT='xml'.*json or console"):
        setup_logging("svc", log_format="xml")


def test_secrets_are_redacted_in_fields_urls_exceptions_and_stdlib_records() -> None:
    out = io.StringIO()
    setup_logging("order-executor", stream=out, secrets=[API_KEY, API_SECRET, TOKEN, ""])
    log = structlog.get_logger()
    log.info("as_a_field", key=API_KEY, nested={"list": [API_SECRET], "ok": 1})
    log.info("in_a_url", url=f"https://api.telegram.org/bot{TOKEN}/sendMessage")
    log.info(
        "url_password",
        database="postgresql+asyncpg://trading:hunter2@db:5432/trading",
        redis="redis://:s3cret@127.0.0.1:6379/0",
    )
    log.info("credential_named_field", password="whatever-it-is")
    log.info("in_an_object", error=ConnectionError(f"key {API_KEY} refused"))
    try:
        raise RuntimeError(f"POST https://api.telegram.org/bot{TOKEN}/sendMessage failed")
    except RuntimeError:
        log.exception("in_an_exception")
    logging.getLogger("ccxt").warning("signed request with %s", API_SECRET)

    text = out.getvalue()
    for secret in (API_KEY, API_SECRET, TOKEN, "hunter2", "s3cret", "whatever-it-is"):
        assert secret not in text, secret
    events = {e["event"]: e for e in _json_lines(out)}
    assert events["as_a_field"]["key"] == "***"
    assert events["in_a_url"]["url"] == "https://api.telegram.org/bot***/sendMessage"
    assert events["url_password"]["database"] == "postgresql+asyncpg://trading:***@db:5432/trading"
    assert events["in_an_object"]["error"] == "ConnectionError('key *** refused')"
    assert "RuntimeError: POST https://api.telegram.org/bot***/sendMessage" in str(
        events["in_an_exception"]["exception"]
    )
    assert events["signed request with ***"]["logger"] == "ccxt"


def test_settings_secrets_are_redacted() -> None:
    from shared.config import load_settings

    out = io.StringIO()
    settings = load_settings(binance_api_key=API_KEY, binance_api_secret=API_SECRET)
    setup_logging_from_settings("svc", settings)
    # setup_logging_from_settings writes to stdout; point the handler at our buffer instead
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and type(handler).__name__ == "_OurHandler":
            handler.setStream(out)
    structlog.get_logger().info("keys", a=API_KEY, b=API_SECRET)
    assert API_KEY not in out.getvalue() and API_SECRET not in out.getvalue()


def _notifier(api_url: str) -> TelegramNotifier:
    time = VirtualTime()
    return TelegramNotifier(TOKEN, "1", api_url=api_url, clock=time.now, sleep=time.sleep)


def _errors_counted(service: str, error_type: str) -> float:
    labels = {"service": service, "error_type": error_type}
    return REGISTRY.get_sample_value("errors_total", labels) or 0.0


async def test_an_error_log_produces_exactly_one_telegram_message() -> None:
    out = io.StringIO()
    async with TelegramStandIn(token=TOKEN) as standin:
        notifier = _notifier(standin.api_url)
        setup_logging("portfolio-manager", stream=out, notifier=notifier)
        before = _errors_counted("portfolio-manager", "KeyError")
        await notifier.start()
        log = structlog.get_logger()
        log.info("not_an_alert")
        log.warning("not_an_alert_either")
        try:
            {}["BTCUSDT"]
        except KeyError:
            log.exception("position_lookup_failed", symbol="BTCUSDT")
        await standin.wait_for_messages(1)
        await notifier.close()
    [message] = standin.requests
    assert "position_lookup_failed symbol=BTCUSDT" in message.text
    assert "KeyError" in message.text and "portfolio-manager" in message.text
    assert _errors_counted("portfolio-manager", "KeyError") == before + 1


async def test_a_failing_notifier_logging_its_own_error_does_not_recurse() -> None:
    out = io.StringIO()
    async with TelegramStandIn(token=TOKEN) as standin:
        standin.fail_next(1, status=403)
        notifier = _notifier(standin.api_url)
        setup_logging("svc", stream=out, notifier=notifier)
        await notifier.start()
        structlog.get_logger().error("first_failure")  # answered 403: the notifier logs ERROR
        await standin.wait_for_requests(1)
        logging.getLogger("alembic").error("second_failure from stdlib")
        await standin.wait_for_messages(1)
        await notifier.close()
    assert [(r.status, r.text.split("\n")[1]) for r in standin.requests] == [
        (403, "<pre>first_failure</pre>"),
        (200, "<pre>second_failure from stdlib</pre>"),
    ]
    rejected = [e for e in _json_lines(out) if e["event"] == "telegram_message_rejected"]
    assert len(rejected) == 1 and rejected[0]["level"] == "error"


async def test_the_bot_token_is_in_no_log_line_even_from_aiohttps_access_log() -> None:
    out = io.StringIO()
    async with TelegramStandIn(access_log=True) as standin:
        notifier = _notifier(standin.api_url)
        # No secrets listed: the notifier's token is masked because the notifier is given.
        setup_logging("svc", "DEBUG", stream=out, notifier=notifier)
        await notifier.start()
        standin.fail_next(1, status=500)
        notifier.send("hello")
        await standin.wait_for_messages(1)
        async with aiohttp.ClientSession() as session:  # a bad URL: aiohttp's own error
            with pytest.raises(aiohttp.ClientError) as failure:
                await session.get(f"{standin.api_url}:bad/bot{TOKEN}/x")
            structlog.get_logger().error("request_failed", error=str(failure.value))
        await notifier.close()
    text = out.getvalue()
    assert "POST /bot***/sendMessage" in text  # aiohttp.access lines went through redaction
    assert TOKEN not in text
    assert all(TOKEN not in r.text for r in standin.requests)  # nor in the alert itself
