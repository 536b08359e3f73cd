"""The last hour of finished jobs, minute by minute, for the status page's charts.

Read from `job_minute`, the per-minute rollup a trigger keeps as jobs finish
(V9__minute_stats.sql): per minute, function, outcome and queue-wait bucket, a count. So a
chart costs a range of a few hundred rows whatever the ledger's size, and the queue-wait
percentiles come from bucket counts: exact to within one bucket, a factor of 10^0.2 (1.58).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from ...db import get_many
from ...db.helpers import Conn
from ...jobs import FINISHED

WINDOW_MINUTES = 60
# The wait buckets (the same bounds as job_wait_bucket() in V9__minute_stats.sql): 0 below
# FIRST_BOUND_S, then BUCKETS_PER_DECADE a decade, LAST_BUCKET from 10^5 s on; NEVER_STARTED
# counts a job that finished without a start (cancelled while queued): no wait.
FIRST_BOUND_S = 0.001
BUCKETS_PER_DECADE = 5
LAST_BUCKET = 41
NEVER_STARTED = -1
# How far a percentile read from the buckets may be from the true one: one bucket's width.
ERROR_FACTOR = 10 ** (1 / BUCKETS_PER_DECADE)


def bucket_of(seconds: float | None) -> int:
    """The bucket of a queue wait, as job_wait_bucket() computes it in PostgreSQL."""
    if seconds is None:
        return NEVER_STARTED
    if seconds < FIRST_BOUND_S:
        return 0
    decades = math.log10(seconds) - math.log10(FIRST_BOUND_S)  # as in SQL: log(s) + 3
    return min(LAST_BUCKET, 1 + math.floor(BUCKETS_PER_DECADE * decades))


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """The waits a bucket holds, [low, high) seconds (the last one's high is infinite)."""
    if bucket <= 0:
        return 0.0, FIRST_BOUND_S
    low = FIRST_BOUND_S * 10 ** ((bucket - 1) / BUCKETS_PER_DECADE)
    if bucket >= LAST_BUCKET:
        return low, math.inf
    return low, FIRST_BOUND_S * 10 ** (bucket / BUCKETS_PER_DECADE)


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0 < q < 1) of the waits counted per bucket; None without any.

    Interpolated within its bucket (linearly in the first, geometrically in the others, as
    the buckets are log-spaced); the last bucket, unbounded, answers its lower bound."""
    waits = sorted((b, n) for b, n in counts.items() if b != NEVER_STARTED and n > 0)
    total = sum(n for _, n in waits)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bucket, n in waits:
        if seen + n >= rank:
            low, high = bucket_bounds(bucket)
            within = (rank - seen) / n
            if bucket <= 0:
                return high * within
            if math.isinf(high):
                return low
            return float(low * (high / low) ** within)
        seen += n
    return bucket_bounds(waits[-1][0])[0]  # not reached: rank <= total


@dataclass
class Minute:
    """One minute of the window: jobs finished per outcome, and their queue wait (complete
    once build_window returns: the figures below are computed once, then kept)."""

    start: datetime
    finished: dict[str, int]
    waits: dict[int, int] = field(default_factory=dict)

    @cached_property
    def total(self) -> int:
        return sum(self.finished.values())

    @cached_property
    def waited(self) -> int:
        """Jobs with a queue wait (those that started)."""
        return sum(n for b, n in self.waits.items() if b != NEVER_STARTED)

    @cached_property
    def p50(self) -> float | None:
        return quantile(self.waits, 0.50)

    @cached_property
    def p95(self) -> float | None:
        return quantile(self.waits, 0.95)

    @cached_property
    def clock(self) -> str:
        """'HH:MM', UTC: the charts' labels."""
        return self.start.strftime("%H:%M")

    @cached_property
    def iso(self) -> str:
        """The minute in ISO 8601, UTC: the charts' data attributes."""
        return self.start.strftime("%Y-%m-%dT%H:%MZ")


@dataclass
class Window:
    """The charts' data: WINDOW_MINUTES minutes, oldest first, and the outcomes shown."""

    minutes: list[Minute]
    outcomes: tuple[str, ...]
    function: str | None = None


def window_start(now: datetime) -> datetime:
    """The first minute shown: the current minute is the last of WINDOW_MINUTES."""
    current = now.replace(second=0, microsecond=0)
    return current - timedelta(minutes=WINDOW_MINUTES - 1)


def build_window(
    rows: Iterable[Mapping[str, Any]], now: datetime, function: str | None = None
) -> Window:
    """The window from the rollup's rows (minute, outcome, wait_bucket, n). Every finished
    status of the code (jobs.FINISHED) is an outcome, with or without jobs; one the code does
    not know (written by another version) is shown too, after them."""
    first = window_start(now)
    outcomes: list[str] = list(FINISHED)
    minutes = [Minute(first + timedelta(minutes=i), {}) for i in range(WINDOW_MINUTES)]
    for row in rows:
        index = int((row["minute"] - first).total_seconds() // 60)
        if not 0 <= index < WINDOW_MINUTES:
            continue
        minute, outcome, n = minutes[index], str(row["outcome"]), int(row["n"])
        if outcome not in outcomes:
            outcomes.append(outcome)
        minute.finished[outcome] = minute.finished.get(outcome, 0) + n
        bucket = int(row["wait_bucket"])
        minute.waits[bucket] = minute.waits.get(bucket, 0) + n
    for minute in minutes:
        minute.finished = {o: minute.finished.get(o, 0) for o in outcomes}
    return Window(minutes, tuple(outcomes), function)


async def read_window(conn: Conn, now: datetime, function: str | None = None) -> Window:
    """The last WINDOW_MINUTES minutes of the rollup, for one function or all."""
    since = window_start(now)
    if function is None:
        rows = await get_many(conn, "status.minutes", {"since": since})
    else:
        rows = await get_many(conn, "status.minutes_of", {"since": since, "function": function})
    return build_window(rows, now, function)
