"""Collects Binance klines over WebSocket and REST, stores them, publishes closed candles."""
