"""Reading the job ledger newest (or oldest) first, filtered, with a cursor instead of OFFSET.

The filters combine fixed SQL fragments (never user text) so each query can use one of the
ledger's indexes: (enqueued_at, job_id), (status, ...), (function, ...), (function, status,
...), job_id prefix, job_id itself (an exact id), and for `high` and `low` the partial
(priority, ...) ones of V10 (`default`, most rows, walks the others). Oldest first walks the
same indexes backwards, its cursor pointing the other way. Each page is an index walk that
stops after `limit` rows, whatever the ledger's size (EXPLAIN ANALYZE over 1,000,000 rows:
under 1 ms for every filter).

The status page reads through `page_reads`: a pool of its own (`page_database`, a few
connections), one read-only transaction per page, and a statement timeout, so page loads can
neither take the connections submissions need nor hold one for long.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from ..core.config import Settings
from ..db import Database, Role, execute_one
from ..db.helpers import Conn, connection
from ..db.pool import Pool

COLUMNS = (
    "job_id, function, params, status, source, tries, enqueued_at, started_at, finished_at, "
    "result, error, worker_id, trace_id, attempts, run_at, priority"
)


# The status page's pool (beside the API's, same role): 20 page loads at once share these,
# while submissions keep every connection of DB_POOL_MAX_SIZE.
PAGE_POOL_MAX_SIZE = 3
# A page statement running longer is cancelled (the page says PostgreSQL is too slow); every
# page query takes well under 10 ms at 1,000,000 rows.
PAGE_STATEMENT_TIMEOUT_MS = 1000


def page_database(settings: Settings) -> Database:
    """The status page's own small pool of the API role (opened by the API's lifespan)."""
    sizes = {"db_pool_min_size": 1, "db_pool_max_size": PAGE_POOL_MAX_SIZE}
    return Database(settings.model_copy(update=sizes), Role.APP)


@asynccontextmanager
async def page_reads(
    pool: Pool, timeout_ms: int = PAGE_STATEMENT_TIMEOUT_MS
) -> AsyncIterator[Conn]:
    """A connection in a read-only transaction whose statements time out after `timeout_ms`.

    One snapshot for the whole page: its counts and lists agree. A timed-out statement raises
    DatabaseUnavailable (psycopg's QueryCanceled is an OperationalError) as its cause.
    """
    async with connection(pool) as conn, conn.transaction():
        await execute_one(conn, "status.page_transaction", {"ms": str(timeout_ms)})
        yield conn


class BadCursor(ValueError):
    """A `before` cursor that this service did not hand out."""


@dataclass(frozen=True)
class Cursor:
    enqueued_at: datetime
    job_id: str

    def encode(self) -> str:
        raw = f"{self.enqueued_at.isoformat()}|{self.job_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            stamp, job_id = raw.split("|", 1)
            return cls(datetime.fromisoformat(stamp), job_id)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise BadCursor(
                f"cursor {text[:40]!r} is not valid: pass back the next_cursor of a previous page"
            ) from None


async def list_jobs(
    db: Pool | Conn,
    *,
    status: str | None = None,
    function: str | None = None,
    priority: str | None = None,
    id_prefix: str | None = None,
    job_id: str | None = None,
    before: Cursor | None = None,
    after: Cursor | None = None,
    oldest_first: bool = False,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page of jobs, newest first (oldest first with `oldest_first`), and the cursor of the
    next page (None at the end): pass it back as `before` (newest first) or `after`."""
    query, params = list_query(
        status=status,
        function=function,
        priority=priority,
        id_prefix=id_prefix,
        job_id=job_id,
        before=before,
        after=after,
        oldest_first=oldest_first,
        limit=limit,
    )
    rows = await _fetch(db, query, params)
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], Cursor(last["enqueued_at"], last["job_id"])
    return rows, None


