"""The status page: server-rendered HTML over the PostgreSQL ledger, refreshed live by a script.

`GET /app/v1/status` renders counts, the job table (filtered, cursor-paged), workers, cron
schedules and a health line; `GET /app/v1/status/fragment` renders the same live sections
for the page's script to swap in every 2 s. `GET /app/v1/jobs/{job_id}` shows one job.
Every route needs a session (api/session.py, api/routes/login.py): without one a page
redirects (303) to the login page and a fragment answers 401.
Every value reaches the HTML through Jinja's
autoescaping; nothing is marked safe, and the Content-Security-Policy forbids inline code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import psycopg
import redis.exceptions
from arq.connections import ArqRedis
from arq.cron import next_cron
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from ... import __version__
from ...core.config import Settings
from ...db import DatabaseUnavailable, get_many, get_one
from ...db.helpers import Conn
from ...jobs import JOBS
from ...ledger.reads import BadCursor, Cursor, list_jobs, page_reads
from ...worker.cron import CronError, parse_cron
from ...worker.heartbeat import STALE_SECONDS, worker_key, workers_key
from ..deps import ArqDep, PoolDep, SettingsDep, get_page_pool
from ..session import require_fragment, require_page

PACKAGE_DIR = Path(__file__).resolve().parents[2]
STATIC_DIR = PACKAGE_DIR / "web" / "static"
TEMPLATE_DIR = PACKAGE_DIR / "web" / "templates"

STATUSES = ("queued", "in_progress", "succeeded", "failed")
PAGE_SIZE = 50
MAX_WORKERS = 100
MAX_ID_PREFIX = 128
REDIS_TIMEOUT = 2.0
# The cron jobs the worker schedules (worker/settings.py): (name, settings attribute, variable).
CRON_JOBS = (("hello", "hello_cron", "HELLO_CRON"), ("cleanup", "cleanup_cron", "CLEANUP_CRON"))

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

log = logging.getLogger(__name__)

router = APIRouter(prefix="/app", tags=["status page"], include_in_schema=False)


# --- formatting (used by the templates as filters) ---------------------------------------------


def when(value: datetime | None) -> str:
    """A timestamp as UTC, to the second: '2025-01-31 17:05:09'."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def span(value: timedelta | float | None) -> str:
    """A duration a person reads at a glance: '850 ms', '1.52 s', '3 min 04 s', '2 h 05 min'."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600):02d} h"


def coarse(value: timedelta | None) -> str:
    """A distance in time to the second, for 'in 9 s' and '3 s ago': '0 s', '9 s', '4 min 10 s'."""
    if value is None:
        return ""
    seconds = round(max(0.0, value.total_seconds()))
    return f"{seconds} s" if seconds < 60 else span(timedelta(seconds=seconds))


def pretty_json(value: Any) -> str:
    """JSON for a <pre>: made here, escaped by the template like any other text."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, span=span, coarse=coarse, iso=iso)
    return env


templates = Jinja2Templates(env=_environment())


# --- filters -----------------------------------------------------------------------------------


@dataclass
class Filters:
    """The page's query string, checked: bad values are dropped with a notice, never a 422."""

    status: str | None = None
    function: str | None = None
    q: str | None = None
    before: Cursor | None = None
    before_raw: str | None = None
    notices: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        f = cls()
        status = params.get("status", "").strip()
        if status in STATUSES:
            f.status = status
        elif status:
            f.notices.append(f"Unknown status {status[:40]!r} ignored; use one of the list.")
        function = params.get("function", "").strip()
        if function in JOBS:
            f.function = function
        elif function:
            f.notices.append(f"Unknown function {function[:40]!r} ignored; use one of the list.")
        q = params.get("q", "").strip()
        if q:
            f.q = q[:MAX_ID_PREFIX]
        before = params.get("before", "").strip()
        if before:
            try:
                f.before = Cursor.decode(before[:400])
                f.before_raw = before[:400]
            except BadCursor:
                f.notices.append("That page link is not valid any more; showing the newest jobs.")
        return f

    def query(self, *, page: bool = True, **change: str | None) -> str:
        """The query string ('?a=b' or '') of these filters, with `change` applied."""
        values: dict[str, str | None] = {
            "status": self.status,
            "function": self.function,
            "q": self.q,
            "before": self.before_raw if page else None,
        }
        values.update(change)
        pairs = {k: v for k, v in values.items() if v}
        return "?" + urlencode(pairs) if pairs else ""

    @property
    def active(self) -> bool:
        return bool(self.status or self.function or self.q)


