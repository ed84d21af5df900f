"""Free TCP ports for servers that a test starts in another process.

Asking the kernel for port 0 and closing the socket gives a port from its ephemeral range
(`ip_local_port_range`), the range it also draws the source port of every outbound
connection from. Between the test choosing such a port and the child process binding it
(a second or more), any connection the test or the platform opens can take it, and the
child fails with "address in use". The ports here are chosen below that range instead.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["unused_ports"]

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 20_000  # above the usual servers' ports (PostgreSQL 5432, Redis 6379, ...)
_DEFAULT_EPHEMERAL_START = 32_768  # Linux's default; macOS starts at 49152


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_START


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def unused_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive ports on 127.0.0.1, free now and below the
    kernel's ephemeral range."""
    top = _ephemeral_start() - count
    if top <= _LOWEST:
        raise RuntimeError(f"no room for {count} ports below the ephemeral range")
    for _ in range(500):
        base = random.randrange(_LOWEST, top)
        if all(_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found below the ephemeral range")
