"""The charts' per-minute rollup (job_minute, V9__minute_stats.sql) on the real server.

Every finish (an update that sets finished_at) counts once, in the minute it finished, with
its outcome and its queue wait's bucket, whichever statement made it (the worker's end of a
job, a bulk update); nothing else counts. PostgreSQL's buckets are the page's
(api/status/minutes.py), the page reads what was counted, the API's role may only read the
table, and the clean-up cron deletes old minutes.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb

from {{ cookiecutter.app_code }}.api.status.minutes import bucket_of, read_window
from {{ cookiecutter.app_code }}.db import Database, Role, execute_one
from {{ cookiecutter.app_code }}.jobs.cleanup import MINUTES_KEPT_S

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Queue waits (s) of the test's jobs; the last three finish in one statement.
WAITS = [0.0004, 0.002, 0.05, 0.05, 0.3, 2.0, 40.0, 7000.0]
FAILS = {1, 4}  # indexes of the jobs that fail one by one


async def rollup(database: Database, function: str) -> Counter[tuple[str, int]]:
    async with database[Role.ADMIN].connection() as conn:
        cur = await conn.execute(
            "SELECT outcome, wait_bucket, sum(n)::bigint AS n FROM job_minute "
            "WHERE function = %s GROUP BY 1, 2",
            [function],
        )
        return Counter({(r["outcome"], r["wait_bucket"]): r["n"] for r in await cur.fetchall()})


async def test_buckets_in_postgresql_are_the_pages(database: Database) -> None:
    rng = random.Random(9)
    waits = [rng.lognormvariate(0, 4) for _ in range(500)] + [0.0, -1.0, 1e7]
    async with database[Role.ADMIN].connection() as conn:
        cur = await conn.execute(
            "SELECT w, job_wait_bucket(w) AS b FROM unnest(%s::float8[]) AS w", [waits]
        )
        got = {r["w"]: r["b"] for r in await cur.fetchall()}
        cur = await conn.execute("SELECT job_wait_bucket(NULL) AS b")
        never = await cur.fetchone()
    assert {w: bucket_of(w) for w in waits} == got
    assert never is not None and never["b"] == bucket_of(None)


async def test_each_finish_counts_once_in_its_minute_with_its_wait(
    database: Database, function: str
) -> None:
    ids = [f"{function}-{i}" for i in range(len(WAITS))]
    data = database[Role.DATA]
    async with data.connection() as conn:
        # Started rows dated a day ahead: the dispatcher leaves them to the test.
        for job_id, wait in zip(ids, WAITS, strict=True):
            await conn.execute(
                "INSERT INTO job (job_id, function, status, enqueued_at, started_at) VALUES "
                "(%s, %s, 'in_progress', now() + interval '1 day', "
                "now() + interval '1 day' + make_interval(secs => %s))",
                [job_id, function, wait],
            )
    # Not finishes: the inserts, a retry coming (back to queued).
    requeue = {"job_id": ids[0], "error": "again", "outcome": "retrying"}
    await execute_one(data, "job.requeue", requeue)
    assert await rollup(database, function) == Counter()
    async with data.connection() as conn:  # its next try starts (ends apply to running rows)
        await conn.execute("UPDATE job SET status = 'in_progress' WHERE job_id = %s", [ids[0]])
    for i, job_id in enumerate(ids[:-3]):
        if i in FAILS:
            await execute_one(data, "job.fail", {"job_id": job_id, "error": "boom"})
        else:
            await execute_one(data, "job.succeed", {"job_id": job_id, "result": Jsonb({})})
    async with data.connection() as conn:
        await conn.execute(  # a bulk finish: one statement, three rows
            "UPDATE job SET status = 'failed', finished_at = now() WHERE job_id = ANY(%s)",
            [ids[-3:]],
        )
        # Not a finish: a change to finished rows.
        await conn.execute("UPDATE job SET tries = tries + 1 WHERE function = %s", [function])

    outcome = [
        "failed" if i in FAILS or i >= len(ids) - 3 else "succeeded" for i in range(len(ids))
    ]
    expected = Counter((o, bucket_of(w)) for o, w in zip(outcome, WAITS, strict=True))
    assert await rollup(database, function) == expected

    # The page's window reads them (for this function alone), minute by minute as the ledger.
    async with database[Role.APP].connection() as conn:
        window = await read_window(conn, datetime.now(UTC), function)
        cur = await conn.execute(
            "SELECT date_trunc('minute', finished_at) AS m, status, count(*) AS n FROM job "
            "WHERE function = %s GROUP BY 1, 2",
            [function],
        )
        ledger = {(r["m"], r["status"]): r["n"] for r in await cur.fetchall()}
    shown = {(m.start, o): n for m in window.minutes for o, n in m.finished.items() if n}
    assert shown == ledger
    waits = Counter[int]()
    for minute in window.minutes:
        waits.update(minute.waits)
    assert waits == Counter(bucket_of(w) for w in WAITS)


async def test_the_api_role_reads_and_the_cleanup_deletes_old_minutes(
    database: Database, function: str
) -> None:
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute(
            "INSERT INTO job_minute (minute, function, outcome, wait_bucket, slot, n) VALUES "
            "(date_trunc('minute', now()) - make_interval(secs => %(old)s), %(f)s, 'failed', "
            "3, 0, 1), (date_trunc('minute', now()) - interval '1 hour', %(f)s, 'succeeded', "
            "3, 0, 1)",
            {"old": MINUTES_KEPT_S + 60, "f": function},
        )
    async with database[Role.APP].connection() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("UPDATE job_minute SET n = n + 1 WHERE function = %s", [function])
    assert (
        await execute_one(database[Role.DATA], "cleanup.minutes", {"keep_s": MINUTES_KEPT_S}) >= 1
    )
    assert await rollup(database, function) == Counter({("succeeded", 3): 1})
