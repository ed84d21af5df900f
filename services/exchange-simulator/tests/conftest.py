"""Fixtures: a running simulator and clients of it (ccxt, raw signed aiohttp requests)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from exchange_simulator.signing import sign
from exchange_simulator.testing import (
    RunningSimulator,
    ccxt_binance,
    running_simulator,
    synthetic_candles,
)

SYMBOL = "BTCUSDT"


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    """BTCUSDT 1m, 50 candles closed, 150 to come; manual pace."""
    async with running_simulator(synthetic_candles(SYMBOL, 200), history=50) as running:
        yield running


@pytest.fixture
async def exchange(sim: RunningSimulator) -> AsyncIterator[Any]:
    client = ccxt_binance(sim)
    try:
        yield client
    finally:
        await client.close()


class SignedClient:
    """Raw signed requests, exactly as Binance documents them (for wire-level checks)."""

    def __init__(self, sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session

    async def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        *,
        secret: str | None = None,
        key: str | None = None,
        timestamp: int | None = None,
        in_body: bool | None = None,
    ) -> tuple[int, Any, Any]:
        """Sign `params` (plus timestamp) and send them; (status, JSON body, headers)."""
        params = {**params, "timestamp": timestamp or int(time.time() * 1000)}
        text = urlencode(params)
        signature = sign(secret or self.sim.api_secret, text)
        signed = f"{text}&signature={signature}"
        headers = {"X-MBX-APIKEY": key or self.sim.api_key}
        url = f"{self.sim.base_url}{path}"
        body_mode = method == "POST" if in_body is None else in_body
        if body_mode:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request = self.session.request(method, url, data=signed, headers=headers)
        else:
            request = self.session.request(method, f"{url}?{signed}", headers=headers)
        async with request as response:
            return response.status, await response.json(content_type=None), response.headers


@pytest.fixture
async def signed(sim: RunningSimulator) -> AsyncIterator[SignedClient]:
    async with aiohttp.ClientSession() as session:
        yield SignedClient(sim, session)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def order_params() -> Callable[..., dict[str, Any]]:
    def build(**extra: Any) -> dict[str, Any]:
        return {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "0.01", **extra}

    return build
