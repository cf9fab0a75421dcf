"""A port where nothing listens, for tests that need an address before (or without) a server.

The port was free when asked; whatever the test later starts there binds it with SO_REUSEADDR.
Services themselves always take port 0 and say what they bound."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def unused_address() -> str:
    """``127.0.0.1:PORT`` where nothing listens (the port was free a moment ago)."""
    return f"127.0.0.1:{free_port()}"
