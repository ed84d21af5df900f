"""Test and demo helpers that talk real protocols on 127.0.0.1 (never imported by services).

- `shared.testing.telegram_standin`: `TelegramStandIn`, a local Telegram Bot API server, and
  the `telegram_standin` pytest fixture; ``python -m shared.testing.telegram_standin`` runs it.
- `shared.testing.virtual_time`: `VirtualTime`, an injectable clock and sleep for code that
  would otherwise wait for real.

The submodules are not imported here, so running the stand-in with ``-m`` stays clean.
"""
