"""Reading the job ledger newest first, filtered, with a cursor instead of OFFSET.

The filters combine fixed SQL fragments (never user text) so each query can use one of the
ledger's indexes: (enqueued_at, job_id), (status, ...), (function, ...), job_id prefix.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from ..db.helpers import Conn, connection
from ..db.pool import Pool

COLUMNS = (
    "job_id, function, params, status, source, tries, enqueued_at, started_at, finished_at, "
    "result, error, worker_id"
)


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
    id_prefix: str | None = None,
    before: Cursor | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page of jobs, newest first, and the cursor of the next page (None at the end)."""
    where: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if status:
        where.append(sql.SQL("status = %(status)s"))
        params["status"] = status
    if function:
        where.append(sql.SQL("function = %(function)s"))
        params["function"] = function
    if id_prefix:
        where.append(sql.SQL("job_id LIKE %(prefix)s"))
        params["prefix"] = _escape_like(id_prefix) + "%"
    if before:
        where.append(sql.SQL("(enqueued_at, job_id) < (%(before_at)s, %(before_id)s)"))
        params.update(before_at=before.enqueued_at, before_id=before.job_id)
    query = sql.SQL(
        "SELECT {cols} FROM job {where} ORDER BY enqueued_at DESC, job_id DESC LIMIT %(limit)s"
    ).format(
        cols=sql.SQL(COLUMNS),
        where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
    )
    rows = await _fetch(db, query, params)
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], Cursor(last["enqueued_at"], last["job_id"])
    return rows, None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _fetch(
    db: Pool | Conn, query: sql.Composed, params: dict[str, Any]
) -> list[dict[str, Any]]:
    async with connection(db) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()
