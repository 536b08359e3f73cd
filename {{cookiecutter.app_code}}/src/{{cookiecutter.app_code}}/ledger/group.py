"""Group commit of single submissions: concurrent `POST /api/v1/jobs` share one INSERT.

Why: one statement and one commit per submission was a third of the API's CPU a submission
(psycopg's execute, the pool's check-out) and most of PostgreSQL's (a commit and a counter
upsert each). Submissions that arrive while a statement runs wait for the next one, which takes
them all; at light load a submission goes at once (nothing waits for a timer), so a lone
request pays no latency for this.

Every submission still gets its own answer after the commit of the statement holding its row:
the row (202), DuplicateJob (409: the ledger held the id, or a submission ahead of it in the
same group took it), or the statement's error. A value PostgreSQL refuses (a NUL character)
fails the whole statement; then each row of the group is inserted alone, so only that
submission fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from ..db import get_many
from ..db.pool import InvalidValue, Pool

# Statements in flight at once per pool: while they run, new submissions gather for the next.
IN_FLIGHT = 2
# Rows in one statement at the most.
GROUP_MAX = 500


class Taken(Exception):
    """The id is in the ledger already (`status`: what the ledger says, None if unknown)."""

    def __init__(self, status: str | None) -> None:
        self.status = status
        super().__init__(status)


@dataclass
class Row:
    """One submission waiting for its statement."""

    job_id: str
    function: str
    params: dict[str, Any]
    trace_id: str | None
    span_id: str | None
    run_at: datetime | None = None
    priority: str = "default"
    done: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupInsert:
    """The pending submissions of one pool, and the statements that commit them."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.pending: list[Row] = []
        self.running = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def insert(self, row: Row) -> dict[str, Any]:
        """The committed row; raises Taken, or what the statement raised."""
        self.pending.append(row)
        if self.running < IN_FLIGHT:
            self.running += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await row.done

    async def _drain(self) -> None:
        try:
            while self.pending:
                group = take(self.pending)
                try:
                    await self._commit(group)
                except BaseException as exc:  # every waiting submission gets the error
                    for row in group:
                        if not row.done.done():
                            row.done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self.running -= 1

    async def _commit(self, group: list[Row]) -> None:
        try:
            rows = await insert_rows(self.pool, group)
        except InvalidValue:
            if len(group) == 1:
                raise
            for row in group:  # only the submission with the refused value fails
                await self._commit_alone(row)
            return
        await settle(self.pool, group, rows)

    async def _commit_alone(self, row: Row) -> None:
        try:
            await settle(self.pool, [row], await insert_rows(self.pool, [row]))
        except Exception as exc:
            if not row.done.done():  # (a request that went away has cancelled its future)
                row.done.set_exception(exc)


def take(pending: list[Row]) -> list[Row]:
    """The next group: up to GROUP_MAX pending rows with distinct ids, oldest first; a second
    submission of an id stays for a later group (where the first one's row refuses it)."""
    group: list[Row] = []
    seen: set[str] = set()
    left: list[Row] = []
    for row in pending:
        if len(group) < GROUP_MAX and row.job_id not in seen:
            seen.add(row.job_id)
            group.append(row)
        else:
            left.append(row)
    pending[:] = left
    return group


async def insert_rows(pool: Pool, group: list[Row]) -> list[dict[str, Any]]:
    return await get_many(
        pool,
        "job.insert_group",
        {
            "jobs": Jsonb(
                [
                    {
                        "job_id": r.job_id,
                        "function": r.function,
                        "params": r.params,
                        "trace_id": r.trace_id,
                        "span_id": r.span_id,
                        "run_at": None if r.run_at is None else r.run_at.isoformat(),
                        "priority": r.priority,
                    }
                    for r in group
                ]
            )
        },
    )


async def settle(pool: Pool, group: list[Row], inserted: list[dict[str, Any]]) -> None:
    """Give each submission its row, or Taken with the status the ledger holds."""
    by_id = {row["job_id"]: row for row in inserted}
    refused = [r.job_id for r in group if r.job_id not in by_id]
    statuses: dict[str, str] = {}
    if refused:
        with contextlib.suppress(Exception):  # the status is a courtesy: the 409 stands
            found = await get_many(pool, "job.statuses", {"job_ids": refused})
            statuses = {row["job_id"]: str(row["status"]) for row in found}
    for row in group:
        if row.done.done():
            continue
        if row.job_id in by_id:
            row.done.set_result(by_id[row.job_id])
        else:
            row.done.set_exception(Taken(statuses.get(row.job_id)))


_groups: weakref.WeakKeyDictionary[Pool, GroupInsert] = weakref.WeakKeyDictionary()


def group_of(pool: Pool) -> GroupInsert:
    """The pool's group insert (one per pool, made on first use)."""
    found = _groups.get(pool)
    if found is None:
        found = _groups[pool] = GroupInsert(pool)
    return found
