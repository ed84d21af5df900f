"""A local server speaking Binance's spot REST and kline WebSocket protocol."""
