"""Accounts: one per API key, with free and locked balances per asset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from exchange_simulator import errors
from exchange_simulator.filters import fmt

DEFAULT_BALANCES: Mapping[str, Decimal] = {"USDT": Decimal(10_000)}


@dataclass
class Balance:
    free: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)


@dataclass
class Account:
    """The balances of one API key. Its secret signs its requests."""

    api_key: str
    secret: str = field(repr=False)
    balances: dict[str, Balance] = field(default_factory=dict)

    @classmethod
    def opened(cls, api_key: str, secret: str, balances: Mapping[str, Decimal]) -> Account:
        return cls(api_key, secret, {a: Balance(Decimal(v)) for a, v in balances.items()})

    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    def lock(self, asset: str, amount: Decimal) -> None:
        """Move `amount` from free to locked, or raise -2010 (insufficient balance)."""
        balance = self.balance(asset)
        if balance.free < amount:
            raise errors.insufficient_balance()
        balance.free -= amount
        balance.locked += amount

    def unlock(self, asset: str, amount: Decimal) -> None:
        balance = self.balance(asset)
        balance.locked -= amount
        balance.free += amount

    def require_free(self, asset: str, amount: Decimal) -> None:
        if self.balance(asset).free < amount:
            raise errors.insufficient_balance()

    def balances_json(self, assets: list[str]) -> list[dict[str, str]]:
        """The `balances` array of GET /api/v3/account: every known asset, zeros included."""
        names = list(dict.fromkeys([*self.balances, *assets]))
        return [
            {"asset": a, "free": fmt(self.balance(a).free), "locked": fmt(self.balance(a).locked)}
            for a in names
        ]
