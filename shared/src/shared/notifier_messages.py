"""Telegram message texts: readable HTML for signals, orders, errors and daily summaries,
and splitting of long texts into Telegram-sized chunks.

Every piece of user or exchange text is escaped with `html.escape`, so a strategy reason like
``"rsi < 30 & falling"`` can never break Telegram's HTML parser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from html import escape

from shared.models import Order, OrderStatus, Position, Side, Signal

MAX_MESSAGE_LENGTH = 4096
"""Telegram's limit for one message's text, in UTF-16 code units."""

ERROR_TEXT_LIMIT = 3000
"""Error texts (tracebacks) are cut to this many characters before formatting."""

_ORDER_ICONS = {
    OrderStatus.FILLED: "✅",
    OrderStatus.PARTIALLY_FILLED: "🟡",
    OrderStatus.REJECTED: "❌",
    OrderStatus.CANCELED: "🚫",
    OrderStatus.EXPIRED: "⌛",
}


def _amount(value: Decimal | None) -> str:
    if value is None:
        return "—"
    # Drop trailing zeros without switching to scientific notation (1E+1).
    text = format(value.normalize(), "f")
    return text


def format_signal(signal: Signal) -> str:
    """A signal as an HTML message."""
    icon = "🟢" if signal.side is Side.BUY else "🔴"
    lines = [
        f"{icon} <b>{signal.side.value} signal</b> {escape(signal.symbol)} "
        f"{escape(signal.interval)}",
        f"Strategy: <code>{escape(signal.strategy)}</code>",
        f"Quantity: {_amount(signal.quantity)} @ {_amount(signal.price)}",
        f"Candle: {signal.candle_time:%Y-%m-%d %H:%M} UTC",
    ]
    if signal.reason:
        lines.append(f"Reason: {escape(signal.reason)}")
    return "\n".join(lines)


def format_order(order: Order) -> str:
    """An order's fill or failure as an HTML message."""
    icon = _ORDER_ICONS.get(order.status, "📨")
    lines = [
        f"{icon} <b>Order {escape(order.status.value.lower().replace('_', ' '))}</b> "
        f"{order.side.value} {escape(order.symbol)}",
        f"Quantity: {_amount(order.filled_quantity)} / {_amount(order.quantity)}"
        f" ({order.type.value})",
    ]
    if order.avg_fill_price is not None:
        lines.append(f"Average price: {_amount(order.avg_fill_price)}")
    elif order.price is not None:
        lines.append(f"Limit price: {_amount(order.price)}")
    if order.fee:
        lines.append(f"Fee: {_amount(order.fee)} {escape(order.fee_asset or '')}".rstrip())
    if order.strategy:
        lines.append(f"Strategy: <code>{escape(order.strategy)}</code>")
    if order.reason:
        lines.append(f"Reason: {escape(order.reason)}")
    lines.append(f"Client order id: <code>{escape(order.client_order_id)}</code>")
    return "\n".join(lines)


def format_error(error: str, service: str, count: int = 1) -> str:
    """An error alert as an HTML message; ``count`` > 1 says how often it recurred."""
    if len(error) > ERROR_TEXT_LIMIT:
        error = error[:ERROR_TEXT_LIMIT] + " …(truncated)"
    text = f"🚨 <b>Error</b> in <code>{escape(service)}</code>\n<pre>{escape(error)}</pre>"
    if count > 1:
        text += f"\n(×{count} in the last minute)"
    return text


def format_daily_summary(positions: Sequence[Position], pnl: Decimal) -> str:
    """The daily summary: PnL and one line per open position."""
    icon = "📈" if pnl >= 0 else "📉"
    lines = [f"{icon} <b>Daily summary</b>", f"PnL: {_amount(pnl)} USDT"]
    held = [p for p in positions if p.quantity > 0]
    if not held:
        lines.append("No open positions.")
    for position in held:
        lines.append(
            f"• {escape(position.symbol)}: {_amount(position.quantity)} @ "
            f"{_amount(position.avg_entry_price)} (unrealised {_amount(position.unrealized_pnl)},"
            f" realised {_amount(position.realized_pnl)})"
        )
    return "\n".join(lines)


# --- splitting -------------------------------------------------------------------------------

