"""The status page stays cheap at any ledger size, and never starves submissions.

With 1,000,000 ledger rows, a page load answers in under 300 ms (p90), and 20 page loads in a
loop at once do not make one of 200 submissions fail: the page's counts come from maintained
counters (`job_count`, V4), its charts from a per-minute rollup (`job_minute`, V9, filled here
as a busy service fills it in the two days it keeps), its lists from indexes, and its reads
run on a pool of their own
under a statement timeout (api/status/reading.py, ledger/reads.py).

The page needs a session: the loads go through `page_api` (logged in with API_READ_TOKEN
through the login form, as the page's own tests do) and its cookie.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from {{ cookiecutter.app_code }}.api.status.minutes import window_start
from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import query
from {{ cookiecutter.app_code }}.ledger.reads import Cursor, count_query, list_query

pytestmark = pytest.mark.reliability

ROWS = 1_000_000
PAGE_LOADS = 30
P90_LIMIT_MS = 300.0
CONCURRENT_PAGES = 20
SUBMISSIONS = 200
SUBMIT_CONCURRENCY = 10
HTTP_TIMEOUT = 30.0
DRAIN_WAIT_SECONDS = 60.0

# A ledger as it looks after months of use: finished jobs of every submittable function,
# newest every ~2.6 s over 30 days; 2% `high` (half of them failed) and 4% `low` (a quarter
# failed), the rest `default`. No row is queued or in progress: the dispatcher would
# deliver such rows again (they are not in Redis), and a live ledger holds few of them.
FILL = """
INSERT INTO job (job_id, function, params, status, source, tries, enqueued_at, started_at,
                 finished_at, result, error, worker_id, priority)
SELECT %(prefix)s || lpad(i::text, 7, '0'),
       CASE WHEN i %% 3 = 0 THEN 'noop' ELSE 'hello' END,
       jsonb_build_object('name', 'row ' || i),
       CASE WHEN i %% 20 = 7 THEN 'failed' ELSE 'succeeded' END,
       'api', 1, t, t + interval '5 ms', t + interval '9 ms',
       CASE WHEN i %% 20 = 7 THEN NULL ELSE '{}'::jsonb END,
       CASE WHEN i %% 20 = 7 THEN 'Traceback (most recent call last): ...' END,
       'bench-worker',
       CASE WHEN i %% 50 = 27 THEN 'high' WHEN i %% 25 = 7 THEN 'low' ELSE 'default' END
FROM generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT now() - interval '1 hour' - (%(rows)s - i) * interval '2.6 s' AS t) AS at
"""


# The charts' rollup of a busy service over the two days it keeps (jobs/cleanup.py): every
# minute, 2 functions x 2 outcomes x 5 wait buckets x 4 writers' slots (230,400 rows). Its
# slots (1000 on) are none a session takes (1..128), so the fill is deleted by them after.
FILL_SLOT = 1000
FILL_MINUTES = """
INSERT INTO job_minute (minute, function, outcome, wait_bucket, slot, n)
SELECT date_trunc('minute', now()) - m * interval '1 minute', f, o, b, %(slot)s + s, 1 + m %% 7
FROM generate_series(0, 2 * 1440 - 1) AS m, unnest(ARRAY['hello', 'noop']) AS f,
     unnest(ARRAY['succeeded', 'failed']) AS o, generate_series(3, 7) AS b,
     generate_series(0, 3) AS s
