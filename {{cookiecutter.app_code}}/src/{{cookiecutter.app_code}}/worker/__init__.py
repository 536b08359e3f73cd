"""The arq worker: `arq {{ cookiecutter.app_code }}.worker.WorkerSettings`."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # WorkerSettings reads the settings when it is built: import it only when asked for, so
    # the cron parser and the heartbeat helpers import without a `.env`.
    if name == "WorkerSettings":
        from .settings import WorkerSettings

        return WorkerSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["WorkerSettings"]
