"""Binance client order ids derived from signal ids, so one signal maps to one order.

Binance accepts ``newClientOrderId`` of at most 36 characters of ``[.A-Z:/a-z0-9_-]``.
A signal id that already fits after our prefix is used as it is (readable in Binance's
order history); anything longer or with other characters is hashed, deterministically.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["CLIENT_ORDER_ID_PREFIX", "client_order_id_for_signal", "is_valid_client_order_id"]

CLIENT_ORDER_ID_PREFIX = "sig-"
"""Marks our ids; never ccxt's broker prefix ``x-``, which ccxt may rewrite."""

_MAX_LENGTH = 36
_VALID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


def is_valid_client_order_id(value: str) -> bool:
    """True when Binance would accept ``value`` as a client order id."""
    return bool(_VALID.match(value))


def client_order_id_for_signal(signal_id: str) -> str:
    """The client order id of the order placed for ``signal_id``: same input, same id.

    ``"sig-" + signal_id`` when that is a valid id (the 32-hex ids of
    `shared.strategy.make_signal_id` are), otherwise ``"sig-" + sha256(signal_id)[:32]``.
    """
    if not signal_id:
        raise ValueError("signal_id must not be empty: the client order id is derived from it")
    direct = CLIENT_ORDER_ID_PREFIX + signal_id
    if len(direct) <= _MAX_LENGTH and is_valid_client_order_id(direct):
        return direct
    digest = hashlib.sha256(signal_id.encode("utf-8")).hexdigest()
    return CLIENT_ORDER_ID_PREFIX + digest[: _MAX_LENGTH - len(CLIENT_ORDER_ID_PREFIX)]
