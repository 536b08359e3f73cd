"""WORKER_LOG_JOBS: arq's per-job lines are dropped, every other worker line passes."""

from __future__ import annotations

import inspect
import logging

import arq.worker
import pytest

from {{ cookiecutter.app_code }}.worker.logs import QuietJobLines, job_lines


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


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_job_lines_off_makes_no_record_of_the_two_lines() -> None:
    """WORKER_LOG_JOBS=false drops the lines before a record is made; the others keep their
    caller's line; true brings the two back."""
    arq_log = logging.getLogger("arq.worker")
    was_quiet = "info" in arq_log.__dict__
    handler, level = Records(), arq_log.level
    arq_log.addHandler(handler)
    arq_log.setLevel(logging.INFO)
    try:
        job_lines(False)
        for line in sorted(QuietJobLines.LINES):
            arq_log.info(line, 1.0, "a", "b", "c")
        arq_log.info("%6.2fs ⊘ %s aborted", 1.0, "job")
        assert [r.getMessage() for r in handler.records] == ["  1.00s ⊘ job aborted"]
        assert handler.records[0].funcName == "test_job_lines_off_makes_no_record_of_the_two_lines"
        job_lines(True)
        arq_log.info("%6.2fs ← %s ● %s", 1.0, "job", "{}")
        assert len(handler.records) == 2
    finally:
        arq_log.removeHandler(handler)
        arq_log.setLevel(level)
        job_lines(not was_quiet)
