"""Binance JSON → `shared.models`, at the edge, keeping Binance's decimal strings exact.

Each parser takes the raw JSON Binance sends (as a parsed dict/list) and returns our
frozen models; a message that does not have the documented shape raises `ValueError`
naming the field, never a half-filled model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.models import Candle, Order, OrderStatus, OrderType, Side, Trade, interval_delta

__all__ = [
    "AssetBalance",
    "BinanceErrorBody",
    "ParsedOrder",
    "ms_to_datetime",
    "parse_balances",
    "parse_error_body",
    "parse_order",
    "parse_rest_kline",
    "parse_ws_kline_event",
]

# Binance's order statuses → ours. PENDING_NEW/PENDING_CANCEL are accepted-but-working.
_STATUSES: dict[str, OrderStatus] = {
    "NEW": OrderStatus.SENT,
    "PENDING_NEW": OrderStatus.SENT,
    "PENDING_CANCEL": OrderStatus.SENT,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class BinanceErrorBody:
    """Binance's error payload ``{"code": -1121, "msg": "Invalid symbol."}``."""

    code: int
    msg: str


@dataclass(frozen=True, slots=True)
class AssetBalance:
    """One asset of the spot account: ``free`` can be traded, ``locked`` sits in open orders."""

    asset: str
    free: Decimal
    locked: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass(frozen=True, slots=True)
class ParsedOrder:
    """An order and the fills that came with it (only a FULL create response lists fills)."""

    order: Order
    trades: tuple[Trade, ...]


def ms_to_datetime(ms: int) -> datetime:
    """Binance's epoch milliseconds as a UTC datetime."""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _field(data: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return data[key]
    except (KeyError, TypeError):
        raise ValueError(f"{what}: missing field {key!r}") from None


def _decimal(value: Any, key: str, what: str) -> Decimal:
    if isinstance(value, float):
        # A float has already lost the exchange's exact digits: refuse it loudly.
        raise ValueError(f"{what}: field {key!r} is a float ({value!r}); expected a string")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{what}: field {key!r} is not a decimal: {value!r}") from None


def _dec(data: Mapping[str, Any], key: str, what: str) -> Decimal:
    return _decimal(_field(data, key, what), key, what)


def parse_error_body(body: str | Mapping[str, Any]) -> BinanceErrorBody:
    """Parse an error answer; ``ValueError`` if it is not ``{"code": int, "msg": str}``."""
    data = json.loads(body) if isinstance(body, str) else body
    if not isinstance(data, Mapping):
        raise ValueError(f"Binance error body: expected an object, got {type(data).__name__}")
    code = _field(data, "code", "Binance error body")
    msg = _field(data, "msg", "Binance error body")
    if not isinstance(code, int) or isinstance(code, bool) or not isinstance(msg, str):
        raise ValueError(f"Binance error body: unexpected code/msg types in {data!r}")
    return BinanceErrorBody(code=code, msg=msg)


def parse_rest_kline(
    row: Sequence[Any], symbol: str, interval: str, *, now_ms: int | None = None
) -> Candle:
    """One row of ``GET /api/v3/klines``.

    The row does not say whether the candle is over: it is ``closed`` when its close time
    is before ``now_ms`` (the exchange's clock); without ``now_ms`` it is taken as closed.
    """
    what = f"REST kline of {symbol} {interval}"
    if not isinstance(row, Sequence) or isinstance(row, str) or len(row) < 9:
        raise ValueError(f"{what}: expected a list of 12 fields, got {row!r}")
    open_ms, close_ms = int(row[0]), int(row[6])
    expected_close = open_ms + int(interval_delta(interval).total_seconds() * 1000) - 1
    if close_ms != expected_close:
        raise ValueError(
            f"{what}: close time {close_ms} does not end the {interval} interval opened at "
            f"{open_ms} (expected {expected_close}): wrong interval for this data?"
        )
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=ms_to_datetime(open_ms),
        open=_decimal(row[1], "open", what),
        high=_decimal(row[2], "high", what),
        low=_decimal(row[3], "low", what),
        close=_decimal(row[4], "close", what),
        volume=_decimal(row[5], "volume", what),
        quote_volume=_decimal(row[7], "quoteVolume", what),
        trades=int(row[8]),
        closed=now_ms is None or close_ms < now_ms,
    )


