"""The risk state in Redis: saved states land in the order they were taken."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from order_executor.risk import RiskState
from order_executor.risk_store import RiskStateStore
from redis.asyncio import Redis


@pytest.fixture
async def redis(redis_server_url: str, redis_namespace: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server_url)
    yield client
    await client.delete(f"{redis_namespace}order-executor:risk")
    await client.aclose()


async def stored(redis: Redis, store: RiskStateStore) -> RiskState:
    return RiskState.from_dict(json.loads(await redis.get(store.key)))


async def test_a_state_taken_later_is_written_after_one_still_in_flight(
    redis: Redis, redis_namespace: str
) -> None:
    # The executor takes the state under its lock and writes it after releasing it, so a
    # second write can be called while the first one's SET is on its way.
    store = RiskStateStore(redis, redis_namespace)
    original = RiskState()
    await store.save(original)
    halted = RiskState(buys_halted=True)
    first = asyncio.create_task(store.write(store.encode(halted)))
    await asyncio.sleep(0)  # the first write runs up to its first wait: the SET on its way
    # Back to the original state: equal to what was stored before the first write, but
    # newer than it; it must not be skipped as "unchanged" nor overtaken.
    await asyncio.gather(first, store.write(store.encode(original)))
    assert await stored(redis, store) == original


async def test_an_unchanged_state_is_not_written_again(redis: Redis, redis_namespace: str) -> None:
    store = RiskStateStore(redis, redis_namespace)
    await store.save(RiskState(buys_halted=True))
    await redis.set(store.key, json.dumps(RiskState().to_dict()))  # changed behind its back
    await store.save(RiskState(buys_halted=True))  # what it wrote last: no round trip
    assert await stored(redis, store) == RiskState()
