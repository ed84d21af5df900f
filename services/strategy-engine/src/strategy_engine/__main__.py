"""``python -m strategy_engine`` runs the strategy-engine service."""

from strategy_engine.main import main

main()