def list_query(
    *,
    status: str | None = None,
    function: str | None = None,
    priority: str | None = None,
    id_prefix: str | None = None,
    job_id: str | None = None,
    before: Cursor | None = None,
    after: Cursor | None = None,
    oldest_first: bool = False,
    limit: int = 50,
) -> tuple[sql.Composed, dict[str, Any]]:
    """The SQL and parameters of one page (`limit` + 1 rows, to know whether more follow).

    `before` continues a newest-first listing, `after` an oldest-first one; a cursor for the
    other direction is a caller's mistake (ValueError)."""
    if (before and oldest_first) or (after and not oldest_first):
        raise ValueError("pass `before` newest first and `after` oldest first")
    where, params = _filters(
        status=status, function=function, priority=priority, id_prefix=id_prefix, job_id=job_id
    )
    params["limit"] = limit + 1
    cursor = after if oldest_first else before
    if cursor:
        where.append(
            sql.SQL("(enqueued_at, job_id) {} (%(cur_at)s, %(cur_id)s)").format(
                sql.SQL(">" if oldest_first else "<")
            )
        )
        params.update(cur_at=cursor.enqueued_at, cur_id=cursor.job_id)
    direction = sql.SQL("ASC" if oldest_first else "DESC")
    query = sql.SQL(
        "SELECT {cols} FROM job {where} ORDER BY enqueued_at {dir}, job_id {dir} LIMIT %(limit)s"
    ).format(
        cols=sql.SQL(COLUMNS),
        where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        dir=direction,
    )
    return query, params


def _filters(
    *,
    status: str | None,
    function: str | None,
    priority: str | None,
    id_prefix: str | None,
    job_id: str | None,
) -> tuple[list[sql.Composable], dict[str, Any]]:
    """The WHERE conditions (fixed SQL) and their parameters, for the given filters."""
    where: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if status:
        where.append(sql.SQL("status = %(status)s"))
        params["status"] = status
    if function:
        where.append(sql.SQL("function = %(function)s"))
        params["function"] = function
    if priority:
        # `high` and `low` have partial indexes (V10, WHERE priority <> 'default'); saying the
        # predicate too lets a prepared statement's generic plan prove it and use them.
        # `default`, most rows, walks the same indexes as no priority filter.
        where.append(
            sql.SQL("priority = %(priority)s")
            if priority == "default"
            else sql.SQL("priority = %(priority)s AND priority <> 'default'")
        )
        params["priority"] = priority
    if job_id is not None:
        where.append(sql.SQL("job_id = %(job_id)s"))
        params["job_id"] = job_id
    if id_prefix:
        where.append(sql.SQL("job_id LIKE %(prefix)s"))
        params["prefix"] = _escape_like(id_prefix) + "%"
    return where, params


def count_query(
    *,
    status: str | None = None,
    function: str | None = None,
    priority: str | None = None,
    id_prefix: str | None = None,
    job_id: str | None = None,
    cap: int = 10_000,
) -> tuple[sql.Composed, dict[str, Any]]:
    """How many jobs match, counted up to `cap` + 1 (an index walk that stops there)."""
    where, params = _filters(
        status=status, function=function, priority=priority, id_prefix=id_prefix, job_id=job_id
    )
    params["cap"] = cap + 1
    query = sql.SQL(
        "SELECT count(*) AS n FROM (SELECT 1 FROM job {where} LIMIT %(cap)s) AS m"
    ).format(
        where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
    )
    return query, params


async def count_jobs(db: Pool | Conn, *, cap: int = 10_000, **filters: str | None) -> int:
    """The number of jobs matching `filters` (list_jobs's), at most `cap` + 1: more than `cap`
    reads as "over `cap`"."""
    query, params = count_query(cap=cap, **filters)
    rows = await _fetch(db, query, params)
    return int(rows[0]["n"])


async def matching_ids(
    db: Pool | Conn,
    *,
    limit: int,
    status: str | None = None,
    function: str | None = None,
    priority: str | None = None,
    id_prefix: str | None = None,
    job_id: str | None = None,
) -> list[str]:
    """The ids of the first `limit` jobs matching the filters (list_jobs's), oldest first:
    what the status page's Retry all failed retries."""
    where, params = _filters(
        status=status, function=function, priority=priority, id_prefix=id_prefix, job_id=job_id
    )
    params["limit"] = limit
    query = sql.SQL(
        "SELECT job_id FROM job {where} ORDER BY enqueued_at, job_id LIMIT %(limit)s"
    ).format(where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""))
    return [row["job_id"] for row in await _fetch(db, query, params)]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _fetch(
    db: Pool | Conn, query: sql.Composed, params: dict[str, Any]
) -> list[dict[str, Any]]:
    async with connection(db) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()
