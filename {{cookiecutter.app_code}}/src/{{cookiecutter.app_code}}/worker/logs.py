"""arq's per-job log lines, on or off (WORKER_LOG_JOBS)."""

from __future__ import annotations

import logging


class QuietJobLines(logging.Filter):
    """Drops arq's two INFO lines per job, started and succeeded (WORKER_LOG_JOBS=false).

    Matched by arq 0.28's message formats; every other line (retries, cancellations,
    failures, expiries) passes, and so does everything if arq changes them.
    """

    LINES = frozenset({"%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s"})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.LINES


def job_lines(enabled: bool) -> None:
    """Log arq's per-job lines (True) or not (WORKER_LOG_JOBS)."""
    arq_log = logging.getLogger("arq.worker")
    for old in [f for f in arq_log.filters if isinstance(f, QuietJobLines)]:
        arq_log.removeFilter(old)
    if not enabled:
        arq_log.addFilter(QuietJobLines())