# --- reading the ledger and Redis --------------------------------------------------------------


def _job_view(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A ledger row plus its queue wait and run time (so far, while it runs)."""
    started, finished = row.get("started_at"), row.get("finished_at")
    view = dict(row)
    view["wait"] = (started or now) - row["enqueued_at"]
    view["waiting"] = started is None
    view["run"] = (finished or now) - started if started else None
    view["running"] = started is not None and finished is None
    return view


async def _counts(pool: PoolDep | Conn) -> dict[str, Any]:
    # The counters the ledger's triggers maintain (V4__job_counts.sql): no scan of job.
    rows = await get_many(pool, "status.counts")
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
    for name, attribute, variable in CRON_JOBS:
        expr: str = getattr(settings, attribute)
        item: dict[str, Any] = {"name": name, "expr": expr, "variable": variable}
        try:
            fields = parse_cron(expr)
            item["next"] = next_cron(
                local_now,
                month=fields["month"],
                day=fields["day"],
                weekday=fields["weekday"],
                hour=fields["hour"],
                minute=fields["minute"],
                second=fields["second"],
            )
            item["next_in"] = item["next"] - now
            item["error"] = None
        except CronError as exc:
            item.update(next=None, next_in=None, error=str(exc))
        item["last"] = None
        schedules.append(item)
    return schedules


async def _last_runs(pool: PoolDep | Conn, schedules: list[dict[str, Any]], now: datetime) -> None:
    for item in schedules:
        row = await get_one(pool, "cron.last_run", {"prefix": f"cron:{item['name']}:%"})
        item["last"] = _job_view(row, now) if row else None


async def _workers(arq: ArqRedis, app_code: str, now: datetime) -> list[dict[str, Any]]:
    """Workers that beat in the last hour, newest beat first: ZREVRANGE + HGETALL, no KEYS."""
    members = await arq.zrevrange(workers_key(app_code), 0, MAX_WORKERS - 1, withscores=True)
    pipe = arq.pipeline(transaction=False)
    ids = [m.decode() if isinstance(m, bytes) else str(m) for m, _ in members]
    for worker_id in ids:
        pipe.hgetall(worker_key(app_code, worker_id))
    details = await pipe.execute() if ids else []
    workers = []
    for worker_id, (_, score), raw in zip(ids, members, details, strict=True):
        info = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode() if isinstance(v, bytes) else str(v)
            )
            for k, v in (raw or {}).items()
        }
        beat = datetime.fromtimestamp(float(score) / 1000, UTC)
        started = info.get("started_ms")
        workers.append(
            {
                "id": worker_id,
                "last_beat": beat,
                "beat_ago": now - beat,
                "online": (now - beat).total_seconds() <= STALE_SECONDS,
                "started": (
                    datetime.fromtimestamp(int(started) / 1000, UTC)
                    if started and started.isdigit()
                    else None
                ),
                "done": info.get("jobs_done", ""),
                "failed": info.get("jobs_failed", ""),
            }
        )
    return workers


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
    pool: PoolDep, settings: Settings, filters: Filters | None, now: datetime
) -> dict[str, Any]:
    part: dict[str, Any] = {"schedules": _cron_schedules(settings, now)}
    try:
        # One read-only transaction on the page's own pool, under a statement timeout.
        async with page_reads(pool) as conn:
            ms = await _timed(get_one(conn, "health.ping"))
            part["counts"] = await _counts(conn)
            if filters is not None:
                rows, nxt = await list_jobs(
                    conn,
                    status=filters.status,
                    function=filters.function,
                    id_prefix=filters.q,
                    before=filters.before,
                    limit=PAGE_SIZE,
                )
                part["jobs"] = [_job_view(r, now) for r in rows]
                part["next_query"] = filters.query(before=nxt.encode()) if nxt else None
            await _last_runs(conn, part["schedules"], now)
    except DatabaseUnavailable as exc:
        # The reason (host, role, server message) goes to the log, not to an open page.
        log.warning("status page: %s", exc)
        slow = isinstance(exc.__cause__, psycopg.errors.QueryCanceled)
        part["postgres"] = {"ok": False, "detail": "too slow" if slow else "unavailable"}
        return part
    part["postgres"] = {"ok": True, "detail": f"{ms:.1f} ms"}
    return part


async def _status_context(
    request: Request, settings: Settings, pool: PoolDep, arq: ArqRedis, filters: Filters
) -> tuple[dict[str, Any], int]:
    now = datetime.now(UTC)
    pool = await get_page_pool(request)  # the page's own pool, not the submissions'
    db, red = await asyncio.gather(
        _database_part(pool, settings, filters, now), _redis_part(arq, settings.app_code, now)
    )
    context = {
        **_base_context(request, settings, now),
        "filters": filters,
        "statuses": STATUSES,
        "functions": sorted(JOBS),
        "counts": None,
        "jobs": [],
        "next_query": None,
        "workers": None,
        "page_size": PAGE_SIZE,
        **db,
        **red,
    }
    return context, 200 if db["postgres"]["ok"] else 503


def _base_context(request: Request, settings: Settings, now: datetime) -> dict[str, Any]:
    return {
        "app_code": settings.app_code,
        "version": __version__,
        "base": request.scope.get("root_path", "").rstrip("/"),
        "now": now,
        "stale_seconds": int(STALE_SECONDS),
        # Set by require_page: the role the page shows, and the logout form's CSRF token.
        "session": getattr(request.state, "page_session", None),
    }


def _render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


# --- routes ------------------------------------------------------------------------------------


@router.get("", response_class=RedirectResponse)
@router.get("/", response_class=RedirectResponse)
async def app_root(request: Request) -> RedirectResponse:
    base = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(f"{base}/app/v1/status", status_code=307)


@router.get("/v1/status", response_class=HTMLResponse, dependencies=[Depends(require_page)])
async def status_page(
    request: Request, settings: SettingsDep, pool: PoolDep, arq: ArqDep
) -> HTMLResponse:
    filters = Filters.parse(request.query_params)
    context, code = await _status_context(request, settings, pool, arq, filters)
    return _render(request, "status.html", context, code)


@router.get(
    "/v1/status/fragment",
    response_class=HTMLResponse,
    dependencies=[Depends(require_fragment)],
)
async def status_fragment(
    request: Request, settings: SettingsDep, pool: PoolDep, arq: ArqDep
) -> HTMLResponse:
    """The live sections of the status page alone, for its script to swap in."""
    filters = Filters.parse(request.query_params)
    context, code = await _status_context(request, settings, pool, arq, filters)
    return _render(request, "_status_live.html", context, code)


async def _job_context(
    request: Request, settings: Settings, pool: PoolDep, job_id: str
) -> tuple[dict[str, Any], int]:
    now = datetime.now(UTC)
    context: dict[str, Any] = {
        **_base_context(request, settings, now),
        "job_id": job_id,
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
    job = _job_view(row, now)
    job["params_json"] = pretty_json(row["params"])
    job["result_json"] = None if row["result"] is None else pretty_json(row["result"])
    context["job"] = job
    return context, 200


@router.get("/v1/jobs/{job_id}", response_class=HTMLResponse, dependencies=[Depends(require_page)])
async def job_page(
    request: Request, job_id: str, settings: SettingsDep, pool: PoolDep
) -> HTMLResponse:
    context, code = await _job_context(request, settings, pool, job_id)
    return _render(request, "job.html", context, code)


@router.get(
    "/v1/jobs/{job_id}/fragment",
    response_class=HTMLResponse,
    dependencies=[Depends(require_fragment)],
)
async def job_fragment(
    request: Request, job_id: str, settings: SettingsDep, pool: PoolDep
) -> HTMLResponse:
    context, code = await _job_context(request, settings, pool, job_id)
    return _render(request, "_job_live.html", context, code)
