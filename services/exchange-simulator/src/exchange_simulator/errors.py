"""Binance's error answers: `{"code": -NNNN, "msg": "..."}` with the HTTP status Binance uses.

Handlers raise `BinanceError`; the middleware turns it into the JSON body. The messages are
Binance's own texts, because ccxt matches some of them exactly (e.g. -2010's
"Account has insufficient balance for requested action." becomes `InsufficientFunds`).
"""

from __future__ import annotations

DECIMAL_PATTERN = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"


class BinanceError(Exception):
    """An error answer: HTTP `status` with body `{"code": code, "msg": msg}`."""

    def __init__(
        self, code: int, msg: str, status: int = 400, retry_after: int | None = None
    ) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.retry_after = retry_after  # seconds, sent as Retry-After (429/418)

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def unknown_error() -> BinanceError:
    return BinanceError(-1000, "An unknown error occurred while processing the request.", 500)


def execution_unknown() -> BinanceError:
    return BinanceError(
        -1007,
        "Timeout waiting for response from backend server. "
        "Send status unknown; execution status unknown.",
        408,
    )


def mandatory(name: str) -> BinanceError:
    return BinanceError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def either_mandatory(first: str, second: str) -> BinanceError:
    return BinanceError(
        -1102, f"Param '{first}' or '{second}' must be sent, but both were empty/null!"
    )


def illegal_characters(name: str) -> BinanceError:
    return BinanceError(
        -1100,
        f"Illegal characters found in parameter '{name}'; legal range is '{DECIMAL_PATTERN}'.",
    )


def illegal_integer(name: str) -> BinanceError:
    return BinanceError(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
    )


def not_required(name: str) -> BinanceError:
    return BinanceError(-1106, f"Parameter '{name}' sent when not required.")


def duplicate_parameter() -> BinanceError:
    return BinanceError(-1101, "Duplicate values for a parameter detected.")


def invalid_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def invalid_interval() -> BinanceError:
    return BinanceError(-1120, "Invalid interval.")


def filter_failure(name: str) -> BinanceError:
    return BinanceError(-1013, f"Filter failure: {name}")


def insufficient_balance() -> BinanceError:
    return BinanceError(-2010, "Account has insufficient balance for requested action.")


def duplicate_order() -> BinanceError:
    return BinanceError(-2010, "Duplicate order sent.")


def order_does_not_exist() -> BinanceError:
    return BinanceError(-2013, "Order does not exist.")


def unknown_order() -> BinanceError:
    return BinanceError(-2011, "Unknown order sent.")


def api_key_format_invalid() -> BinanceError:
    return BinanceError(-2014, "API-key format invalid.", 401)


def invalid_api_key() -> BinanceError:
    return BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def bad_signature() -> BinanceError:
    return BinanceError(-1022, "Signature for this request is not valid.")


def timestamp_outside_window() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def timestamp_ahead() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def recv_window_too_large() -> BinanceError:
    return BinanceError(-1131, "recvWindow must be less than 60000")


def too_much_weight(limit: int) -> BinanceError:
    return BinanceError(
        -1003,
        f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API.",
        429,
    )


def banned(until_ms: int) -> BinanceError:
    return BinanceError(
        -1003,
        f"Way too much request weight used; IP banned until {until_ms}. "
        "Please use WebSocket Streams for live updates to avoid bans.",
        418,
    )
