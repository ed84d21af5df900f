"""JSON and CSV forms of a backtest result, and its manifest.

Encoding: money and quantities as decimal strings (no exponent, no trailing zeros), ratios as JSON
numbers (±∞ and NaN as null), durations in seconds, datetimes ISO 8601 in UTC. Everything but
the manifest's `created_at` depends only on the inputs, so the same run gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import fields
from datetime import datetime, timedelta
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from backtester.engine import BacktestResult
from backtester.metrics import DetailedMetrics
from backtester.simulator import OpenPosition, TradeRecord

TRADE_COLUMNS = TradeRecord._fields


def package_version() -> str:
    """The installed backtester's version."""
    try:
        return version("backtester")
    except PackageNotFoundError:  # pragma: no cover - only when run from a bare checkout
        return "unknown"


def encode(value: Any) -> Any:
    """One value in the export's encoding (see the module docstring)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # no exponent, no trailing zeros
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def trade_dict(trade: TradeRecord) -> dict[str, Any]:
    return {name: encode(getattr(trade, name)) for name in TRADE_COLUMNS}


def metrics_dict(metrics: DetailedMetrics) -> dict[str, Any]:
    """The DetailedMetrics fields except `trades`."""
    return {f.name: encode(getattr(metrics, f.name)) for f in fields(metrics) if f.name != "trades"}


def open_position_dict(position: OpenPosition | None) -> dict[str, Any] | None:
    if position is None:
        return None
    return {f.name: encode(getattr(position, f.name)) for f in fields(position)}


def build_manifest(
    result: BacktestResult, source: dict[str, Any], created_at: datetime
) -> dict[str, Any]:
    """What produced the result: enough to run it again."""
    config = result.config
    return {
        "strategy": result.strategy,
        "params": encode(result.params),
        "symbol": config.symbol,
        "interval": config.interval,
        "data_source": encode(source),
        "initial_balance": encode(config.initial_balance),
        "fee": encode(config.fee),
        "slippage": encode(config.slippage),
        "risk": config.risk.as_dict(),
        "package_version": package_version(),
        "created_at": created_at.isoformat(),
    }


def result_dict(result: BacktestResult, manifest: dict[str, Any]) -> dict[str, Any]:
    """The whole result as one JSON-ready object."""
    counts = result.counts
    return {
        "metrics": metrics_dict(result.metrics),
        "run": {
            "start": encode(result.start),
            "end": encode(result.end),
            "candles": result.candles,
            "warmup_candles": result.warmup_candles,
            "initial_balance": encode(result.config.initial_balance),
            "final_equity": encode(result.final_equity),
            "fees_paid": encode(result.fees_paid),
            "open_position": open_position_dict(result.open_position),
            "execution": encode({f.name: getattr(counts, f.name) for f in fields(counts)}),
        },
        "trades": [trade_dict(t) for t in result.trades],
        "equity_curve": [[encode(t), encode(e)] for t, e in result.equity_curve],
        "manifest": manifest,
    }


def to_json(result: BacktestResult, manifest: dict[str, Any]) -> str:
    """The result as JSON text (NaN and infinities never appear: they are null)."""
    return json.dumps(result_dict(result, manifest), indent=2, allow_nan=False) + "\n"


def trades_to_csv(trades: list[TradeRecord]) -> str:
    """The closed trades as CSV with a header row (durations in seconds)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRADE_COLUMNS)
    for trade in trades:
        row = trade_dict(trade)
        writer.writerow(["" if row[c] is None else row[c] for c in TRADE_COLUMNS])
    return buffer.getvalue()
