"""Ports for child-process servers: free, and out of the kernel's ephemeral range."""

from __future__ import annotations

import socket

import pytest
from shared.testing import ports
from shared.testing.ports import unused_ports


def test_the_ports_are_free_and_below_the_ephemeral_range() -> None:
    base = unused_ports(5)
    assert base >= 20_000
    assert base + 5 <= ports._ephemeral_start()
    listeners = []
    try:
        for port in range(base, base + 5):  # every one of them can be bound now
            listener = socket.socket()
            listeners.append(listener)
            listener.bind(("127.0.0.1", port))
    finally:
        for listener in listeners:
            listener.close()


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        offers = iter([busy, free])  # what the random choice draws, in turn
        monkeypatch.setattr(ports.random, "randrange", lambda low, high: next(offers))
        assert unused_ports() == free
