"""Every Prometheus metric of the platform, defined once (spec 1.5).

Services import the metric they update from here, so a name or a label set can never
differ between two places. All live in one registry, `REGISTRY`, which the health server's
`/metrics` exposes; each process only updates the ones its service uses.

A labelled metric shows samples only once a child (a label combination) exists. The code that
knows the label values creates the children up front, at zero: `shared.service` sets
``service_up{service}``, every bus `Consumer` creates its ``bus_*{stream,group}`` and
``event_processing_seconds{service,stream}`` children, and a service creates its own (its
symbols, strategies) at start with ``.labels(...)``. Other label values (error types, order
statuses, rejection reasons) appear when they first happen.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Common to every service
SERVICE_UP = Gauge("service_up", "1 while the service runs", ["service"], registry=REGISTRY)
ERRORS_TOTAL = Counter(
    "errors_total", "Errors by service and error type", ["service", "error_type"], registry=REGISTRY
)
EVENT_PROCESSING_SECONDS = Histogram(
    "event_processing_seconds",
    "Time to handle one bus event",
    ["service", "stream"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)

# data-collector
CANDLES_RECEIVED_TOTAL = Counter(
    "candles_received_total", "Closed candles received", ["symbol", "interval"], registry=REGISTRY
)
WS_RECONNECTIONS_TOTAL = Counter(
    "ws_reconnections_total", "Kline WebSocket reconnections", registry=REGISTRY
)

# strategy-engine
SIGNALS_GENERATED_TOTAL = Counter(
    "signals_generated_total", "Signals generated", ["strategy", "side"], registry=REGISTRY
)
STRATEGY_EXECUTION_SECONDS = Histogram(
    "strategy_execution_seconds",
    "Time of one on_candle call",
    ["strategy"],
    buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1),
    registry=REGISTRY,
)

# order-executor
ORDERS_TOTAL = Counter(
    "orders_total", "Orders by final status", ["status", "side"], registry=REGISTRY
)
RISK_REJECTIONS_TOTAL = Counter(
    "risk_rejections_total",
    "Signals rejected or reduced by a risk rule",
    ["reason"],
    registry=REGISTRY,
)

# portfolio-manager
PORTFOLIO_VALUE = Gauge("portfolio_value", "Total portfolio value in USDT", registry=REGISTRY)
UNREALIZED_PNL = Gauge("unrealized_pnl", "Unrealized PnL in USDT", ["symbol"], registry=REGISTRY)

# Event bus
BUS_PUBLISHED_TOTAL = Counter(
    "bus_events_published_total", "Events published", ["stream"], registry=REGISTRY
)
BUS_CONSUMED_TOTAL = Counter(
    "bus_events_consumed_total",
    "Events handled and acknowledged",
    ["stream", "group"],
    registry=REGISTRY,
)
BUS_DEAD_LETTERED_TOTAL = Counter(
    "bus_events_dead_lettered_total",
    "Events moved to the dead-letter stream",
    ["stream", "group"],
    registry=REGISTRY,
)
BUS_CONSUMER_LAG = Gauge(
    "bus_consumer_lag",
    "Entries not yet delivered to the group",
    ["stream", "group"],
    registry=REGISTRY,
)

# Resilience and notifications
CIRCUIT_BREAKER_STATE = Gauge(
    "circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open",
    ["name"],
    registry=REGISTRY,
)
TELEGRAM_MESSAGES_SENT_TOTAL = Counter(
    "telegram_messages_sent_total", "Telegram messages delivered", registry=REGISTRY
)
TELEGRAM_MESSAGES_DROPPED_TOTAL = Counter(
    "telegram_messages_dropped_total",
    "Telegram messages given up on",
    ["reason"],
    registry=REGISTRY,
)

SPEC_METRIC_NAMES = (
    "service_up",
    "errors_total",
    "event_processing_seconds",
    "candles_received_total",
    "ws_reconnections_total",
    "signals_generated_total",
    "strategy_execution_seconds",
    "orders_total",
    "risk_rejections_total",
    "portfolio_value",
    "unrealized_pnl",
)
"""The metric names the spec lists, for tests and dashboards."""
