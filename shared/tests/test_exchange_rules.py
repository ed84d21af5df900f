"""Client order ids and the pre-send filter checks (pure code, no exchange)."""

from __future__ import annotations

from decimal import Decimal

import ccxt.async_support as ccxt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from shared.config import load_settings
from shared.exchange import (
    BinanceExchange,
    FilterRejectedError,
    SymbolFilters,
    check_order,
    client_order_id_for_signal,
    is_valid_client_order_id,
)

BTCUSDT_FILTERS = [  # as Binance lists them for BTCUSDT
    {
        "filterType": "PRICE_FILTER",
        "minPrice": "0.01000000",
        "maxPrice": "1000000.00000000",
        "tickSize": "0.01000000",
    },
    {
        "filterType": "LOT_SIZE",
        "minQty": "0.00001000",
        "maxQty": "9000.00000000",
        "stepSize": "0.00001000",
    },
    {
        "filterType": "MARKET_LOT_SIZE",
        "minQty": "0.00000000",
        "maxQty": "121.75000000",
        "stepSize": "0.00000000",
    },
    {
        "filterType": "NOTIONAL",
        "minNotional": "5.00000000",
        "applyMinToMarket": True,
        "maxNotional": "9000000.00000000",
        "applyMaxToMarket": False,
        "avgPriceMins": 5,
    },
]


@given(st.text(min_size=1, max_size=80))
def test_client_order_id_is_deterministic_and_always_valid(signal_id):
    cid = client_order_id_for_signal(signal_id)
    assert cid == client_order_id_for_signal(signal_id)
    assert is_valid_client_order_id(cid)
    assert len(cid) <= 36


def test_a_32_hex_signal_id_is_kept_readable_and_distinct_ids_stay_distinct():
    assert client_order_id_for_signal("0123456789abcdef0123456789abcdef") == (
        "sig-0123456789abcdef0123456789abcdef"
    )
    assert client_order_id_for_signal("a" * 40) != client_order_id_for_signal("a" * 41)


def test_empty_signal_id_is_refused():
    with pytest.raises(ValueError, match="signal_id"):
        client_order_id_for_signal("")


def test_filters_parse_from_exchange_info():
    f = SymbolFilters.from_exchange_info("BTCUSDT", BTCUSDT_FILTERS)
    assert f.step_size == Decimal("0.00001")
    assert f.tick_size == Decimal("0.01")
    assert f.min_notional == Decimal("5")
    # MARKET_LOT_SIZE has only maxQty set: it governs market orders.
    assert f.lot(market=True) == (Decimal(0), Decimal(0), Decimal("121.75"))


def test_notional_below_minimum_names_the_filter_and_the_nearest_valid_quantity():
    f = SymbolFilters.from_exchange_info("BTCUSDT", BTCUSDT_FILTERS)
    with pytest.raises(FilterRejectedError) as caught:
        check_order(f, Decimal("0.00005"), Decimal("60000"), market=False)
    error = caught.value
    assert error.filter_name == "NOTIONAL"
    # 5 / 60000 = 0.0000833.. → up to the 0.00001 step
    assert error.nearest_valid_quantity == Decimal("0.00009")
    assert "NOTIONAL" in str(error) and "0.00009" in str(error)
    check_order(f, error.nearest_valid_quantity, Decimal("60000"), market=False)


def test_market_order_notional_is_judged_at_the_reference_price():
    f = SymbolFilters.from_exchange_info("BTCUSDT", BTCUSDT_FILTERS)
    with pytest.raises(FilterRejectedError, match="NOTIONAL"):
        check_order(f, Decimal("0.00001"), Decimal("60000"), market=True)
    check_order(f, Decimal("0.001"), Decimal("60000"), market=True)


def test_lot_size_and_price_filter_violations_are_named():
    f = SymbolFilters.from_exchange_info("BTCUSDT", BTCUSDT_FILTERS)
    with pytest.raises(FilterRejectedError) as caught:
        check_order(f, Decimal("0.000001"), Decimal("60000"), market=False)
    assert caught.value.filter_name == "LOT_SIZE"
    assert caught.value.nearest_valid_quantity == Decimal("0.00001")
    with pytest.raises(FilterRejectedError) as caught:
        check_order(f, Decimal("0.1"), Decimal("0.001"), market=False)
    assert caught.value.filter_name == "PRICE_FILTER"


async def test_testnet_setting_selects_the_spot_testnet_and_nothing_else():
    exchange = BinanceExchange(load_settings(binance_testnet=True))
    try:
        assert exchange.ccxt.urls["api"] == {
            "public": "https://testnet.binance.vision/api/v3",
            "private": "https://testnet.binance.vision/api/v3",
            "ws": {"spot": "wss://stream.testnet.binance.vision/ws"},
        }
        assert exchange.ccxt.session is None  # nothing connected at construction
        with pytest.raises(ccxt.NotSupported):
            await exchange.ccxt.sapiGetCapitalConfigGetall()
        with pytest.raises(ccxt.NotSupported):
            await exchange.ccxt.fapiPrivateGetAccount()
    finally:
        await exchange.close()
