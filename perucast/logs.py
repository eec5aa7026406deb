"""Logging set-up for command-line entry points (never at import time)."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once: timestamps, level, logger name; level from PERUCAST_LOG."""
    level = (level or os.environ.get("PERUCAST_LOG", "INFO")).upper()
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    else:
        root.setLevel(level)
