"""The simulator's state and the moves that change it, shared by REST, WebSocket and control.

`SimulatorCore` owns the replay (candle clock), the exchange clock that follows it
(`clock.py`), the symbol rules, the accounts, the matcher and the stream hub. Every move of
the replay goes through `step()`, under one lock, so the kline events, the limit-order fills
and what REST shows never disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from shared.models import Candle, interval_delta

from exchange_simulator.accounts import DEFAULT_BALANCES, Account
from exchange_simulator.clock import ExchangeClock
from exchange_simulator.filters import SymbolRules
from exchange_simulator.matching import Matcher
from exchange_simulator.replay import PriceMove, Replay, ms
from exchange_simulator.websocket import StreamHub, kline_event, stream_name


@dataclass
class SimulatorSetup:
    """What a simulator replays and whom it serves.

    `candles` maps each symbol to its candles (one interval for all). `history` is how many
    timeline steps are already closed when the simulator starts (REST serves them at once).
    `api_keys` maps each API key to its secret; each account opens with `balances`.
    """

    candles: Mapping[str, Sequence[Candle]]
    interval: str
    api_keys: Mapping[str, str]
    history: int = 0
    balances: Mapping[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_BALANCES))
    rules: Mapping[str, SymbolRules] = field(default_factory=dict)
    ping_interval: float = 20.0
    weight_limit: int = 6000


class SimulatorCore:
    """Replay, rules, accounts, orders and streams of one simulator."""

    def __init__(self, setup: SimulatorSetup) -> None:
        if not setup.api_keys:
            raise ValueError("the simulator needs at least one API key (KEY:SECRET)")
        self.setup = setup
        self.replay = Replay(setup.candles, setup.interval, setup.history)
        self.clock = ExchangeClock(self.replay)
        self.rules: dict[str, SymbolRules] = {
            symbol: setup.rules.get(symbol)
            or SymbolRules.derived(
                symbol, [p for c in series for p in (c.open, c.high, c.low, c.close)]
            )
            for symbol, series in setup.candles.items()
        }
        self.accounts: dict[str, Account] = {}
        self.matcher = Matcher(self.rules, self.replay.price, self.avg_price, self.clock.now_ms)
        for key, secret in setup.api_keys.items():
            self.open_account(key, secret, setup.balances)
        self.hub = StreamHub(setup.ping_interval)
        self.lock = asyncio.Lock()

    @property
    def interval(self) -> str:
        return self.replay.interval

    @property
    def assets(self) -> list[str]:
        return list(
            dict.fromkeys(a for r in self.rules.values() for a in (r.base_asset, r.quote_asset))
        )

    def open_account(self, api_key: str, secret: str, balances: Mapping[str, Decimal]) -> Account:
        account = Account.opened(api_key, secret, balances)
        self.accounts[api_key] = account
        self.matcher.register(account)
        return account

    def avg_price(self, symbol: str) -> Decimal:
        """Binance's avgPrice: the mean close over the last `avgPriceMins` minutes."""
        minutes = self.rules[symbol].avg_price_mins
        count = max(1, int(minutes * 60 // interval_delta(self.interval).total_seconds()))
        closes = self.replay.closes(symbol, count)
        tick = self.rules[symbol].tick_size
        return (sum(closes, Decimal(0)) / len(closes)).quantize(tick)

    async def step(self, stages: int = 1) -> int:
        """Move the replay `stages` stages; how many it moved (fewer at the end of data)."""
        moved = 0
        async with self.lock:
            for _ in range(stages):
                if self.replay.finished:
                    break
                moves = self.replay.step()
                self.clock.replay_moved()
                self._apply(moves)
                moved += 1
        await self.hub.drain()
        return moved

    async def advance(self, candles: int = 1) -> int:
        """Close the current candle and open the next, `candles` times; how many closed."""
        closed = 0
        async with self.lock:
            for _ in range(candles):
                position = self.replay.position
                while not self.replay.finished and self.replay.position == position:
                    moves = self.replay.step()
                    self.clock.replay_moved()
                    self._apply(moves)
                if self.replay.position == position:
                    break
                closed += 1
        await self.hub.drain()
        return closed

    async def set_price(self, symbol: str, price: Decimal) -> None:
        """Trade `symbol` at `price` now: push the update, fill the orders it crosses."""
        async with self.lock:
            previous = self.replay.price(symbol)
            move = self.replay.set_price(symbol, price)
            if move is not None:
                self._apply([move])
            else:
                self.matcher.on_price_path(symbol, min(previous, price), max(previous, price))
        await self.hub.drain()

    def _apply(self, moves: list[PriceMove]) -> None:
        now = self.clock.now_ms()
        for move in moves:
            candle = move.candle
            self.matcher.on_price_path(candle.symbol, move.low, move.high)
            trades = candle.trades or 0
            first = ms(candle.open_time) // 1000 if trades else -1
            ids = (first, first + trades - 1) if trades else (-1, -1)
            self.hub.publish(
                stream_name(candle.symbol, candle.interval), kline_event(candle, now, ids)
            )
