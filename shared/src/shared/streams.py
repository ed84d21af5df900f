"""The names of the bus streams between the services, and who consumes them.

    data-collector --candles--> strategy-engine --signals--> order-executor
    order-executor --orders--> portfolio-manager

The order executor and the portfolio manager read the candles too: the executor fills dry-run
orders at the next candle's open and checks stop losses; the portfolio marks to market.
"""

from __future__ import annotations

CANDLES = "candles"
"""Closed candles (`shared.models.Candle`), each published once by the data collector."""

SIGNALS = "signals"
"""Strategy decisions (`shared.models.Signal`)."""

ORDERS = "orders"
"""Order updates (`shared.models.Order`) and their fills (`shared.models.Trade`)."""