"""


def _admin(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=settings.db_host,
        port=settings.db_port,
        dbname=settings.db_name,
        user=settings.db_admin_user,
        password=settings.db_admin_pwd.get_secret_value(),
        options=f"-c search_path={settings.db_schema}",
        connect_timeout=3,
        autocommit=True,
    )


@pytest.fixture(scope="module")
def big_ledger(settings: Settings) -> Iterator[str]:
    """1,000,000 finished rows under a fresh prefix (returned), deleted afterwards."""
    prefix = f"pagecost-{uuid.uuid4().hex[:8]}-"
    with _admin(settings) as conn:
        start = time.monotonic()
        conn.execute(FILL, {"prefix": prefix, "rows": ROWS})
        conn.execute(FILL_MINUTES, {"slot": FILL_SLOT})
        conn.execute("VACUUM ANALYZE job")
        conn.execute("VACUUM ANALYZE job_minute")
        print(f"\n{ROWS:,} ledger rows inserted in {time.monotonic() - start:.1f} s")
    try:
        yield prefix
    finally:
        with _admin(settings) as conn:
            conn.execute("DELETE FROM job WHERE job_id LIKE %s", [prefix + "%"])
            conn.execute("DELETE FROM job_minute WHERE slot >= %s", [FILL_SLOT])
            conn.execute("VACUUM ANALYZE job")


# A page query's plan over 1,000,000 rows: no sequential scan of the ledger, and quick.
PLAN_LIMIT_MS = 50.0


def _nodes(plan: dict[str, Any]) -> list[str]:
    """'Node Type on relation (index)' for every node of a JSON plan, top down."""
    name = str(plan["Node Type"])
    if "Relation Name" in plan:
        name += f" on {plan['Relation Name']}"
    if "Index Name" in plan:
        name += f" ({plan['Index Name']})"
    return [name] + [n for p in plan.get("Plans", []) for n in _nodes(p)]


def test_every_page_query_reads_an_index(settings: Settings, big_ledger: str) -> None:
    """EXPLAIN ANALYZE of every query a page load runs, for each filter of the page."""
    with _admin(settings) as conn:
        newest = conn.execute(
            "SELECT enqueued_at, job_id FROM job WHERE job_id LIKE %s "
            "ORDER BY enqueued_at DESC, job_id DESC OFFSET 500 LIMIT 1",
            [big_ledger + "%"],
        ).fetchone()
        assert newest is not None
        cursor = Cursor(newest[0], newest[1])
        lists: dict[str, dict[str, Any]] = {
            "newest": {},
            "status": {"status": "failed"},
            "function": {"function": "noop"},
            "status+function": {"status": "failed", "function": "noop"},
            "rare status+function": {"status": "queued", "function": "noop"},
            "id prefix": {"id_prefix": big_ledger + "00042"},
            "status+function, page 2": {"status": "failed", "function": "noop", "before": cursor},
            "exact id": {"job_id": big_ledger + "0004242"},
            "oldest first": {"oldest_first": True},
            "status, oldest first, page 2": {
                "status": "failed",
                "oldest_first": True,
                "after": cursor,
            },
            "id prefix, oldest first": {"id_prefix": big_ledger + "00042", "oldest_first": True},
            **PRIORITY_LISTS,
            "high+status+function, page 2": {**HIGH_FAILED_NOOP, "before": cursor},
            "low, oldest first, page 2": {"priority": "low", "oldest_first": True, "after": cursor},
            "high+id prefix": {"priority": "high", "id_prefix": big_ledger + "00042"},
        }
        plans: list[tuple[str, sql.Composable, dict[str, Any]]] = [
            (name, *list_query(**kw, limit=50)) for name, kw in lists.items()
        ]
        # Retry all failed's confirmation: the failed jobs of a filter, counted up to its cap.
        plans.append(("retry-failed count", *count_query(status="failed", cap=10_000)))
        plans.append(
            ("retry-failed count, function", *count_query(status="failed", function="noop"))
        )
        plans.append(("retry-failed count, high", *count_query(status="failed", priority="high")))
        plans += _failed_ids_plans(big_ledger)
        plans.append(("counts", sql.SQL(query("status.counts")), {}))
        since = window_start(datetime.now(UTC))
        plans.append(("charts", sql.SQL(query("status.minutes")), {"since": since}))
        of = {"since": since, "function": "noop"}
        plans.append(("charts of noop", sql.SQL(query("status.minutes_of")), of))
        plans.append(("cron last run", sql.SQL(query("cron.last_run")), {"prefix": "cron:%"}))
        for name, statement, params in plans:
            explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + statement
            nodes = _check_plan(conn, name, explain, params)
            if name in ON_PRIORITY_INDEX:
                assert any("(job_priority_" in node for node in nodes), (name, nodes)


def _check_plan(
    conn: psycopg.Connection[tuple[object, ...]],
    name: str,
    explain: sql.Composable,
    params: dict[str, Any] | None,
) -> list[str]:
    """Run one EXPLAIN ANALYZE: no sequential scan of job or job_minute, under the limit."""
    row = conn.execute(explain, params).fetchone()
    assert row is not None
    plan = row[0][0]
    nodes, ms = _nodes(plan["Plan"]), float(plan["Execution Time"])
    print(f"\n{name}: {ms:.2f} ms, {' > '.join(nodes)}", end="")
    assert "Seq Scan on job" not in nodes, (name, nodes)  # job_count: a few rows
    assert "Seq Scan on job_minute" not in nodes, (name, nodes)
    assert ms < PLAN_LIMIT_MS, (name, ms, nodes)
    return nodes


# The priority filter (V10): `high` and `low` walk the partial (priority, ...) indexes, alone
# and with the other filters; `default` (most rows) walks the indexes of no priority filter.
HIGH_FAILED_NOOP = {"priority": "high", "status": "failed", "function": "noop"}
PRIORITY_LISTS: dict[str, dict[str, Any]] = {
    "high": {"priority": "high"},
    "low": {"priority": "low"},
    "default": {"priority": "default"},
    "high+status": {"priority": "high", "status": "failed"},
    "high+function": {"priority": "high", "function": "noop"},
    "high+status+function": HIGH_FAILED_NOOP,
    "low+rare status+function": {"priority": "low", "status": "queued", "function": "noop"},
    "default+status+function": {"priority": "default", "status": "failed", "function": "noop"},
    "default+rare status": {"priority": "default", "status": "cancelled"},
}
# These must walk one of V10's partial indexes (job_priority_*), not filter another index.
# Not "low+rare status+function": a `queued` filter may as well walk V3's job_unfinished_idx,
# which holds only the unfinished rows (the planner took either in full runs); _check_plan
# still holds it to an index and the time limit.
ON_PRIORITY_INDEX = {
    "high",
    "low",
    "high+status",
    "high+function",
    "high+status+function",
    "high+status+function, page 2",
    "low, oldest first, page 2",
}


def _failed_ids_plans(prefix: str) -> list[tuple[str, sql.Composable, dict[str, Any]]]:
    """ledger/control.py's retry_failed: each filter combination's own statement."""
    like, exact, noop = prefix + "00042%", prefix + "0004247", "noop"
    return [
        (f"failed ids {label}", sql.SQL(query(name)), {**params, "limit": 10_000})
        for label, name, params in (
            ("", "job.failed_ids", {}),
            ("of noop", "job.failed_ids_of", {"function": noop}),
            ("by prefix", "job.failed_ids_prefix", {"prefix": like}),
            ("by prefix, of noop", "job.failed_ids_prefix_of", {"prefix": like, "function": noop}),
            ("exact", "job.failed_ids_exact", {"job_id": exact}),
            ("exact, of noop", "job.failed_ids_exact_of", {"job_id": exact, "function": noop}),
        )
    ]


def test_priority_filters_use_their_index_in_generic_plans_too(
    settings: Settings, big_ledger: str
) -> None:
    """psycopg prepares a statement run 5 times on a connection, and PostgreSQL may then plan
    it once for any value (a generic plan): the priority filter's repeated predicate lets that
    plan still prove V10's partial indexes; the statements of retry_failed's filter
    combinations keep their index too."""
    plans: list[tuple[str, sql.Composable, dict[str, Any]]] = [
        (name, *list_query(**kw, limit=50)) for name, kw in PRIORITY_LISTS.items()
    ]
    plans += _failed_ids_plans(big_ledger)
    with _admin(settings) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        for n, (name, statement, params) in enumerate(plans):
            text, values = _positional(statement.as_string(conn), params)
            conn.execute(f"PREPARE page_cost_{n} AS {text}")
            args = sql.SQL(", ").join(sql.Literal(v) for v in values)
            explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {} ({})").format(
                sql.Identifier(f"page_cost_{n}"), args
            )
            nodes = _check_plan(conn, f"generic {name}", explain, None)
            if name in ON_PRIORITY_INDEX:
                assert any("(job_priority_" in node for node in nodes), (name, nodes)


def _positional(text: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """`%(name)s` placeholders as PREPARE's $1, $2 ..., and the values in their order."""
    names: list[str] = []
    for name in re.findall(r"%\((\w+)\)s", text):
        if name not in names:
            names.append(name)
    for n, name in enumerate(names, start=1):
        text = text.replace(f"%({name})s", f"${n}")
    return text.replace("%%", "%"), [params[name] for name in names]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_page_loads_stay_fast_with_a_million_rows(page_api: httpx.Client, big_ledger: str) -> None:
    # The newest page, and the filters a person uses: each must be answered from an index.
    variants = [
        "",
        "?status=failed",
        "?function=noop",
        "?status=failed&function=noop",
        f"?q={big_ledger}00042",
        f"?q={big_ledger}0004242&match=exact",
        "?sort=oldest&status=failed",
        "?function=noop&before=" + _cursor(page_api),
        "?priority=high",
        "?priority=low&status=failed&function=noop",
        "?priority=default&status=failed",
    ]
    times: list[float] = []
    for i in range(PAGE_LOADS):
        start = time.perf_counter()
        response = page_api.get("/app/v1/status" + variants[i % len(variants)])
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text[:500]
    p50, p90 = statistics.median(times), _p(times, 0.9)
    print(
        f"\n{PAGE_LOADS} page loads over {ROWS:,} rows: p50 {p50:.1f} ms, p90 {p90:.1f} ms, "
        f"max {max(times):.1f} ms"
    )
    assert p90 < P90_LIMIT_MS, sorted(times)


