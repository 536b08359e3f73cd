"""arq's per-job log lines, on or off (WORKER_LOG_JOBS)."""

from __future__ import annotations

import logging
from typing import Any


class QuietJobLines(logging.Filter):
    """Drops arq's two INFO lines per job, started and succeeded (WORKER_LOG_JOBS=false).

    Matched by arq 0.28's message formats; every other line (retries, cancellations,
    failures, expiries) passes, and so does everything if arq changes them.
    """

    LINES = frozenset({"%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s"})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.LINES


def _quiet_info(logger: logging.Logger) -> Any:
    """`logger.info` that drops QuietJobLines.LINES before a record is made: a filter sees
    a record only after the logger built it (its caller's frame found, the pid and thread
    read), 4-5% of a worker's CPU a no-op job for lines nobody reads (py-spy)."""
    lines = QuietJobLines.LINES

    def info(msg: object, *args: object, **kwargs: Any) -> None:
        if msg in lines:
            return
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # the record names arq's line
        logging.Logger.info(logger, msg, *args, **kwargs)

    return info


def job_lines(enabled: bool) -> None:
    """Log arq's per-job lines (True) or not (WORKER_LOG_JOBS)."""
    arq_log = logging.getLogger("arq.worker")
    for old in [f for f in arq_log.filters if isinstance(f, QuietJobLines)]:
        arq_log.removeFilter(old)
    arq_log.__dict__.pop("info", None)  # Logger.info again
    if not enabled:
        arq_log.info = _quiet_info(arq_log)  # type: ignore[method-assign]
