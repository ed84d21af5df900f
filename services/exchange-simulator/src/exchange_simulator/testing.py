"""Run a simulator inside a test and drive it through its control API.

    async with running_simulator({"BTCUSDT": candles}, history=100) as sim:
        exchange = ccxt.async_support.binance({"apiKey": sim.api_key, "secret": sim.api_secret})
        exchange.urls["api"] = {"public": f"{sim.base_url}/api/v3", ...}
        await sim.control.advance(3)            # close 3 candles (kline events pushed)
        await sim.control.add_fault("drop", path="/api/v3/order", method="POST", every=2)

`sim.control` talks HTTP to /_sim/ like any other client; `sim.simulator` is the object
itself for checks that need it. Candles come from a file (`load_candles`), from the
database, or from `synthetic_candles` (a seeded random walk on the interval's grid).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
from shared.models import Candle, interval_delta

from exchange_simulator.accounts import DEFAULT_BALANCES
from exchange_simulator.app import MANUAL, Simulator, Speed
from exchange_simulator.core import SimulatorSetup
from exchange_simulator.filters import SymbolRules
from exchange_simulator.replay import load_candles

DEFAULT_API_KEY = "simulator-test-key"
DEFAULT_API_SECRET = "simulator-test-secret"

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "RunningSimulator",
    "SimulatorControl",
    "ccxt_binance",
    "load_candles",
    "running_simulator",
    "synthetic_candles",
]


class SimulatorControl:
    """A client of the control API (/_sim/...). Every method is one HTTP request."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self._session = session

    async def _call(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        async with self._session.request(
            method, f"{self.base_url}/_sim/{path}", json=body, params=query or None
        ) as response:
            payload = await response.json()
            if response.status != 200:
                raise RuntimeError(f"simulator control {path}: {payload}")
            return payload

    async def state(self) -> dict[str, Any]:
        return await self._call("GET", "state")  # type: ignore[no-any-return]

    async def advance(self, candles: int = 1) -> int:
        """Close the current candle and open the next, `candles` times; returns after every
        kline event has been written to the WebSocket clients. How many candles closed."""
        return int((await self._call("POST", "advance", {"candles": candles}))["moved"])

    async def step(self, stages: int = 1) -> int:
        """Move `stages` partial updates (3 per candle, the third closes it)."""
        return int((await self._call("POST", "advance", {"stages": stages}))["moved"])

    async def set_price(self, symbol: str, price: Decimal | str) -> None:
        await self._call("POST", "price", {"symbol": symbol, "price": str(price)})

    async def set_clock(
        self, *, offset_ms: int | None = None, server_time_ms: int | None = None
    ) -> int:
        """Move the exchange's clock (it otherwise follows the replay): `offset_ms` skews it
        ahead of the replay's time, signed requests' timestamps judged by the skewed clock
        too (-1021 until a client resyncs); `server_time_ms` shifts the market time only, so
        that serverTime is that time now (see `exchange_simulator.clock`).
        Returns the server time in ms."""
        body = {"offset_ms": offset_ms} if offset_ms is not None else {}
        if server_time_ms is not None:
            body = {"server_time_ms": server_time_ms}
        return int((await self._call("POST", "clock", body))["server_time_ms"])

    async def add_fault(
        self,
        kind: str,
        *,
        path: str | None = None,
        method: str | None = None,
        times: int | None = None,
        every: int | None = None,
        retry_after: int | None = None,
        delay: float | None = None,
    ) -> dict[str, Any]:
        """Script a fault (see `exchange_simulator.faults`); returns it with its "id"."""
        spec = {
            "kind": kind,
            "path": path,
            "method": method,
            "times": times,
            "every": every,
            "retry_after": retry_after,
            "delay": delay,
        }
        return await self._call("POST", "faults", {k: v for k, v in spec.items() if v is not None})  # type: ignore[no-any-return]

    async def faults(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "faults"))["faults"]  # type: ignore[no-any-return]

    async def clear_faults(self) -> int:
        return int((await self._call("DELETE", "faults"))["cleared"])

    async def close_websockets(self) -> int:
        return int((await self._call("POST", "websockets/close"))["closed"])

    async def wait_for_subscribers(self, count: int = 1, within: float = 10.0) -> int:
        """Return once `count` WebSocket connections have subscribed to a stream (e.g. after
        a consumer reconnects); raises RuntimeError after `within` seconds."""
        body = {"subscribers": count, "timeout": within}
        return int((await self._call("POST", "websockets/wait", body))["subscribers"])

    async def orders(
        self, api_key: str | None = None, symbol: str | None = None
    ) -> list[dict[str, Any]]:
        query = {k: v for k, v in (("api_key", api_key), ("symbol", symbol)) if v}
        return (await self._call("GET", "orders", **query))["orders"]  # type: ignore[no-any-return]

    async def balances(self, api_key: str) -> dict[str, dict[str, Decimal]]:
        """{asset: {"free": Decimal, "locked": Decimal}} of one account."""
        accounts = (await self._call("GET", "accounts", api_key=api_key))["accounts"]
        return {
            asset: {k: Decimal(v) for k, v in amounts.items()}
            for asset, amounts in accounts[api_key].items()
        }

    async def open_account(
        self, api_key: str, api_secret: str, balances: Mapping[str, Decimal | str]
    ) -> None:
        body = {
            "api_key": api_key,
            "api_secret": api_secret,
            "balances": {a: str(v) for a, v in balances.items()},
        }
        await self._call("POST", "accounts", body)

    async def requests(self) -> list[dict[str, Any]]:
        """The /api requests seen, oldest first: method, path, status, fault, client_order_id."""
        return (await self._call("GET", "requests"))["requests"]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RunningSimulator:
    """A started simulator: where it listens, a first key pair and its control client."""

    simulator: Simulator
    control: SimulatorControl
    api_key: str
    api_secret: str

    @property
    def base_url(self) -> str:
        return self.simulator.base_url

    @property
    def ws_url(self) -> str:
        return self.simulator.ws_url


