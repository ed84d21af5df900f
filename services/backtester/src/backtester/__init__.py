"""Runs strategies on history with the live risk rules and fill model."""
