"""WORKER_LOG_JOBS: arq's per-job lines are dropped, every other worker line passes."""

from __future__ import annotations

import inspect
import logging

import arq.worker
import pytest

from {{ cookiecutter.app_code }}.worker.logs import QuietJobLines


def record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("arq.worker", logging.INFO, __file__, 1, msg, None, None)


def test_the_filtered_lines_are_arqs_own_formats() -> None:
    """If arq changes its messages, this fails (and the filter would drop nothing)."""
    source = inspect.getsource(arq.worker)
    for line in QuietJobLines.LINES:
        assert f"logger.info('{line}'" in source, line


@pytest.mark.parametrize(
    "msg",
    [
        "%6.2fs ↻ %s retrying job in %0.2fs",
        "%6.2fs ↻ %s cancelled, will be run again",
        "%6.2fs ⊘ %s aborted",
        "%6.2fs ! %s max retries %d exceeded",
        "job %s expired",
    ],
)
def test_retries_cancellations_and_failures_pass(msg: str) -> None:
    assert QuietJobLines().filter(record(msg)) is True


def test_started_and_succeeded_lines_are_dropped() -> None:
    quiet = QuietJobLines()
    assert [quiet.filter(record(m)) for m in sorted(QuietJobLines.LINES)] == [False, False]
