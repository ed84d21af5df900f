"""``python -m order_executor``."""

from order_executor.main import main

main()
