"""create_order through the adapter vs raw signed aiohttp POSTs, against the simulator.

    uv run --frozen python bench/bench_exchange.py [--orders 1000] [--rounds 5]

Both sides send the same MARKET order request (same parameters, HMAC-signed the same way)
to the exchange simulator on 127.0.0.1, one order at a time, in interleaved rounds. The
simulator runs in the same process and event loop, so its own work is in both numbers.
Rows: the adapter with ``lookup_first=False`` (one POST, like the raw client), the adapter's
default ``lookup_first=True`` (a GET by client order id first), ccxt's create_order alone, and
raw aiohttp. CPU ms/order is the whole process's (client and simulator) CPU time per order.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import statistics
import time
from decimal import Decimal
from urllib.parse import urlencode

import aiohttp
from exchange_simulator.testing import running_simulator, synthetic_candles
from shared.config import load_settings
from shared.exchange import BinanceExchange, OrderRequest
from shared.models import Side

SYMBOL = "BTCUSDT"
QUANTITY = "0.001"


async def adapter_round(
    exchange: BinanceExchange, first_id: int, count: int, *, lookup_first: bool
) -> list[float]:
    latencies = []
    for n in range(first_id, first_id + count):
        request = OrderRequest(
            SYMBOL,
            Side.BUY if n % 2 else Side.SELL,
            Decimal(QUANTITY),
            f"bench-a-{n}",
            reference_price=Decimal("30000"),
        )
        started = time.perf_counter()
        await exchange.submit_order(request, lookup_first=lookup_first)
        latencies.append(time.perf_counter() - started)
    return latencies


async def raw_round(
    session: aiohttp.ClientSession, base_url: str, key: str, secret: str, first_id: int, count: int
) -> list[float]:
    latencies = []
    for n in range(first_id, first_id + count):
        started = time.perf_counter()
        params = {
            "symbol": SYMBOL,
            "side": "BUY" if n % 2 else "SELL",
            "type": "MARKET",
            "quantity": QUANTITY,
            "newClientOrderId": f"bench-r-{n}",
            "newOrderRespType": "FULL",
            "timestamp": int(time.time() * 1000),
            "recvWindow": 10000,
        }
        body = urlencode(params)
        signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        async with session.post(
            f"{base_url}/api/v3/order",
            data=f"{body}&signature={signature}",
            headers={"X-MBX-APIKEY": key, "Content-Type": "application/x-www-form-urlencoded"},
        ) as response:
            payload = await response.json()
            if response.status != 200:
                raise RuntimeError(f"raw order refused: {payload}")
        latencies.append(time.perf_counter() - started)
    return latencies


async def ccxt_round(exchange: BinanceExchange, first_id: int, count: int) -> list[float]:
    """ccxt's create_order alone (no rounding, checks or parsing of ours), for reference."""
    latencies = []
    for n in range(first_id, first_id + count):
        started = time.perf_counter()
        await exchange.ccxt.create_order(
            "BTC/USDT",
            "market",
            "buy" if n % 2 else "sell",
            QUANTITY,
            None,
            {"newClientOrderId": f"bench-c-{n}"},
        )
        latencies.append(time.perf_counter() - started)
    return latencies


def summary(name: str, latencies: list[float], wall: float, cpu: float) -> str:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    count = len(latencies)
    return (
        f"| {name} | {count / wall:,.0f} | {p50:.2f} | {p99:.2f} | "
        f"{cpu / count * 1000:.2f} | {count} |"
    )


async def main(orders: int, rounds: int) -> None:
    candles = synthetic_candles(SYMBOL, 300)
    balances = {"USDT": Decimal("100000000"), "BTC": Decimal("1000")}
    per_round = max(1, orders // rounds)
    # Binance allows 6000 weight a minute; the benchmark sends more than that, so both the
    # simulator's limit and the adapter's weight guard are lifted (else it waits a minute).
    async with running_simulator(
        candles, history=200, balances=balances, weight_limit=10**9
    ) as sim:
        settings = load_settings(
            binance_base_url=sim.base_url,
            binance_ws_url=sim.ws_url,
            binance_api_key=sim.api_key,
            binance_api_secret=sim.api_secret,
        )
        results: dict[str, tuple[list[float], float, float]] = {
            "adapter submit_order (lookup_first=False)": ([], 0.0, 0.0),
            "adapter submit_order (lookup_first=True)": ([], 0.0, 0.0),
            "ccxt create_order alone": ([], 0.0, 0.0),
            "raw aiohttp signed POST": ([], 0.0, 0.0),
        }
        async with (
            BinanceExchange(
                settings, enable_rate_limit=False, weight_limit_per_minute=10**9
            ) as exchange,
            aiohttp.ClientSession() as session,
        ):
            await exchange.load_markets()
            # warm-up: connections, markets, code paths
            await adapter_round(exchange, 10_000_000, 20, lookup_first=False)
            await raw_round(session, sim.base_url, sim.api_key, sim.api_secret, 10_000_000, 20)
            for r in range(rounds):
                first = r * per_round
                for name in results:
                    started = time.perf_counter()
                    cpu_started = time.process_time()
                    if name.startswith("ccxt"):
                        lat = await ccxt_round(exchange, first, per_round)
                    elif name.startswith("raw"):
                        lat = await raw_round(
                            session, sim.base_url, sim.api_key, sim.api_secret, first, per_round
                        )
                    else:
                        lat = await adapter_round(
                            exchange,
                            first + (5_000_000 if "True" in name else 0),
                            per_round,
                            lookup_first="True" in name,
                        )
                    collected, wall, cpu = results[name]
                    results[name] = (
                        collected + lat,
                        wall + time.perf_counter() - started,
                        cpu + time.process_time() - cpu_started,
                    )
        placed = len(await sim.control.orders(api_key=sim.api_key))
    print(f"{orders} orders per row in {rounds} interleaved rounds; {placed} orders placed")
    print("| client | orders/s | p50 ms | p99 ms | CPU ms/order | orders |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (lat, wall, cpu) in results.items():
        print(summary(name, lat, wall, cpu))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.rounds))
