"""What the status page shows, read from the ledger (one read-only transaction on the page's
own pool) and from the workers' heartbeats in Redis, each under a time limit.

A part that cannot be read says so (`ok: False` with a short reason); the reason in full goes
to the log, not to an open page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import redis.exceptions
from fastapi import Request

from ...core.config import Settings
from ...core.cron import CronError, parse_cron
from ...core.heartbeat import recent_workers
from ...db import DatabaseUnavailable, get_many, get_one
from ...db.helpers import Conn
from ...db.pool import Pool
from ...jobs import CRONS, JOBS, STATUSES
from ...ledger.reads import BadCursor, Cursor, list_jobs, page_reads
from ...queue import ArqRedis, next_run
from ...queue.names import PRIORITIES
from .charts import charts
from .formatting import base_context, pretty_json
from .minutes import read_window

PAGE_SIZE = 50
MAX_WORKERS = 100
MAX_ID_PREFIX = 128
REDIS_TIMEOUT = 2.0

log = logging.getLogger(__name__)


SORTS = ("newest", "oldest")  # by enqueue time; the first is the default
MATCHES = ("prefix", "exact")  # how `q` matches job ids; the first is the default


@dataclass
class Filters:
    """The page's query string, checked: bad values are dropped with a notice, never a 422.

    `q` matches job ids by prefix, or exactly with `match=exact`; `sort=oldest` lists oldest
    first. The page cursor is `before` newest first and `after` oldest first."""

    status: str | None = None
    function: str | None = None
    priority: str | None = None
    q: str | None = None
    match: str = MATCHES[0]
    sort: str = SORTS[0]
    cursor: Cursor | None = None
    cursor_raw: str | None = None
    notices: list[str] = field(default_factory=list)
    done: str | None = None  # what Retry all failed did (its redirect's `retried=`)

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        f = cls()
        f.status = f._choice(params, "status", STATUSES, "status")
        f.function = f._choice(params, "function", tuple(JOBS), "function")
        f.priority = f._choice(params, "priority", PRIORITIES, "priority")
        f.match = f._choice(params, "match", MATCHES, "id match") or MATCHES[0]
        f.sort = f._choice(params, "sort", SORTS, "order") or SORTS[0]
        q = params.get("q", "").strip()
        if q:
            f.q = q[:MAX_ID_PREFIX]
        raw = params.get(f.cursor_name, "").strip()[:400]
        if raw:
            try:
                f.cursor, f.cursor_raw = Cursor.decode(raw), raw
            except BadCursor:
                f.notices.append(
                    f"That page link is not valid any more; showing the {f.sort} jobs."
                )
        f.done = _retried(params.get("retried", ""), params.get("confirmed", ""))
        return f

    def _choice(
        self, params: Mapping[str, str], name: str, allowed: tuple[str, ...], what: str
    ) -> str | None:
        value = params.get(name, "").strip()
        if value in allowed:
            return value
        if value:
            self.notices.append(f"Unknown {what} {value[:40]!r} ignored; use one of the list.")
        return None

    @property
    def oldest_first(self) -> bool:
        return self.sort == "oldest"

    @property
    def cursor_name(self) -> str:
        return "after" if self.oldest_first else "before"

    @property
    def exact(self) -> bool:
        return self.match == "exact"

    def query(self, *, page: bool = True, **change: str | None) -> str:
        """The query string ('?a=b' or '') of these filters, with `change` applied (a changed
        order starts at its first page)."""
        values: dict[str, str | None] = {
            "status": self.status,
            "function": self.function,
            "priority": self.priority,
            "q": self.q,
            "match": self.match if self.q and self.exact else None,
            "sort": None if self.sort == SORTS[0] else self.sort,
            self.cursor_name: self.cursor_raw if page and "sort" not in change else None,
        }
        values.update(change)
        if values.get("sort") == SORTS[0]:
            values["sort"] = None
        pairs = {k: v for k, v in values.items() if v}
        return "?" + urlencode(pairs) if pairs else ""

    def next_query(self, cursor: Cursor) -> str:
        code = cursor.encode()
        return self.query(after=code) if self.oldest_first else self.query(before=code)

    @property
    def active(self) -> bool:
        return bool(self.status or self.function or self.priority or self.q)

    def list_args(self) -> dict[str, Any]:
        """list_jobs's keyword arguments for these filters."""
        return {
            "status": self.status,
            "function": self.function,
            "priority": self.priority,
            "id_prefix": None if self.exact else self.q,
            "job_id": self.q if self.exact else None,
            "oldest_first": self.oldest_first,
            self.cursor_name: self.cursor,
        }


