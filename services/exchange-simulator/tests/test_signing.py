"""Signing exactly as Binance documents it, and the server's SIGNED checks over HTTP."""

from __future__ import annotations

import time

import ccxt.async_support as ccxt
import pytest
from exchange_simulator.signing import sign, signed_payload
from exchange_simulator.testing import ccxt_binance

DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


def test_hmac_reproduces_binance_documentation_example() -> None:
    query = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
        "&recvWindow=5000&timestamp=1499827319559"
    )
    assert sign(DOC_SECRET, query) == (
        "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )


def test_query_and_body_are_concatenated_without_ampersand() -> None:
    # Binance's documentation, example 3: part in the query string, part in the body.
    payload = signed_payload(
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC",
        "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
    )
    assert sign(DOC_SECRET, payload) == (
        "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
    )


def test_signature_pair_is_left_out_of_the_payload() -> None:
    assert signed_payload("a=1&signature=abc", "b=2") == "a=1b=2"
    assert signed_payload("", "b=2&signature=abc") == "b=2"


async def test_ccxt_signatures_are_accepted(exchange) -> None:
    balance = await exchange.fetch_balance()
    assert balance["USDT"]["free"] == 10_000


async def test_wrong_secret_gets_1022_and_ccxt_authentication_error(sim, signed) -> None:
    status, body, _ = await signed.call("GET", "/api/v3/account", {}, secret="not-the-secret")
    assert (status, body["code"]) == (400, -1022)
    assert body["msg"] == "Signature for this request is not valid."
    client = ccxt_binance(sim, api_secret="not-the-secret")
    try:
        with pytest.raises(ccxt.AuthenticationError):
            await client.fetch_balance()
    finally:
        await client.close()


async def test_stale_timestamp_gets_1021(signed) -> None:
    stale = int(time.time() * 1000) - 6000  # older than the default 5000 ms window
    status, body, _ = await signed.call("GET", "/api/v3/account", {}, timestamp=stale)
    assert (status, body["code"]) == (400, -1021)
    status, body, _ = await signed.call(
        "GET", "/api/v3/account", {"recvWindow": 10000}, timestamp=stale
    )
    assert status == 200


async def test_timestamp_ahead_of_server_gets_1021(signed) -> None:
    ahead = int(time.time() * 1000) + 1500
    status, body, _ = await signed.call("GET", "/api/v3/account", {}, timestamp=ahead)
    assert (status, body["code"]) == (400, -1021)
    assert "ahead" in body["msg"]


async def test_server_clock_shift_makes_ccxt_see_invalid_nonce(sim, exchange) -> None:
    await sim.control.set_clock(offset_ms=60_000)
    with pytest.raises(ccxt.InvalidNonce):
        await exchange.fetch_balance()
    # serverTime is the replay's time (the open candle's open, nothing shown of it yet)
    # shifted by the offset; ccxt's resync to it makes its timestamps acceptable again.
    replay_open = (await sim.control.state())["replay"]["current_open_time"]
    assert await exchange.fetch_time() == replay_open + 60_000
    await exchange.load_time_difference()
    assert (await exchange.fetch_balance())["USDT"]["free"] == 10_000


async def test_unknown_api_key_gets_2015_http_401(signed) -> None:
    status, body, _ = await signed.call("GET", "/api/v3/account", {}, key="nobody")
    assert (status, body["code"]) == (401, -2015)


async def test_missing_signature_and_timestamp_are_named(sim, signed) -> None:
    url = f"{sim.base_url}/api/v3/account"
    headers = {"X-MBX-APIKEY": sim.api_key}
    async with signed.session.get(url, headers=headers) as response:
        body = await response.json()
    assert body["code"] == -1102 and "'timestamp'" in body["msg"]
    async with signed.session.get(
        f"{url}?timestamp={int(time.time() * 1000)}", headers=headers
    ) as response:
        body = await response.json()
    assert body["code"] == -1102 and "'signature'" in body["msg"]


async def test_signature_over_query_plus_body_is_accepted(sim, signed) -> None:
    timestamp = int(time.time() * 1000)
    query = "symbol=BTCUSDT&side=BUY&type=MARKET"
    body = f"quantity=0.01&timestamp={timestamp}"
    signature = sign(sim.api_secret, query + body)
    async with signed.session.post(
        f"{sim.base_url}/api/v3/order?{query}",
        data=f"{body}&signature={signature}",
        headers={
            "X-MBX-APIKEY": sim.api_key,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    ) as response:
        answer = await response.json()
    assert response.status == 200, answer
    assert answer["status"] == "FILLED"
