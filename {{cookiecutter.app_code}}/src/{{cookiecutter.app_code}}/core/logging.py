"""One log format for the API and the worker: time, level, logger, message."""

from __future__ import annotations

import logging
import sys

from .config import APP_CODE


def setup_logging(level: str = "INFO") -> logging.Logger:
    """Give the service's logger its own stderr handler (arq and uvicorn configure theirs)."""
    logger = logging.getLogger(APP_CODE)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%H:%M:%S")
        )
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())
    return logger
