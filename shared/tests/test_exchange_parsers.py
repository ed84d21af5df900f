"""Parsers and error mapping against Binance's documented messages (resources/binance)."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest
from shared.exchange import (
    ClockSkewError,
    ExchangeAuthError,
    FilterRejectedError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    TradingHaltedError,
    TransientExchangeError,
    classify_ccxt_error,
    parse_balances,
    parse_error_body,
    parse_order,
    parse_rest_kline,
    parse_ws_kline_event,
)
from shared.exchange.orders import order_with_trades, parse_my_trades
from shared.models import Order, OrderStatus, OrderType, Side

RESOURCES = Path(__file__).parent / "resources" / "binance"


def load(name: str) -> Any:
    return json.loads((RESOURCES / name).read_text())


def test_ws_kline_event_from_the_docs_parses_exactly_with_its_open_flag():
    candle = parse_ws_kline_event(load("ws_kline_event.json"))
    assert candle.symbol == "BNBBTC"
    assert candle.interval == "1m"
    assert candle.open_time == datetime(2022, 12, 31, 19, 43, tzinfo=UTC)
    assert candle.close_time == datetime.fromtimestamp(1672515839999 / 1000, tz=UTC)
    assert (candle.open, candle.high, candle.low, candle.close) == (
        Decimal("0.0010"),
        Decimal("0.0025"),
        Decimal("0.0015"),
        Decimal("0.0020"),
    )
    assert candle.volume == Decimal("1000")
    assert candle.quote_volume == Decimal("1.0000")
    assert candle.trades == 100
    assert candle.closed is False


def test_combined_stream_wrapper_and_final_update_give_a_closed_candle():
    event = load("ws_kline_event.json")
    event["k"]["x"] = True
    wrapped = {"stream": "bnbbtc@kline_1m", "data": event}
    candle = parse_ws_kline_event(wrapped)
    assert candle.closed is True
    assert candle == parse_ws_kline_event(event)


def test_ws_event_with_float_prices_is_refused_by_name():
    event = load("ws_kline_event.json")
    event["k"]["c"] = 0.002
    with pytest.raises(ValueError, match="'c' is a float"):
        parse_ws_kline_event(event)


def test_non_kline_event_is_refused():
    with pytest.raises(ValueError, match="not a kline event"):
        parse_ws_kline_event({"e": "trade", "E": 1})


def test_rest_kline_from_the_docs_is_a_weekly_candle_with_exact_decimals():
    [row] = load("rest_klines.json")
    candle = parse_rest_kline(row, "LTCBTC", "1w")
    assert candle.open_time == datetime(2017, 7, 3, tzinfo=UTC)
    assert candle.close == Decimal("0.01577100")
    assert str(candle.volume) == "148976.11427815"
    assert candle.quote_volume == Decimal("2434.19055334")
    assert candle.trades == 308
    assert candle.closed is True


def test_rest_kline_is_open_until_its_close_time_has_passed_on_the_exchange_clock():
    [row] = load("rest_klines.json")
    assert parse_rest_kline(row, "LTCBTC", "1w", now_ms=1499644799999).closed is False
    assert parse_rest_kline(row, "LTCBTC", "1w", now_ms=1499644800000).closed is True


def test_rest_kline_of_another_interval_is_refused():
    [row] = load("rest_klines.json")
    with pytest.raises(ValueError, match="wrong interval"):
        parse_rest_kline(row, "LTCBTC", "1d")


def test_full_order_response_gives_the_order_and_one_trade_per_fill():
    parsed = parse_order(load("order_full_response.json"), signal_id="s1", strategy="rsi")
    order = parsed.order
    assert order.client_order_id == "6gCrw2kRUAF9CvJDGP16IP"
    assert order.exchange_order_id == "28"
    assert (order.symbol, order.side, order.type) == ("BTCUSDT", Side.SELL, OrderType.MARKET)
    assert order.status is OrderStatus.FILLED
    assert order.quantity == order.filled_quantity == Decimal("10")
    assert order.price is None  # a market order's "0.00000000" is not a price
    # The fills are worth 39983 (the docs' cummulativeQuoteQty of 10 is inconsistent).
    assert order.avg_fill_price == Decimal("3998.3")
    assert order.fee == Decimal("39.98300000")
    assert order.fee_asset == "USDT"
    assert (order.signal_id, order.strategy) == ("s1", "rsi")
    assert order.created_at == datetime.fromtimestamp(1507725176.595, tz=UTC)
    assert [t.trade_id for t in parsed.trades] == ["56", "57", "58", "59", "60"]
    assert parsed.trades[1].quantity == Decimal("5.00000000")
    assert parsed.trades[1].fee == Decimal("19.99500000")
    assert {t.client_order_id for t in parsed.trades} == {order.client_order_id}


def test_query_order_response_is_an_open_limit_order_without_fills():
    parsed = parse_order(load("order_query_response.json"))
    assert parsed.trades == ()
    assert parsed.order.status is OrderStatus.SENT
    assert parsed.order.price == Decimal("0.1")
    assert parsed.order.filled_quantity == 0
    assert parsed.order.avg_fill_price is None


def test_cancel_response_keeps_our_client_order_id_not_the_cancel_id():
    order = parse_order(load("order_cancel_response.json")).order
    assert order.client_order_id == "myOrder1"
    assert order.status is OrderStatus.CANCELED


def test_account_balances_are_exact_decimals():
    balances = parse_balances(load("account_response.json"))
    assert set(balances) == {"BTC", "LTC"}
    assert balances["BTC"].free == Decimal("4723846.89208129")
    assert balances["LTC"].total == Decimal("4763368.68006011")


def test_error_bodies_parse_and_a_non_error_is_refused():
    bodies = load("error_bodies.json")
    assert parse_error_body(json.dumps(bodies["invalid_symbol"])).code == -1121
    with pytest.raises(ValueError):
        parse_error_body('{"serverTime": 1}')


@functools.cache
def _ccxt_binance() -> Any:
    # Building ccxt's binance takes about a second: build it once for the module.
    ex = ccxt.binance()
    ex.exceptions["exact"].update(ex.exceptions["spot"]["exact"])
    return ex


def _ccxt_error(http_status: int, body: dict[str, Any]) -> tuple[BaseException, str]:
    """What ccxt raises for this Binance answer (its real handle_errors, no network)."""
    ex = _ccxt_binance()
    text = json.dumps(body)
    try:
        ex.handle_errors(
            http_status,
            "reason",
            "http://127.0.0.1:1/api/v3/order",
            "POST",
            {},
            text,
            body,
            {},
            "",
        )
        ex.handle_http_status_code(http_status, "reason", "http://127.0.0.1:1/", "POST", text)
    except ccxt.BaseError as exc:
        return exc, text
    raise AssertionError(f"ccxt raised nothing for {http_status} {body}")


def _with_headers(
    raised: tuple[BaseException, str], headers: dict[str, str] | None
) -> tuple[BaseException, dict[str, str] | None, str]:
    return raised[0], headers, raised[1]


@pytest.mark.parametrize(
    ("name", "status", "kind"),
    [
        ("filter_notional", 400, FilterRejectedError),
        ("filter_lot_size", 400, FilterRejectedError),
        ("insufficient_balance", 400, OrderRejectedError),
        ("invalid_symbol", 400, OrderRejectedError),
        ("timestamp_outside_recv_window", 400, ClockSkewError),
        ("invalid_signature", 400, ExchangeAuthError),
        ("invalid_api_key", 401, ExchangeAuthError),
        ("execution_status_unknown", 503, TransientExchangeError),
        ("unknown", 500, TransientExchangeError),
        ("order_does_not_exist", 400, OrderNotFoundError),
        ("unknown_order_sent", 400, OrderNotFoundError),
        ("too_much_weight", 429, RateLimitedError),
    ],
)
def test_binance_errors_map_to_the_kind_the_platform_acts_on(name, status, kind):
    body = load("error_bodies.json")[name]
    error = classify_ccxt_error(*_with_headers(_ccxt_error(status, body), {"Retry-After": "7"}))
    assert type(error) is kind
    assert error.code == body["code"]
    assert error.reason == body["msg"]
    assert body["msg"] in str(error)


def test_filter_failure_keeps_the_filter_name():
    body = load("error_bodies.json")["filter_notional"]
    error = classify_ccxt_error(*_with_headers(_ccxt_error(400, body), None))
    assert isinstance(error, FilterRejectedError)
    assert error.filter_name == "NOTIONAL"


def test_429_carries_retry_after_and_418_halts_trading():
    body = load("error_bodies.json")["too_much_weight"]
    limited = classify_ccxt_error(*_with_headers(_ccxt_error(429, body), {"retry-after": "3"}))
    assert isinstance(limited, RateLimitedError)
    assert limited.retry_after == 3.0
    banned = classify_ccxt_error(*_with_headers(_ccxt_error(418, body), {"Retry-After": "120"}))
    assert isinstance(banned, TradingHaltedError)
    assert banned.retry_after == 120.0


def test_network_errors_are_transient_and_their_message_drops_the_signed_query():
    exc = ccxt.ExchangeNotAvailable(
        "binance GET http://127.0.0.1:1/api/v3/account?timestamp=1&signature=abcdef"
    )
    error = classify_ccxt_error(exc)
    assert isinstance(error, TransientExchangeError)
    assert "signature" not in str(error)
    assert "/api/v3/account" in str(error)


# Binance's documented GET /api/v3/myTrades answer (spot API docs, "Account trade list").
MY_TRADES_DOC = """[{"symbol": "BNBBTC", "id": 28457, "orderId": 100234, "orderListId": -1,
  "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
  "commission": "10.10000000", "commissionAsset": "BNB", "time": 1499865549590,
  "isBuyer": true, "isMaker": false, "isBestMatch": true}]"""


def _queried_order(exchange_order_id: str = "100234") -> Order:
    at = datetime(2017, 7, 12, tzinfo=UTC)
    return Order(
        client_order_id="recovered-1",
        symbol="BNBBTC",
        side=Side.BUY,
        type=OrderType.MARKET,
        quantity=Decimal(12),
        status=OrderStatus.FILLED,
        filled_quantity=Decimal(12),
        exchange_order_id=exchange_order_id,
        created_at=at,
        updated_at=at,
    )


def test_my_trades_from_the_docs_become_exact_trades_of_the_order():
    order = _queried_order()
    [trade] = parse_my_trades(json.loads(MY_TRADES_DOC), order)
    assert trade.trade_id == "28457" and trade.client_order_id == "recovered-1"
    assert (trade.symbol, trade.side, trade.fee_asset) == ("BNBBTC", Side.BUY, "BNB")
    assert (trade.price, trade.quantity, trade.fee) == (
        Decimal("4.00000100"),
        Decimal("12.00000000"),
        Decimal("10.10000000"),
    )
    assert trade.time == datetime(2017, 7, 12, 13, 19, 9, 590000, tzinfo=UTC)
    completed = order_with_trades(order, [trade])
    assert (completed.fee, completed.fee_asset) == (Decimal("10.1"), "BNB")
    assert completed.avg_fill_price == Decimal("4.000001")
    assert parse_my_trades(json.loads(MY_TRADES_DOC), _queried_order("999")) == ()


def test_my_trades_with_floats_or_missing_fields_are_refused_by_name():
    row = json.loads(MY_TRADES_DOC)[0]
    with pytest.raises(ValueError, match="'commission' is a float"):
        parse_my_trades([{**row, "commission": 10.1}], _queried_order())
    without_price = {k: v for k, v in row.items() if k != "price"}
    with pytest.raises(ValueError, match="missing field 'price'"):
        parse_my_trades([without_price], _queried_order())


def test_fees_in_several_assets_are_not_added_up():
    order = _queried_order()
    [trade] = parse_my_trades(json.loads(MY_TRADES_DOC), order)
    other = trade.model_copy(update={"trade_id": "28458", "fee_asset": "BTC"})
    completed = order_with_trades(order, [trade, other])
    assert (completed.fee, completed.fee_asset) == (Decimal(0), None)
    assert order_with_trades(order, []) is order
