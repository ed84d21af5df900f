"""The few kinds of exchange error the platform acts on, and the mapping from ccxt's.

| kind | what the caller does |
|---|---|
| `TransientExchangeError` | retried with backoff under the breaker (network, timeout, 5xx, -1007) |
| `RateLimitedError` | wait ``retry_after`` seconds (HTTP 429, -1003), then retry |
| `TradingHaltedError` | HTTP 418 (IP banned): stop trading and alert |
| `OrderRejectedError` | not retried; Binance's code and reason are kept (filters, funds) |
| `ExchangeAuthError` | stop and alert (-1022, -2014, -2015) |
| `ClockSkewError` | resync the time offset, then retry once (-1021) |
| `OrderNotFoundError` | the order does not exist (-2013, -2011) |

Every error carries Binance's ``code`` and ``reason`` when the exchange sent them; no message
ever contains the API key or secret (ccxt's messages hold the URL and response body only,
and we strip the query string, which holds the signature).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

import ccxt.async_support as ccxt

from shared.exchange.parsers import BinanceErrorBody, parse_error_body

__all__ = [
    "ClockSkewError",
    "ExchangeAuthError",
    "ExchangeError",
    "FilterRejectedError",
    "OrderNotFoundError",
    "OrderRejectedError",
    "RateLimitedError",
    "TradingHaltedError",
    "TransientExchangeError",
    "classify_ccxt_error",
    "retry_after_seconds",
]


class ExchangeError(Exception):
    """Base of every error the adapter raises; ``code``/``reason`` are Binance's when known."""

    def __init__(self, message: str, *, code: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason


class TransientExchangeError(ExchangeError):
    """Worth retrying: the connection dropped, timed out, or the exchange had a 5xx/-1007.

    On an order create the outcome is unknown: the order may exist (BINANCE.md pitfall 1).
    """


class RateLimitedError(ExchangeError):
    """HTTP 429 / -1003: wait ``retry_after`` seconds (None when the exchange gave none)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        code: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason)
        self.retry_after = retry_after


class TradingHaltedError(ExchangeError):
    """HTTP 418: the IP is banned for ``retry_after`` seconds; trading stops until a restart."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        code: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason)
        self.retry_after = retry_after


class OrderRejectedError(ExchangeError):
    """The exchange (or our pre-check of its rules) refused the order; never retried."""


class FilterRejectedError(OrderRejectedError):
    """An order broke a symbol filter (``filter_name``: NOTIONAL, LOT_SIZE, PRICE_FILTER...).

    ``nearest_valid_quantity`` is the closest quantity the filter would accept at that price,
    when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        filter_name: str,
        nearest_valid_quantity: Decimal | None = None,
        code: int | None = -1013,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason or f"Filter failure: {filter_name}")
        self.filter_name = filter_name
        self.nearest_valid_quantity = nearest_valid_quantity


class ExchangeAuthError(ExchangeError):
    """The API key or signature was refused; retrying cannot help: stop and alert."""


class ClockSkewError(ExchangeError):
    """-1021: our timestamp is outside the exchange's recvWindow (resync the time offset)."""


class OrderNotFoundError(ExchangeError):
    """The exchange knows no such order (-2013 on query, -2011 on cancel)."""


_QUERY = re.compile(r"\?\S*")
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The ``Retry-After`` header in seconds (case-insensitive), or None if absent or bad."""
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(float(value), 0.0)
            except (TypeError, ValueError):
                return None
    return None


def _parse(text: str | None) -> BinanceErrorBody | None:
    match = _JSON_OBJECT.search(text or "")
    if match is None:
        return None
    try:
        return parse_error_body(match.group(0))
    except ValueError:
        return None


def _body_of(exc: BaseException, last_body: str | None) -> BinanceErrorBody | None:
    body = _parse(str(exc))
    if body is not None:
        return body
    # ccxt's message holds only Binance's "msg" when it matched on the message text; the
    # last response body gives the code back, if it is that same answer (a concurrent
    # request may have replaced it).
    body = _parse(last_body)
    if body is not None and body.msg and body.msg in str(exc):
        return body
    return None


def _describe(exc: BaseException, body: BinanceErrorBody | None) -> str:
    if body is not None:
        return f"Binance error {body.code}: {body.msg}"
    # ccxt puts "binance GET https://host/path?query..." in network errors: keep the path,
    # drop the query (it holds the signature and timestamp).
    return f"{type(exc).__name__}: {_QUERY.sub('', str(exc))}"


def classify_ccxt_error(
    exc: BaseException,
    headers: Mapping[str, str] | None = None,
    last_body: str | None = None,
) -> ExchangeError:
    """Map a ccxt exception to our kinds; ``headers`` give Retry-After, ``last_body`` (ccxt's
    ``last_http_response``) Binance's code when ccxt's message kept only the text."""
    body = _body_of(exc, last_body)
    code = body.code if body else None
    reason = body.msg if body else None
    text = _describe(exc, body)
    status = _http_status(exc)
    if isinstance(exc, ccxt.DDoSProtection) or code == -1003:
        wait = retry_after_seconds(headers)
        if status == 418 or " 418 " in str(exc):
            return TradingHaltedError(
                f"Binance banned this IP (HTTP 418) for {wait if wait is not None else '?'}s; "
                f"trading is halted. {text}",
                retry_after=wait,
                code=code,
                reason=reason,
            )
        return RateLimitedError(
            f"Rate limited by Binance; retry after {wait if wait is not None else '?'}s. {text}",
            retry_after=wait,
            code=code,
            reason=reason,
        )
    if code == -1021 or isinstance(exc, ccxt.InvalidNonce):
        return ClockSkewError(text, code=code, reason=reason)
    if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied) or code in _AUTH_CODES:
        return ExchangeAuthError(text, code=code, reason=reason)
    if isinstance(exc, ccxt.OrderNotFound) or code in (-2013, -2011):
        return OrderNotFoundError(text, code=code, reason=reason)
    if (
        code == -1007
        or isinstance(exc, ccxt.NetworkError | ccxt.OperationFailed | ccxt.ExchangeNotAvailable)
        or (code is not None and code in _TRANSIENT_CODES)
    ):
        return TransientExchangeError(text, code=code, reason=reason)
    if code == -1013 and reason and reason.startswith("Filter failure: "):
        return FilterRejectedError(
            text, filter_name=reason.removeprefix("Filter failure: ").strip(), reason=reason
        )
    if isinstance(exc, ccxt.InsufficientFunds | ccxt.InvalidOrder | ccxt.BadRequest) or code in (
        -2010,
        -1013,
        -1111,
        -1121,
    ):
        return OrderRejectedError(text, code=code, reason=reason)
    if isinstance(exc, ccxt.BaseError) and status is not None and status >= 500:
        return TransientExchangeError(text, code=code, reason=reason)
    return ExchangeError(text, code=code, reason=reason)


_AUTH_CODES = frozenset({-1002, -1022, -2014, -2015})
_TRANSIENT_CODES = frozenset({-1000, -1001, -1006, -1007, -1008, -1016})
_STATUS = re.compile(r"\b([1-5]\d\d)\b")


def _http_status(exc: BaseException) -> int | None:
    # ccxt's DDoSProtection message is "binance 429 Too Many Requests {...}".
    text = str(exc)
    if isinstance(exc, ccxt.DDoSProtection):
        found = _STATUS.search(text)
        return int(found.group(1)) if found else None
    return None
