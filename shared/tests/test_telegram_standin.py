"""The Telegram Bot API stand-in answers like Telegram over real HTTP on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import aiohttp
from shared.testing import telegram_standin as standin_module
from shared.testing.telegram_standin import TelegramStandIn, parse_html

# The fixture the module ships, registered here the way any test module can use it.
telegram_standin = standin_module.telegram_standin

TOKEN = "123456:standin-test-token"


async def _post(
    standin: TelegramStandIn, payload: dict[str, Any], token: str = TOKEN
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{standin.api_url}/bot{token}/sendMessage", json=payload) as response,
    ):
        return response.status, await response.json()


async def test_send_message_is_answered_like_telegram_and_recorded(
    telegram_standin: TelegramStandIn,
) -> None:
    status, body = await _post(
        telegram_standin, {"chat_id": "42", "text": "<b>hi</b> &amp; bye", "parse_mode": "HTML"}
    )
    assert status == 200
    assert body["ok"] is True
    assert body["result"]["message_id"] == 1
    assert body["result"]["text"] == "hi & bye"
    [received] = telegram_standin.messages
    assert (received.token, received.chat_id, received.text) == (
        TOKEN,
        "42",
        "<b>hi</b> &amp; bye",
    )
    assert received.parse_mode == "HTML"


async def test_scripted_failures_answer_the_next_requests_then_succeed() -> None:
    async with TelegramStandIn() as standin:
        standin.fail_next(1, status=429, retry_after=7)
        standin.fail_next(2, status=500)
        standin.fail_next(1, status=403)
        standin.fail_next(1, status=400)
        answers = [await _post(standin, {"chat_id": 1, "text": "x"}) for _ in range(6)]
    statuses = [status for status, _ in answers]
    assert statuses == [429, 500, 500, 403, 400, 200]
    flood = answers[0][1]
    assert flood == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    assert answers[3][1]["description"] == "Forbidden: bot was blocked by the user"
    assert [r.status for r in standin.requests] == statuses
    times = [r.arrived_at for r in standin.requests]
    assert times == sorted(times)
    assert len(standin.messages) == 1


async def test_refuses_what_telegram_refuses(telegram_standin: TelegramStandIn) -> None:
    too_long = "a" * 4097
    emoji_too_long = "📈" * 2049  # 4098 UTF-16 units
    cases = [
        {"chat_id": 1, "text": ""},
        {"chat_id": 1, "text": too_long},
        {"chat_id": 1, "text": emoji_too_long},
        {"chat_id": 1, "text": "a < b", "parse_mode": "HTML"},
        {"chat_id": 1, "text": "<b>open", "parse_mode": "HTML"},
        {"chat_id": 1, "text": "<script>x</script>", "parse_mode": "HTML"},
        {"text": "no chat"},
    ]
    for payload in cases:
        status, body = await _post(telegram_standin, payload)
        assert status == 400, payload
        assert body["description"].startswith("Bad Request"), body
    # 4096 visible characters with markup around them are fine: the limit is after parsing.
    status, _ = await _post(
        telegram_standin, {"chat_id": 1, "text": f"<b>{'a' * 4096}</b>", "parse_mode": "HTML"}
    )
    assert status == 200


async def test_a_configured_token_and_chat_are_enforced() -> None:
    async with TelegramStandIn(token=TOKEN, chat_ids=["42"]) as standin:
        wrong_token, _ = await _post(standin, {"chat_id": "42", "text": "x"}, token="1:wrong")
        wrong_chat, body = await _post(standin, {"chat_id": "7", "text": "x"})
        right, _ = await _post(standin, {"chat_id": "42", "text": "x"})
    assert (wrong_token, wrong_chat, right) == (401, 400, 200)
    assert body["description"] == "Bad Request: chat not found"


async def test_wait_for_messages_reports_what_arrived_when_it_times_out() -> None:
    async with TelegramStandIn() as standin:
        await _post(standin, {"chat_id": 1, "text": "one"})
        try:
            await standin.wait_for_messages(2, within=0.05)
        except TimeoutError as exc:
            assert "1 delivered" in str(exc)
        else:
            raise AssertionError("expected a timeout")


def test_parse_html_returns_the_visible_text() -> None:
    assert parse_html('<a href="https://x">link</a> &lt;3') == (None, "link <3")
    assert parse_html("<b><i>x</b></i>")[0] is not None
