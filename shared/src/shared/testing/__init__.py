"""Test and demo helpers that talk real protocols on 127.0.0.1 (never imported by services).

`telegram_standin.TelegramStandIn` is a local Telegram Bot API server; `virtual_time.VirtualTime`
is an injectable clock and sleep for code that would otherwise wait for real.
"""

from shared.testing.telegram_standin import ReceivedRequest, TelegramStandIn
from shared.testing.virtual_time import VirtualTime

__all__ = ["ReceivedRequest", "TelegramStandIn", "VirtualTime"]
