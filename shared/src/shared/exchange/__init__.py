"""The only code that talks to Binance: REST through ccxt, klines over our WebSocket consumer.

- `BinanceExchange` (client.py): spot REST through ``ccxt.async_support.binance``.
- `KlineStream` (kline_stream.py): the combined kline stream, with reconnects.
- errors.py: the typed error kinds; parsers.py: Binance JSON → `shared.models`;
  filters.py: the NOTIONAL/LOT_SIZE/PRICE_FILTER checks; orders.py: `OrderRequest`/`OrderResult`;
  client_order_id.py.
"""

from shared.exchange.client import AlertCallback, BinanceExchange
from shared.exchange.client_order_id import client_order_id_for_signal, is_valid_client_order_id
from shared.exchange.errors import (
    ClockSkewError,
    ExchangeAuthError,
    ExchangeError,
    FilterRejectedError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    TradingHaltedError,
    TransientExchangeError,
    classify_ccxt_error,
)
from shared.exchange.filters import SymbolFilters, check_order
from shared.exchange.kline_stream import ConnectionState, KlineStream, Reconnect
from shared.exchange.orders import OrderRequest, OrderResult
from shared.exchange.parsers import (
    AssetBalance,
    BinanceErrorBody,
    ParsedOrder,
    parse_balances,
    parse_error_body,
    parse_order,
    parse_rest_kline,
    parse_ws_kline_event,
)

__all__ = [
    "AlertCallback",
    "AssetBalance",
    "BinanceErrorBody",
    "BinanceExchange",
    "ClockSkewError",
    "ConnectionState",
    "ExchangeAuthError",
    "ExchangeError",
    "FilterRejectedError",
    "KlineStream",
    "OrderNotFoundError",
    "OrderRejectedError",
    "OrderRequest",
    "OrderResult",
    "ParsedOrder",
    "RateLimitedError",
    "Reconnect",
    "SymbolFilters",
    "TradingHaltedError",
    "TransientExchangeError",
    "check_order",
    "classify_ccxt_error",
    "client_order_id_for_signal",
    "is_valid_client_order_id",
    "parse_balances",
    "parse_error_body",
    "parse_order",
    "parse_rest_kline",
    "parse_ws_kline_event",
]