def _cursor(api: httpx.Client) -> str:
    """A `before` cursor from the newest noop page: the second page's link."""
    html = api.get("/app/v1/status?function=noop").text
    marker = "before="
    at = html.index(marker) + len(marker)
    return html[at : html.index('"', at)].split("&")[0]


@dataclass
class Load:
    page_ms: list[float] = field(default_factory=list)
    page_codes: dict[int, int] = field(default_factory=dict)
    submit_ms: list[float] = field(default_factory=list)
    submit_codes: dict[int, int] = field(default_factory=dict)


async def _page_loop(client: httpx.AsyncClient, stop: asyncio.Event, load: Load, n: int) -> None:
    path = "/app/v1/status" if n % 2 else "/app/v1/status/fragment"
    while not stop.is_set():
        start = time.perf_counter()
        response = await client.get(path)
        load.page_ms.append((time.perf_counter() - start) * 1000)
        load.page_codes[response.status_code] = load.page_codes.get(response.status_code, 0) + 1


async def _submit_all(client: httpx.AsyncClient, ids: list[str], headers: dict[str, str]) -> Load:
    load = Load()
    stop = asyncio.Event()
    pages = [
        asyncio.create_task(_page_loop(client, stop, load, n)) for n in range(CONCURRENT_PAGES)
    ]
    await asyncio.sleep(1.0)  # the page loads are in full swing before the first submission
    gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)

    async def one(job_id: str) -> None:
        async with gate:
            start = time.perf_counter()
            response = await client.post(
                "/api/v1/jobs",
                json={"job_id": job_id, "function": "noop", "params": {}},
                headers=headers,
            )
            load.submit_ms.append((time.perf_counter() - start) * 1000)
            code = response.status_code
            load.submit_codes[code] = load.submit_codes.get(code, 0) + 1

    try:
        await asyncio.gather(*(one(job_id) for job_id in ids))
    finally:
        stop.set()
        await asyncio.gather(*pages)
    return load


