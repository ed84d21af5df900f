"""``python -m data_collector``."""

from data_collector.main import main

main()
