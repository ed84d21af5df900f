"""Binance's request signing: HMAC-SHA256 over the query string and the body, concatenated.

`signature = hex(HMAC_SHA256(secret, query_string + body))` with no `&` between the two and
the `signature` pair itself left out (BINANCE.md, "Signing"). The timestamp is accepted when
`timestamp < server_time + 1000` and `server_time - timestamp <= recvWindow`.
"""

from __future__ import annotations

import hashlib
import hmac

from exchange_simulator import errors

DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60000
MAX_AHEAD_MS = 1000


def sign(secret: str, payload: str) -> str:
    """The hex HMAC-SHA256 of `payload` under `secret`, as Binance computes it."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def without_signature(raw: str) -> str:
    """`raw` (a query string or form body) with its `signature=...` pair removed, as sent."""
    if "signature=" not in raw:
        return raw
    return "&".join(pair for pair in raw.split("&") if not pair.startswith("signature="))


def signed_payload(query_string: str, body: str) -> str:
    """The exact text Binance signs: query string then body, signature left out."""
    return without_signature(query_string) + without_signature(body)


def verify(secret: str, query_string: str, body: str, signature: str) -> None:
    """Raise -1022 unless `signature` is the HMAC of the request under `secret`."""
    expected = sign(secret, signed_payload(query_string, body))
    if not hmac.compare_digest(expected, signature.lower()):
        raise errors.bad_signature()


def check_timestamp(timestamp_ms: int, recv_window_ms: int, server_time_ms: int) -> None:
    """Raise -1021 when the request is too old for its window or from the future."""
    if recv_window_ms > MAX_RECV_WINDOW_MS:
        raise errors.recv_window_too_large()
    if timestamp_ms >= server_time_ms + MAX_AHEAD_MS:
        raise errors.timestamp_ahead()
    if server_time_ms - timestamp_ms > recv_window_ms:
        raise errors.timestamp_outside_window()
