"""``python -m portfolio_manager`` runs the portfolio-manager service."""

from portfolio_manager.main import main

main()
