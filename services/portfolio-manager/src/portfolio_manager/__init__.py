"""Tracks positions, PnL and portfolio snapshots."""
