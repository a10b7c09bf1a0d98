"""Loopback ports for tests: one nobody can listen on, and ones a child process may bind.

``closed_port`` keeps its socket bound (never listening) until the test process exits. A
port that was merely bound and released can be handed straight back by the kernel to the
next ``bind(0)``: a server the same test starts may then listen on the "closed" port, and a
request meant to be refused reaches it instead (seen in CI as a queue-proxy dialing itself).
A bound socket without ``listen`` makes every connect to it fail with ECONNREFUSED, and no
other socket can bind the port while it is held.
"""

from __future__ import annotations

import socket

__all__ = ["closed_port", "free_port"]

_HELD: list[socket.socket] = []


def closed_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` where connects are refused for the rest of the test session."""
    sock = socket.socket()
    sock.bind((host, 0))
    _HELD.append(sock)  # a handful per session; closed when the process exits
    return int(sock.getsockname()[1])


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, for a server a child process binds itself."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