# Tags, entities, and runs of plain text: a split never falls inside the first two.
_TOKEN = re.compile(r"<[^<>]*>|&(?:#\d+|#x[\da-fA-F]+|\w+);|[^<&]+|[<&]")
_TAG_NAME = re.compile(r"<\s*(/?)\s*([a-zA-Z][\w-]*)")


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's limit (an emoji counts 2)."""
    # surrogatepass: a lone surrogate (from a broken decode upstream) still counts as one unit
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def split_message(
    text: str, limit: int = MAX_MESSAGE_LENGTH, *, html_mode: bool = True
) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` UTF-16 units each.

    Cuts fall between lines where possible, inside a line only when the line alone is too
    long. In HTML mode no cut falls inside a tag or an entity, and tags open at a cut are
    closed at the end of the chunk and reopened at the start of the next, so each chunk is
    valid HTML on its own.
    """
    if utf16_length(text) <= limit:
        return [text]
    splitter = _Splitter(limit, html_mode)
    for line in _lines(text, html_mode):
        splitter.add_line(line)
    return splitter.finish()


def _lines(text: str, html_mode: bool) -> list[list[str]]:
    """Tokens grouped into lines; a line's last token ends with its newline."""
    tokens = _TOKEN.findall(text) if html_mode else [text]
    lines: list[list[str]] = [[]]
    for token in tokens:
        for piece in token.splitlines(keepends=True) if "\n" in token else [token]:
            lines[-1].append(piece)
            if piece.endswith("\n"):
                lines.append([])
    return [line for line in lines if line]


class _Splitter:
    def __init__(self, limit: int, html_mode: bool) -> None:
        self.limit = limit
        self.html_mode = html_mode
        self.chunks: list[str] = []
        self.current = ""
        self.open_tags: list[tuple[str, str]] = []  # (name, the opening tag as written)

    def add_line(self, tokens: list[str]) -> None:
        if not self._line_fits(tokens) and self._has_content():
            self._cut()
        if self._line_fits(tokens):
            for token in tokens:
                self._append(token)
            return
        for token in tokens:  # one line longer than a whole message: cut inside it
            self._add_token(token)

    def finish(self) -> list[str]:
        if self._has_content():
            self.chunks.append(self.current + self._closing(self.open_tags))
        return [chunk for chunk in self.chunks if chunk.strip()]

    def _is_tag(self, token: str) -> bool:
        return self.html_mode and token.startswith("<") and len(token) > 1

    def _is_entity(self, token: str) -> bool:
        return self.html_mode and token.startswith("&") and len(token) > 1

    def _line_fits(self, tokens: list[str]) -> bool:
        tags = list(self.open_tags)
        for token in tokens:
            if self._is_tag(token):
                _apply_tag(tags, token)
        size = utf16_length(self.current) + sum(utf16_length(t) for t in tokens)
        return size + utf16_length(self._closing(tags)) <= self.limit

    def _has_content(self) -> bool:
        return self.current != "".join(tag for _, tag in self.open_tags)

    @staticmethod
    def _closing(tags: list[tuple[str, str]]) -> str:
        return "".join(f"</{name}>" for name, _ in reversed(tags))

    def _room(self) -> int:
        return self.limit - utf16_length(self.current) - utf16_length(self._closing(self.open_tags))

    def _cut(self) -> None:
        self.chunks.append(self.current + self._closing(self.open_tags))
        self.current = "".join(tag for _, tag in self.open_tags)
        if self._room() <= 0:
            raise ValueError("the open HTML tags alone exceed the message limit")

    def _append(self, token: str) -> None:
        self.current += token
        if self._is_tag(token):
            _apply_tag(self.open_tags, token)

    def _add_token(self, token: str) -> None:
        if self._is_tag(token):
            closes = token.startswith("</")
            name = _tag_name(token)
            extra = 0 if closes else utf16_length(f"</{name}>")
            if utf16_length(token) + extra > self._room() and self._has_content():
                self._cut()
            self._append(token)
            return
        if self._is_entity(token):
            if utf16_length(token) > self._room():
                self._cut()
            self._append(token)
            return
        remaining = token
        while remaining:
            if utf16_length(remaining) <= self._room():
                self._append(remaining)
                return
            piece = _fit(remaining, self._room())
            if not piece:
                self._cut()
                continue
            self._append(piece)
            remaining = remaining[len(piece) :]
            self._cut()


def _tag_name(tag: str) -> str:
    match = _TAG_NAME.match(tag)
    return match.group(2).lower() if match else ""


def _apply_tag(tags: list[tuple[str, str]], tag: str) -> None:
    name = _tag_name(tag)
    if tag.startswith("</"):
        if tags and tags[-1][0] == name:
            tags.pop()
    elif name and not tag.endswith("/>"):
        tags.append((name, tag))


def _fit(text: str, space: int) -> str:
    """The longest prefix of ``text`` within ``space`` units, ending at a newline if one fits."""
    if space <= 0:
        return ""
    prefix = text[:space]
    while utf16_length(prefix) > space:  # surrogate pairs count twice
        prefix = prefix[:-1]
    newline = prefix.rfind("\n")
    if newline > 0 and newline >= len(prefix) // 2:
        return prefix[: newline + 1]
    return prefix