async def _run_under_load(
    base_url: str, cookies: httpx.Cookies, ids: list[str], headers: dict[str, str]
) -> Load:
    limits = httpx.Limits(max_connections=CONCURRENT_PAGES + SUBMIT_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=HTTP_TIMEOUT, limits=limits, cookies=cookies
    ) as client:
        return await _submit_all(client, ids, headers)


def test_20_concurrent_page_loads_do_not_fail_a_submission(
    page_api: httpx.Client,
    base_url: str,
    auth: dict[str, str],
    big_ledger: str,
    settings: Settings,
) -> None:
    ids = [f"{big_ledger}sub-{i:03d}" for i in range(SUBMISSIONS)]
    load = asyncio.run(_run_under_load(base_url, page_api.cookies, ids, auth))
    print(
        f"\n{SUBMISSIONS} submissions beside {CONCURRENT_PAGES} page loops "
        f"({len(load.page_ms)} page loads, answers {load.page_codes}): submissions "
        f"{load.submit_codes}, p50 {statistics.median(load.submit_ms):.0f} ms, "
        f"p99 {_p(load.submit_ms, 0.99):.0f} ms; page loads p50 "
        f"{statistics.median(load.page_ms):.0f} ms, p90 {_p(load.page_ms, 0.9):.0f} ms"
    )
    assert load.submit_codes == {202: SUBMISSIONS}
    assert set(load.page_codes) == {200}, load.page_codes  # the session held throughout
    # The rows are deleted with the others at the end: wait until the worker is done with
    # them, or its start of a deleted job would write the row back.
    deadline = time.monotonic() + DRAIN_WAIT_SECONDS
    left = SUBMISSIONS
    while left and time.monotonic() < deadline:
        with _admin(settings) as conn:
            row = conn.execute(
                "SELECT count(*) FROM job WHERE job_id = ANY(%s) "
                "AND status NOT IN ('succeeded', 'failed')",
                [ids],
            ).fetchone()
        left = int(row[0]) if row else 0
        time.sleep(0.5)
    assert left == 0, f"{left} submitted jobs did not finish within {DRAIN_WAIT_SECONDS:.0f} s"
