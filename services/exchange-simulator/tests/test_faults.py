"""Each scripted fault, seen by raw aiohttp and by ccxt."""

from __future__ import annotations

import asyncio

import aiohttp
import ccxt.async_support as ccxt
import pytest

ORDER = "/api/v3/order"


async def test_429_carries_retry_after_and_ccxt_raises_ddos_protection(sim, exchange) -> None:
    await sim.control.add_fault("http_429", path="/api/v3/time", retry_after=7)
    with pytest.raises(ccxt.DDoSProtection):
        await exchange.fetch_time()
    assert exchange.last_response_headers["Retry-After"] == "7"
    assert await exchange.fetch_time() > 0  # only the next one failed


async def test_418_ban(sim, signed, order_params) -> None:
    await sim.control.add_fault("http_418", path=ORDER, retry_after=120)
    status, body, headers = await signed.call("POST", ORDER, order_params())
    assert (status, body["code"], headers["Retry-After"]) == (418, -1003, "120")
    assert await sim.control.orders() == []


async def test_500_unknown_error_for_the_next_n_requests(sim, exchange) -> None:
    await sim.control.add_fault("http_500", path="/api/v3/time", times=2)
    for _ in range(2):
        with pytest.raises(ccxt.OperationFailed) as raised:
            await exchange.fetch_time()
        assert "-1000" in str(raised.value)
    assert await exchange.fetch_time() > 0
    (fault,) = await sim.control.faults()
    assert (fault["fired"], fault["active"]) == (2, False)


async def test_503_service_unavailable_is_a_network_error_for_ccxt(sim, exchange) -> None:
    await sim.control.add_fault("http_503", path="/api/v3/time")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.fetch_time()


async def test_1007_answers_after_the_order_executed(sim, exchange) -> None:
    await exchange.load_markets()
    await sim.control.add_fault("exec_unknown", path=ORDER, method="POST")
    with pytest.raises(ccxt.RequestTimeout):
        await exchange.create_order(
            "BTC/USDT", "market", "buy", 0.01, None, {"clientOrderId": "unknown-1"}
        )
    found = await exchange.fetch_order(None, "BTC/USDT", {"origClientOrderId": "unknown-1"})
    assert found["status"] == "closed"


async def test_drop_closes_the_connection_after_executing_the_order(sim, signed, order_params):
    await sim.control.add_fault("drop", path=ORDER, method="POST")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await signed.call("POST", ORDER, order_params(newClientOrderId="dropped-1"))
    (order,) = await sim.control.orders()
    assert (order["clientOrderId"], order["status"]) == ("dropped-1", "FILLED")
    (logged,) = [r for r in await sim.control.requests() if r["path"] == ORDER]
    assert (logged["status"], logged["client_order_id"]) == ("dropped", "dropped-1")


async def test_every_kth_request_is_hit(sim, exchange) -> None:
    await exchange.load_markets()
    await sim.control.add_fault("drop", path=ORDER, method="POST", every=2)
    outcomes = []
    for index in range(6):
        try:
            await exchange.create_order(
                "BTC/USDT", "market", "buy", 0.001, None, {"clientOrderId": f"k-{index}"}
            )
            outcomes.append("ok")
        except ccxt.NetworkError:
            outcomes.append("dropped")
    assert outcomes == ["ok", "dropped"] * 3
    assert len(await sim.control.orders()) == 6


async def test_delay_holds_the_answer_past_a_short_client_timeout(sim, http) -> None:
    await sim.control.add_fault("delay", path="/api/v3/time", delay=5)
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.3), http.get(f"{sim.base_url}/api/v3/time"):
            pass
    async with http.get(f"{sim.base_url}/api/v3/time") as response:
        assert response.status == 200


async def test_bad_fault_spec_is_refused_with_a_reason(sim, http) -> None:
    async with http.post(f"{sim.base_url}/_sim/faults", json={"kind": "meteor"}) as r:
        assert r.status == 400
        assert "unknown fault kind 'meteor'" in (await r.json())["error"]
