"""The arq worker: `arq {{ cookiecutter.app_code }}.worker.WorkerSettings`."""

from .settings import WorkerSettings

__all__ = ["WorkerSettings"]