@asynccontextmanager
async def running_simulator(
    candles: Mapping[str, Sequence[Candle]] | Sequence[Candle],
    *,
    interval: str | None = None,
    api_keys: Mapping[str, str] | None = None,
    history: int = 0,
    speed: Speed = MANUAL,
    balances: Mapping[str, Decimal] | None = None,
    rules: Mapping[str, SymbolRules] | None = None,
    ping_interval: float = 20.0,
    weight_limit: int = 6000,
) -> AsyncIterator[RunningSimulator]:
    """Start a simulator on 127.0.0.1 (a free port) for the duration of the block.

    `candles` is a list of one symbol's candles or a mapping symbol → candles; the interval
    is taken from the candles unless given. `history` candles are closed from the start.
    `api_keys` maps key → secret (default one pair: DEFAULT_API_KEY/DEFAULT_API_SECRET).
    Speed defaults to "manual": the test moves the replay with `control.advance`.
    """
    series = _by_symbol(candles)
    first = next(iter(series.values()))[0]
    keys = dict(api_keys or {DEFAULT_API_KEY: DEFAULT_API_SECRET})
    setup = SimulatorSetup(
        candles=series,
        interval=interval or first.interval,
        api_keys=keys,
        history=history,
        balances=dict(balances or DEFAULT_BALANCES),
        rules=dict(rules or {}),
        ping_interval=ping_interval,
        weight_limit=weight_limit,
    )
    simulator = Simulator(setup, speed)
    await simulator.start()
    try:
        async with aiohttp.ClientSession() as session:
            key, secret = next(iter(keys.items()))
            control = SimulatorControl(simulator.base_url, session)
            yield RunningSimulator(simulator, control, key, secret)
    finally:
        await simulator.stop()


def ccxt_binance(
    sim: RunningSimulator, api_key: str | None = None, api_secret: str | None = None
) -> Any:
    """A `ccxt.async_support.binance` pointed at `sim` as BINANCE.md prescribes: spot only,
    the fail-closed URL map (nothing outside the simulator), the spot error table, no
    throttle. The caller closes it (`await client.close()`)."""
    import ccxt.async_support as ccxt_async

    client = ccxt_async.binance(
        {
            "apiKey": api_key or sim.api_key,
            "secret": api_secret or sim.api_secret,
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
            },
            "enableRateLimit": False,
        }
    )
    client.urls["api"] = {
        "public": f"{sim.base_url}/api/v3",
        "private": f"{sim.base_url}/api/v3",
        "ws": {"spot": f"{sim.ws_url}/ws"},
    }
    client.exceptions["exact"].update(client.exceptions["spot"]["exact"])
    return client


def _by_symbol(
    candles: Mapping[str, Sequence[Candle]] | Sequence[Candle],
) -> dict[str, list[Candle]]:
    if isinstance(candles, Mapping):
        series = {s: list(c) for s, c in candles.items()}
    else:
        series = {}
        for candle in candles:
            series.setdefault(candle.symbol, []).append(candle)
    if not series or not all(series.values()):
        raise ValueError("running_simulator needs at least one candle per symbol")
    return series


def synthetic_candles(
    symbol: str,
    count: int,
    *,
    interval: str = "1m",
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    price: Decimal = Decimal("30000"),
    seed: int = 1,
) -> list[Candle]:
    """`count` candles of a seeded random walk (±0.3% a candle, two-decimal prices)."""
    rng = random.Random(seed)
    step = interval_delta(interval)
    cent = Decimal("0.01")
    result = []
    close = price
    for index in range(count):
        open_ = close
        close = (open_ * Decimal(1 + rng.uniform(-0.003, 0.003))).quantize(cent)
        high = (max(open_, close) * Decimal(1 + rng.uniform(0, 0.002))).quantize(cent)
        low = (min(open_, close) * Decimal(1 - rng.uniform(0, 0.002))).quantize(cent)
        result.append(
            Candle(
                symbol=symbol,
                interval=interval,
                open_time=start + index * step,
                open=open_,
                high=high,
                low=low,
                close=close,
                volume=Decimal(rng.randint(1, 10_000)) / 100,
                trades=rng.randint(1, 500),
            )
        )
    return result
