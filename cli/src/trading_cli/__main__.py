"""``python -m trading_cli``: the `trading` command (how `trading run` starts the simulator)."""

from trading_cli.main import app

app()
