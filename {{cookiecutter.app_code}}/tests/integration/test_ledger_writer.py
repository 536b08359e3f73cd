"""The worker's group commit (ledger/writer.py) on the real server: the starts and the ends of
one batch go as one statement each (MANY), and each job still gets exactly its own row, its
attempt, its counts and its minute; a cancelled job or a value PostgreSQL refuses fails only
its own write."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from {{ cookiecutter.app_code }}.db import Database, Role, execute_one, get_one
from {{ cookiecutter.app_code }}.db.pool import InvalidValue
from {{ cookiecutter.app_code }}.ledger.writer import LedgerWriter, _grouped

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def start(job_id: str, function: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "function": function,
        "params": Jsonb(params or {"n": 1}),
        "source": "api",
        "tries": 1,
        "enqueued_at": datetime.now(UTC),
        "worker_id": "test-host:1",
        "trace_id": None,
    }


async def rows(database: Database, function: str) -> dict[str, dict[str, Any]]:
    async with database[Role.ADMIN].connection() as conn:
        cur = await conn.execute(
            "SELECT job_id, status, tries, params, result, result = 'null'::jsonb AS null_result, "
            "attempts, worker_id FROM job WHERE function = %s",
            [function],
        )
        return {r["job_id"]: r for r in await cur.fetchall()}


async def counted(database: Database, function: str, table: str, column: str) -> dict[str, int]:
    async with database[Role.ADMIN].connection() as conn:
        cur = await conn.execute(
            f"SELECT {column} AS k, sum(n)::bigint AS n FROM {table} "  # type: ignore[arg-type]
            "WHERE function = %s GROUP BY 1",
            [function],
        )
        return {r["k"]: r["n"] for r in await cur.fetchall() if r["n"]}


async def test_a_batch_of_starts_and_ends_records_each_job(
    database: Database, function: str
) -> None:
    writer = LedgerWriter(database[Role.DATA])
    first = [f"{function}-a{i}" for i in range(6)]
    await asyncio.gather(*(writer.write("job.start", start(i, function)) for i in first))
    assert (writer.batches, writer.writes) == (1, 6)
    # The ends of the first six and the starts of three more, in one batch.
    more = [f"{function}-b{i}" for i in range(3)]
    ends = [
        writer.write("job.succeed", {"job_id": i, "result": Jsonb(None if n == 0 else {"n": n})})
        for n, i in enumerate(first)
    ]
    await asyncio.gather(*ends, *(writer.write("job.start", start(i, function)) for i in more))
    assert (writer.batches, writer.writes) == (2, 15)
    await writer.aclose()

    got = await rows(database, function)
    assert sorted(got) == sorted(first + more)
    for n, job_id in enumerate(first):
        row = got[job_id]
        assert row["status"] == "succeeded" and row["tries"] == 1 and row["params"] == {"n": 1}
        assert row["result"] == (None if n == 0 else {"n": n})
        assert row["null_result"] is (n == 0)  # a JSON null, as the single statement stores
        (attempt,) = row["attempts"]
        assert (attempt["attempt"], attempt["outcome"]) == (1, "succeeded"), attempt
        assert attempt["worker_id"] == "test-host:1" and attempt["finished_at"]
    for job_id in more:
        assert got[job_id]["status"] == "in_progress"
        assert [a["outcome"] for a in got[job_id]["attempts"]] == ["running"]
    assert await counted(database, function, "job_count", "status") == {
        "succeeded": 6,
        "in_progress": 3,
    }
    assert await counted(database, function, "job_minute", "outcome") == {"succeeded": 6}


async def test_a_cancelled_job_in_a_batch_fails_alone(database: Database, function: str) -> None:
    ids = [f"{function}-{i}" for i in range(4)]
    for job_id in ids:  # the API's rows, queued
        params = {**start(job_id, function), "source": "api", "span_id": None}
        await execute_one(database[Role.APP], "job.insert", params)
    await get_one(database[Role.APP], "job.cancel", {"job_id": ids[1]})
    writer = LedgerWriter(database[Role.DATA])
    results = await asyncio.gather(
        *(writer.write("job.start", start(i, function)) for i in ids), return_exceptions=True
    )
    await writer.aclose()
    refused = results[1]
    assert isinstance(refused, psycopg.errors.RaiseException), results
    assert refused.diag.message_hint == "job_cancelled"
    assert [r for n, r in enumerate(results) if n != 1] == [None, None, None]
    got = await rows(database, function)
    assert {i: got[i]["status"] for i in ids} == {
        ids[0]: "in_progress",
        ids[1]: "cancelled",
        ids[2]: "in_progress",
        ids[3]: "in_progress",
    }


async def test_a_value_postgresql_refuses_fails_only_its_own_write(
    database: Database, function: str
) -> None:
    ids = [f"{function}-{i}" for i in range(3)]
    writer = LedgerWriter(database[Role.DATA])
    bad = start(ids[2], function, {"text": "nul \u0000 here"})  # jsonb takes no NUL
    results = await asyncio.gather(
        writer.write("job.start", start(ids[0], function)),
        writer.write("job.start", start(ids[1], function)),
        writer.write("job.start", bad),
        return_exceptions=True,
    )
    await writer.aclose()
    assert results[:2] == [None, None] and isinstance(results[2], InvalidValue), results
    assert sorted(await rows(database, function)) == ids[:2]


async def test_writes_of_one_job_keep_their_order() -> None:
    """Writes of distinct jobs group by statement; with a job twice, runs keep their order."""
    a, b, c = ({"job_id": i} for i in "abc")
    distinct = [("job.start", a), ("job.succeed", b), ("job.start", c)]
    assert _grouped(distinct) == [("job.start", [a, c]), ("job.succeed", [b])]
    twice = [("job.start", a), ("job.requeue", a), ("job.start", c)]
    assert _grouped(twice) == [("job.start", [a]), ("job.requeue", [a]), ("job.start", [c])]
