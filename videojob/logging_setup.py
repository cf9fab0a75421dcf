"""Logging as every videojob process sets it up, from its ``__main__`` only."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Records at ``level`` and above go to stderr, one line each."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
