"""The worker's entry point: `arq {{ cookiecutter.app_code }}.worker.main.WorkerSettings`.

Importing this module prepares the process (worker/settings.py: `install`) and builds the
settings arq reads, as `api/main.py` builds the API's app.
"""

from __future__ import annotations

from .settings import install, worker_settings

SETTINGS = install()
WorkerSettings = worker_settings(SETTINGS)
