"""The platform's strategies, one per `<name>_strategy.py` file, found by the plugin loader.

Parameters default from `config/<file name>.yaml`; see `shared.strategy` for the rules every
strategy shares (warm-up, gaps, redelivered candles).
"""
