"""Export encoding: money as plain decimal strings, ∞ as null, durations in seconds, CSV rows."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from backtester.engine import BacktestConfig, BacktestEngine
from backtester.export import build_manifest, encode, to_json, trades_to_csv
from shared.models import Candle


def test_values_are_encoded_as_the_issue_asks() -> None:
    assert encode(Decimal("1E+3")) == "1000" and encode(Decimal("0.00000001")) == "0.00000001"
    assert encode(math.inf) is None and encode(-math.inf) is None and encode(math.nan) is None
    assert encode(timedelta(hours=1, seconds=1)) == 3601.0
    assert encode(datetime(2024, 1, 2, 3, tzinfo=UTC)) == "2024-01-02T03:00:00+00:00"


def test_a_run_with_only_winners_exports_null_profit_factor_and_csv_rows(
    scripted: Any, make_candles: Callable[..., list[Candle]]
) -> None:
    bars = make_candles([("100", "100"), ("100", "100"), ("100", "120"), ("120", "120")])
    strategy = scripted({"quantity": "1", "buys": (2,), "sells": (3,)})
    result = BacktestEngine(strategy, BacktestConfig("BTCUSDT", "1h")).run(bars)
    manifest = build_manifest(result, {"type": "test"}, datetime(2024, 1, 1, tzinfo=UTC))
    body = json.loads(to_json(result, manifest))
    assert body["metrics"]["profit_factor"] is None  # no losing trade: ∞
    assert body["metrics"]["winning_trades"] == 1
    assert body["trades"][0]["pnl"] == "19.78"  # 20 − 0.1 − 0.12
    assert body["run"]["final_equity"] == "10019.78"
    rows = list(csv.DictReader(io.StringIO(trades_to_csv(result.trades))))
    assert len(rows) == 1 and rows[0]["pnl"] == "19.78" and rows[0]["holding_period"] == "3600.0"
