"""One log format for the API and the worker: one JSON object per line.

Every line has `time`, `level`, `logger` and `message`, and, where known, the `trace_id` and
`span_id` of the current OpenTelemetry span (core/tracing.py) and the `job_id` of the job
being run or submitted, so a log search by trace id finds the request and the job's run.
arq's and uvicorn's lines get the same format (`json_lines`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from .config import APP_CODE

# The job a line is about: set by the worker around a run (and by the API around a submission).
JOB_ID: ContextVar[str | None] = ContextVar(f"{APP_CODE}_job_id", default=None)
FIELDS = "%(levelname)s %(name)s %(message)s"
RENAMED = {"levelname": "level", "name": "logger"}


class TraceFields(logging.Filter):
    """Adds trace_id, span_id and job_id to a record, where known."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        job_id = JOB_ID.get()
        if job_id is not None and not hasattr(record, "job_id"):
            record.job_id = job_id
        return True


def formatter() -> JsonFormatter:
    """JSON lines with an ISO 8601 UTC `time`, non-ASCII kept as is (arq's arrows stay
    readable)."""
    return JsonFormatter(FIELDS, rename_fields=RENAMED, timestamp="time", json_ensure_ascii=False)


def json_lines(*names: str) -> None:
    """Give the handlers of these loggers (arq's, uvicorn's) the JSON format and trace fields."""
    for name in names:
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter())
            if not any(isinstance(f, TraceFields) for f in handler.filters):
                handler.addFilter(TraceFields())


def silence(name: str) -> None:
    """No output at all from this logger (uvicorn's access log): without handlers uvicorn does
    not even format its line (it checks `hasHandlers()` once per connection)."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = False


def setup_logging(level: str = "INFO") -> logging.Logger:
    """Give the service's logger its own stderr handler (arq and uvicorn configure theirs)."""
    logger = logging.getLogger(APP_CODE)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter())
        handler.addFilter(TraceFields())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())
    return logger


@contextmanager
def job_scope(job_id: str) -> Iterator[None]:
    """Lines logged inside carry this job_id."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)