def _retried(retried: str, confirmed: str) -> str | None:
    """The notice after Retry all failed: how many were queued again (and if the confirmation
    counted otherwise, why)."""
    if not retried.isdigit():
        return None
    n = int(retried)
    text = f"{n} failed job{'' if n == 1 else 's'} queued again."
    if confirmed.isdigit() and int(confirmed) != n:
        text += (
            f" The confirmation had counted {int(confirmed)}: jobs failed, or were retried "
            "elsewhere, in between."
        )
    return text


def context_base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def job_view(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A ledger row plus its queue wait and run time (so far, while it runs)."""
    started, finished = row.get("started_at"), row.get("finished_at")
    view = dict(row)
    view["wait"] = (started or now) - row["enqueued_at"]
    view["waiting"] = started is None
    view["run"] = (finished or now) - started if started else None
    view["running"] = started is not None and finished is None
    return view


def _moment(value: Any) -> datetime | None:
    """A timestamp of the attempts JSON (PostgreSQL's ISO text), or None."""
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def attempts_view(attempts: Any, now: datetime) -> list[dict[str, Any]]:
    """The job's attempts (the ledger's `attempts`, oldest first) for the timeline: each with
    its start, finish, duration (so far, while it runs), outcome, error and worker."""
    views = []
    for n, item in enumerate(attempts if isinstance(attempts, list) else [], start=1):
        if not isinstance(item, dict):
            continue
        started, finished = _moment(item.get("started_at")), _moment(item.get("finished_at"))
        views.append(
            {
                "n": item.get("attempt") or n,
                "started_at": started,
                "finished_at": finished,
                "duration": (finished or now) - started if started else None,
                "running": started is not None and finished is None,
                "outcome": str(item.get("outcome") or "unknown"),
                "error": item.get("error"),
                "worker_id": item.get("worker_id"),
            }
        )
    return views


async def read_counts(conn: Conn) -> dict[str, Any]:
    # The counters the ledger's triggers maintain (V4__job_counts.sql): no scan of job.
    rows = await get_many(conn, "status.counts")
    per: dict[str, dict[str, int]] = {name: dict.fromkeys(STATUSES, 0) for name in sorted(JOBS)}
    for row in rows:
        per.setdefault(row["function"], dict.fromkeys(STATUSES, 0))[row["status"]] = row["n"]
    overall = {s: sum(c[s] for c in per.values()) for s in STATUSES}
    return {
        "overall": overall,
        "total": sum(overall.values()),
        "per_function": [
            {"function": name, "counts": c, "total": sum(c.values())} for name, c in per.items()
        ],
    }


def _cron_schedules(settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Each cron job's expression and next run, computed the way arq computes it."""
    # arq evaluates cron fields in the worker's system timezone; so does this.
    local_now = now.astimezone()
    schedules = []
    for entry in CRONS:
        expr: str = getattr(settings, entry.setting)
        item: dict[str, Any] = {"name": entry.job, "expr": expr, "variable": entry.variable}
        try:
            item["next"] = next_run(parse_cron(expr), local_now)
            item["next_in"] = item["next"] - now
            item["error"] = None
        except CronError as exc:
            item.update(next=None, next_in=None, error=str(exc))
        item["last"] = None
        item["run_prefix"] = entry.run_prefix
        schedules.append(item)
    return schedules


async def _last_runs(conn: Conn, schedules: list[dict[str, Any]], now: datetime) -> None:
    for item in schedules:
        row = await get_one(conn, "cron.last_run", {"prefix": f"{item['run_prefix']}%"})
        item["last"] = job_view(row, now) if row else None


async def _workers(arq: ArqRedis, app_code: str, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "id": beat.worker_id,
            "last_beat": beat.last_beat,
            "beat_ago": now - beat.last_beat,
            "online": beat.online(now),
            "started": beat.started,
            "done": beat.jobs_done,
            "failed": beat.jobs_failed,
        }
        for beat in await recent_workers(arq, app_code, MAX_WORKERS)
    ]


async def _timed(what: Any) -> float:
    start = time.perf_counter()
    await what
    return (time.perf_counter() - start) * 1000


async def _redis_part(arq: ArqRedis, app_code: str, now: datetime) -> dict[str, Any]:
    try:
        async with asyncio.timeout(REDIS_TIMEOUT):
            ms = await _timed(arq.ping())
            workers = await _workers(arq, app_code, now)
    except (OSError, TimeoutError, redis.exceptions.RedisError) as exc:
        log.warning("status page: Redis: %r", exc)
        return {"redis": {"ok": False, "detail": type(exc).__name__}}
    return {"redis": {"ok": True, "detail": f"{ms:.1f} ms"}, "workers": workers}


async def _database_part(
    pool: Pool, settings: Settings, filters: Filters, now: datetime
) -> dict[str, Any]:
    part: dict[str, Any] = {"schedules": _cron_schedules(settings, now)}
    try:
        # One read-only transaction on the page's own pool, under a statement timeout.
        async with page_reads(pool) as conn:
            ms = await _timed(get_one(conn, "health.ping"))
            part["counts"] = await read_counts(conn)
            part["charts"] = charts(await read_window(conn, now, filters.function))
            rows, nxt = await list_jobs(conn, **filters.list_args(), limit=PAGE_SIZE)
            part["jobs"] = [job_view(r, now) for r in rows]
            part["next_query"] = filters.next_query(nxt) if nxt else None
            await _last_runs(conn, part["schedules"], now)
    except DatabaseUnavailable as exc:
        log.warning("status page: %s", exc)
        slow = isinstance(exc.__cause__, psycopg.errors.QueryCanceled)
        part["postgres"] = {"ok": False, "detail": "too slow" if slow else "unavailable"}
        return part
    part["postgres"] = {"ok": True, "detail": f"{ms:.1f} ms"}
    return part


async def status_context(
    request: Request, settings: Settings, pool: Pool, arq: ArqRedis
) -> tuple[dict[str, Any], int]:
    """The status page's (and its fragment's) context, for the filters in the query string,
    and the status code to answer with."""
    now = datetime.now(UTC)
    filters = Filters.parse(request.query_params)
    db, red = await asyncio.gather(
        _database_part(pool, settings, filters, now), _redis_part(arq, settings.app_code, now)
    )
    context = {
        **base_context(request, settings, now),
        "filters": filters,
        "here": f"{context_base(request)}/app/v1/status{filters.query()}",
        "statuses": STATUSES,
        "sorts": SORTS,
        "matches": MATCHES,
        "functions": sorted(JOBS),
        "priorities": PRIORITIES,
        "counts": None,
        "charts": None,
        "jobs": [],
        "next_query": None,
        "workers": None,
        "page_size": PAGE_SIZE,
        **db,
        **red,
    }
    return context, 200 if db["postgres"]["ok"] else 503


async def job_context(
    request: Request, settings: Settings, pool: Pool, job_id: str
) -> tuple[dict[str, Any], int]:
    """One job's page context (404 for an unknown id, 503 without PostgreSQL)."""
    now = datetime.now(UTC)
    context: dict[str, Any] = {
        **base_context(request, settings, now),
        "job_id": job_id,
        "here": f"{context_base(request)}/app/v1/jobs/{quote(job_id, safe='')}",
        "job": None,
        "db_error": None,
    }
    try:
        row = await get_one(pool, "job.get", {"job_id": job_id}) if len(job_id) <= 200 else None
    except DatabaseUnavailable as exc:
        log.warning("job page: %s", exc)
        context["db_error"] = True
        return context, 503
    if row is None:
        return context, 404
    job = job_view(row, now)
    job["attempt_list"] = attempts_view(row.get("attempts"), now)
    job["params_json"] = pretty_json(row["params"])
    job["result_json"] = None if row["result"] is None else pretty_json(row["result"])
    context["job"] = job
    return context, 200