def parse_ws_kline_event(message: Mapping[str, Any]) -> Candle:
    """A kline event, raw (``{"e": "kline", ...}``) or combined (``{"stream", "data"}``)."""
    data = message.get("data", message) if isinstance(message, Mapping) else message
    what = "WS kline event"
    if not isinstance(data, Mapping) or data.get("e") != "kline":
        raise ValueError(f"{what}: not a kline event: {message!r}")
    k = _field(data, "k", what)
    symbol = str(_field(k, "s", what))
    interval = str(_field(k, "i", what))
    closed = _field(k, "x", what)
    if not isinstance(closed, bool):
        raise ValueError(f"{what}: field 'x' must be true or false, got {closed!r}")
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=ms_to_datetime(int(_field(k, "t", what))),
        open=_dec(k, "o", what),
        high=_dec(k, "h", what),
        low=_dec(k, "l", what),
        close=_dec(k, "c", what),
        volume=_dec(k, "v", what),
        quote_volume=_dec(k, "q", what),
        trades=int(_field(k, "n", what)),
        closed=closed,
    )


def parse_balances(account: Mapping[str, Any]) -> dict[str, AssetBalance]:
    """``GET /api/v3/account`` → {asset: AssetBalance}, every listed asset kept."""
    what = "account"
    balances: dict[str, AssetBalance] = {}
    for entry in _field(account, "balances", what):
        asset = str(_field(entry, "asset", what))
        balances[asset] = AssetBalance(
            asset=asset, free=_dec(entry, "free", what), locked=_dec(entry, "locked", what)
        )
    return balances


def parse_order(
    raw: Mapping[str, Any],
    *,
    signal_id: str | None = None,
    strategy: str | None = None,
    now: datetime | None = None,
) -> ParsedOrder:
    """A create (ACK/RESULT/FULL), query, cancel or open-orders entry → `Order` + fills.

    The client order id is ours: on a cancel answer Binance puts the order's own id in
    ``origClientOrderId`` and a fresh one in ``clientOrderId``, so the former wins.
    ``avg_fill_price`` comes from the fills when there are any, else from
    ``cummulativeQuoteQty / executedQty``.
    """
    what = "Binance order"
    client_order_id = str(raw.get("origClientOrderId") or _field(raw, "clientOrderId", what))
    symbol = str(_field(raw, "symbol", what))
    side = Side(str(_field(raw, "side", what)))
    raw_type = str(_field(raw, "type", what))
    status_text = str(_field(raw, "status", what))
    try:
        status = _STATUSES[status_text]
    except KeyError:
        raise ValueError(f"{what}: unknown status {status_text!r}") from None
    try:
        order_type = OrderType(raw_type)
    except ValueError:
        raise ValueError(f"{what}: unsupported order type {raw_type!r}") from None
    price = _dec(raw, "price", what) if "price" in raw else None
    executed = _dec(raw, "executedQty", what)
    cumulative_quote = (
        _dec(raw, "cummulativeQuoteQty", what) if "cummulativeQuoteQty" in raw else None
    )
    created_ms = raw.get("time", raw.get("transactTime", raw.get("workingTime")))
    updated_ms = raw.get("updateTime", raw.get("transactTime", created_ms))
    stamp = now or datetime.now(UTC)
    created_at = ms_to_datetime(int(created_ms)) if created_ms is not None else stamp
    updated_at = ms_to_datetime(int(updated_ms)) if updated_ms is not None else created_at

    trades = tuple(
        Trade(
            trade_id=str(_field(fill, "tradeId", what)),
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=_dec(fill, "qty", what),
            price=_dec(fill, "price", what),
            fee=_dec(fill, "commission", what),
            fee_asset=str(_field(fill, "commissionAsset", what)),
            time=updated_at,
        )
        for fill in raw.get("fills", ())
    )
    avg_fill_price: Decimal | None = None
    if trades:
        filled = sum((t.quantity for t in trades), Decimal(0))
        avg_fill_price = sum((t.quantity * t.price for t in trades), Decimal(0)) / filled
    elif executed > 0 and cumulative_quote is not None:
        avg_fill_price = cumulative_quote / executed
    fee_assets = {t.fee_asset for t in trades}
    fee_asset = fee_assets.pop() if len(fee_assets) == 1 else None
    fee = sum((t.fee for t in trades), Decimal(0)) if fee_asset is not None else Decimal(0)

    order = Order(
        client_order_id=client_order_id,
        signal_id=signal_id,
        strategy=strategy,
        symbol=symbol,
        side=side,
        type=order_type,
        quantity=_dec(raw, "origQty", what),
        price=price if order_type is OrderType.LIMIT else None,
        status=status,
        filled_quantity=executed,
        avg_fill_price=avg_fill_price,
        fee=fee,
        fee_asset=fee_asset,
        exchange_order_id=str(_field(raw, "orderId", what)),
        created_at=created_at,
        updated_at=updated_at,
    )
    return ParsedOrder(order=order, trades=trades)
