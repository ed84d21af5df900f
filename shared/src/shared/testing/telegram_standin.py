"""A local stand-in for Telegram's Bot API, for tests and demos.

It answers ``POST /bot<token>/sendMessage`` the way api.telegram.org does (see
``shared/BINANCE.md``, "Telegram Bot API"): ``{"ok": true, "result": {...}}`` on success and
``{"ok": false, "error_code": N, "description": ..., "parameters": {"retry_after": S}}`` on
failure. It refuses what Telegram refuses: an empty text, a text over 4096 characters (counted
after HTML parsing, in UTF-16 units as Telegram does), malformed HTML, an unknown chat or token
when those are configured. It can be scripted to answer 429/500/400/403 for the next N
requests, and records every request with its arrival time (``time.monotonic``).

    async with TelegramStandIn() as standin:
        notifier = TelegramNotifier("123:abc", "42", api_url=standin.api_url)
        standin.fail_next(1, status=429, retry_after=2)

Standalone, for demos: ``python -m shared.testing.telegram_standin --port 8081`` prints each
message it receives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_MESSAGE_LENGTH = 4096

_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}

# The tags Telegram's HTML parse mode accepts (https://core.telegram.org/bots/api#html-style).
_ALLOWED_TAGS = frozenset(
    {
        "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
        "span", "tg-spoiler", "tg-emoji", "blockquote",
    }
)  # fmt: skip
_HTML_TOKEN = re.compile(r"<(/?)([a-zA-Z][\w-]*)(?:\s[^<>]*)?>|&(?:#\d+|#x[\da-fA-F]+|\w+);|[<>&]")


@dataclass(frozen=True)
class ReceivedRequest:
    """One sendMessage request as it arrived, and what the stand-in answered."""

    token: str
    payload: dict[str, Any]
    arrived_at: float
    status: int

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))

    @property
    def chat_id(self) -> str:
        return str(self.payload.get("chat_id", ""))

    @property
    def parse_mode(self) -> str | None:
        mode = self.payload.get("parse_mode")
        return None if mode is None else str(mode)

    @property
    def delivered(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class _ScriptedFailure:
    status: int
    description: str
    retry_after: int | None


@dataclass
class TelegramStandIn:
    """A Bot API server on 127.0.0.1 (random port unless given). See the module docstring.

    ``token``/``chat_ids``: when set, other tokens get 401 and other chats 400, as Telegram
    answers them. ``access_log`` turns on aiohttp's access log (its lines contain the token:
    for testing redaction). ``clock`` stamps arrivals (default ``time.monotonic``, the clock asyncio
    uses, so arrival gaps can be compared with the notifier's own timing).
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    chat_ids: Iterable[str] | None = None
    clock: Callable[[], float] = time.monotonic
    echo: bool = False
    access_log: bool = False
    requests: list[ReceivedRequest] = field(default_factory=list, init=False)
    _script: deque[_ScriptedFailure] = field(default_factory=deque, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _changed: asyncio.Condition | None = field(default=None, init=False)
    _next_message_id: int = field(default=1, init=False)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        """Start serving; returns `api_url`, the base URL to give the notifier."""
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        # No access log unless asked: its request lines carry the bot token in the path.
        if self.access_log:
            self._runner = web.AppRunner(app)
        else:
            self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._changed = asyncio.Condition()
        return self.api_url

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TelegramStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        """Base URL of this server, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    # --- scripting -------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int,
        retry_after: int | None = None,
        description: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (e.g. 429 with ``retry_after``)."""
        if status == 429 and retry_after is None:
            retry_after = 1
        text = description or _DESCRIPTIONS.get(status, f"Error {status}")
        text = text.format(retry_after=retry_after)
        for _ in range(count):
            self._script.append(_ScriptedFailure(status, text, retry_after))

    # --- observing -------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedRequest]:
        """The requests that were delivered (answered 200), in arrival order."""
        return [r for r in self.requests if r.delivered]

    async def wait_for_requests(self, count: int, within: float = 30.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests have arrived; returns them all."""
        return await self._wait(lambda: len(self.requests) >= count, within, f"{count} requests")

    async def wait_for_messages(self, count: int, within: float = 30.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` messages have been delivered; returns them."""
        await self._wait(lambda: len(self.messages) >= count, within, f"{count} messages")
        return self.messages

    async def _wait(
        self, ready: Callable[[], bool], within: float, what: str
    ) -> list[ReceivedRequest]:
        if self._changed is None:
            raise RuntimeError("the stand-in is not started")
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            raise TimeoutError(
                f"stand-in waited {within}s for {what}; got {len(self.requests)} requests, "
                f"{len(self.messages)} delivered"
            ) from None
        return list(self.requests)

    # --- the endpoint ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        arrived_at = self.clock()
        token = request.match_info["token"]
        method = request.match_info["method"]
        payload = await _read_payload(request)
        status, body = self._answer(token, method, payload)
        self.requests.append(ReceivedRequest(token, payload, arrived_at, status))
        if self.echo:
            print(f"[{status}] chat {payload.get('chat_id')}: {payload.get('text')}", flush=True)
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
        return web.json_response(body, status=status)

    def _answer(self, token: str, method: str, payload: dict[str, Any]) -> tuple[int, Any]:
        if self.token is not None and token != self.token:
            return _error(401, "Unauthorized")
        if method != "sendMessage":
            return _error(404, "Not Found")
        if self._script:
            failure = self._script.popleft()
            return _error(failure.status, failure.description, failure.retry_after)
        chat_id = payload.get("chat_id")
        if chat_id in (None, ""):
            return _error(400, "Bad Request: chat_id is empty")
        if self.chat_ids is not None and str(chat_id) not in set(map(str, self.chat_ids)):
            return _error(400, "Bad Request: chat not found")
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Bad Request: message text is empty")
        parse_mode = payload.get("parse_mode")
        if parse_mode is not None and str(parse_mode).upper() == "HTML":
            problem, visible = parse_html(text)
            if problem:
                return _error(400, f"Bad Request: can't parse entities: {problem}")
        else:
            visible = text
        if utf16_length(visible) > MAX_MESSAGE_LENGTH:
            return _error(400, "Bad Request: message is too long")
        message_id = self._next_message_id
        self._next_message_id += 1
        result = {
            "message_id": message_id,
            "from": {"id": 1, "is_bot": True, "first_name": "stand-in", "username": "standin_bot"},
            "chat": {"id": chat_id, "type": "private"},
            "date": int(time.time()),
            "text": visible,
        }
        return 200, {"ok": True, "result": result}


def _error(status: int, description: str, retry_after: int | None = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return status, body


async def _read_payload(request: web.Request) -> dict[str, Any]:
    # Telegram accepts JSON, urlencoded and multipart bodies alike.
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}
    form = await request.post()
    return {key: str(value) for key, value in form.items()}


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's 4096 limit."""
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> tuple[str | None, str]:
    """Check Telegram-style HTML; returns (problem or None, the visible text)."""
    stack: list[str] = []
    visible: list[str] = []
    position = 0
    for match in _HTML_TOKEN.finditer(text):
        visible.append(text[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in {"<", ">", "&"}:
            if token == ">":
                visible.append(">")
                continue
            return f"unsupported start tag or stray {token!r} at byte offset {match.start()}", ""
        if token.startswith("&"):
            unescaped = html.unescape(token)
            if unescaped == token:
                return f"unsupported entity {token!r}", ""
            visible.append(unescaped)
            continue
        closing, name = match.group(1) == "/", match.group(2).lower()
        if name not in _ALLOWED_TAGS:
            return f"unsupported tag <{name}>", ""
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return f"unmatched end tag </{name}>", ""
    visible.append(text[position:])
    if stack:
        return f"can't find end tag corresponding to start tag <{stack[-1]}>", ""
    return None, "".join(visible)


try:  # the fixture, when pytest is installed (tests and dev environments)
    import pytest
except ImportError:  # pragma: no cover - production images have no pytest
    pass
else:

    @pytest.fixture
    async def telegram_standin() -> AsyncIterator[TelegramStandIn]:
        """A started `TelegramStandIn` on a random loopback port, stopped afterwards."""
        async with TelegramStandIn() as standin:
            yield standin


async def _serve(port: int, token: str | None) -> None:
    async with TelegramStandIn(port=port, token=token, echo=True) as standin:
        print(f"Telegram Bot API stand-in on {standin.api_url} (Ctrl-C stops it)", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in in the foreground, printing each message it receives."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8081, help="port on 127.0.0.1 (0: random)")
    parser.add_argument("--token", default=None, help="accept only this bot token")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.token))


if __name__ == "__main__":
    main()
