"""The arq worker: `arq {{ cookiecutter.app_code }}.worker.main.WorkerSettings` (worker/main.py).

`settings` builds arq's settings and prepares the process; `claim` claims jobs in batches;
`logs` turns arq's per-job lines on or off. Importing the package does nothing.
"""
