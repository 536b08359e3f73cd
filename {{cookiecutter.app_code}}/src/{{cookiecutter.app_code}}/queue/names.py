"""Names arq's keys and queues go by here: the priorities' queues, the kwargs that ride beside a
job's params, and when a job is due."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

# The job's trace context (a W3C traceparent) rides beside its params under this key, which no
# params model can declare (a leading underscore); the worker takes it out before the params.
TRACE_KWARG = "_traceparent"
# A job run again by a retry (POST .../retry) carries the retry's time (retry_marker) under
# this key, so that arq's result of an earlier run (same id) is told from the retry's own.
RETRY_KWARG = "_retry"


def retry_marker(enqueued_at: datetime) -> str:
    """What a retried job's runs carry: the ledger's enqueued_at of the retry, in UTC."""
    return enqueued_at.astimezone(UTC).isoformat()


Priority = Literal["high", "default", "low"]
# The claim reads the queues in this order (worker/claim.py); `default` is arq's own queue.
PRIORITIES: tuple[Priority, ...] = ("high", "default", "low")


def queue_for(queue_name: str, priority: str) -> str:
    """The sorted set of one priority: arq's queue for `default` (where claimed jobs of every
    priority also wait while they run), `<queue>:high` and `<queue>:low` for the others."""
    return queue_name if priority == "default" else f"{queue_name}:{priority}"


def all_queues(queue_name: str) -> list[str]:
    """Every priority's queue, in the order the claim reads them."""
    return [queue_for(queue_name, priority) for priority in PRIORITIES]


# A priority's place in all_queues (Lua counts from 1): ENQUEUE_IF_NEW's last argument a job.
QUEUE_INDEX: dict[str, int] = {priority: n + 1 for n, priority in enumerate(PRIORITIES)}


def turns_key(queue_name: str) -> str:
    """The claim's turn counter (worker/claim.py: every FAIR_EVERY-th claim is a fair turn)."""
    return f"{queue_name}:turns"


def due_at(enqueued_at: datetime, run_at: datetime | None) -> datetime:
    """When a job may start: its run_at if later than its enqueue time, else the enqueue time
    (its place in first-in-first-out order)."""
    return run_at if run_at is not None and run_at > enqueued_at else enqueued_at


def traced(params: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
    """The params a job is delivered with: its own, and the trace its run joins."""
    return {**params, TRACE_KWARG: traceparent} if traceparent else params
