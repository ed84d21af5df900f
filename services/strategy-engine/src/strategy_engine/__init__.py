"""Runs strategies on closed candles and publishes signals."""
