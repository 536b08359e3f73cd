"""The ledger's counters (job_count, V4__job_counts.sql) on the real server.

They must equal `SELECT function, status, count(*) FROM job GROUP BY 1, 2` in every snapshot:
after inserts by the API role, status changes by the worker role (in batches, concurrently, in
any order) and deletes, and after a rolled-back transaction. The roles may read them and
nothing else, and the status page's numbers are theirs.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from {{ cookiecutter.app_code }}.api.status.reading import read_counts
from {{ cookiecutter.app_code }}.db import Database, Role, put_many

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

STATUSES = ("queued", "in_progress", "succeeded", "failed")
SESSIONS = 6
ROUNDS = 40
BATCH = 5

COUNTERS = (
    "SELECT function, status, sum(n)::bigint AS n FROM job_count "
    "GROUP BY function, status HAVING sum(n) <> 0"
)
LEDGER = "SELECT function, status, count(*) AS n FROM job GROUP BY function, status"


async def counters_and_ledger(database: Database) -> tuple[dict[tuple[str, str], int], ...]:
    """Both counts in one snapshot (the stack's worker and crons keep writing meanwhile)."""
    async with database[Role.ADMIN].connection() as conn:
        await conn.set_autocommit(False)
        try:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            got = []
            for query in (COUNTERS, LEDGER):
                cur = await conn.execute(query)
                got.append({(r["function"], r["status"]): r["n"] for r in await cur.fetchall()})
        finally:
            await conn.rollback()
            await conn.set_autocommit(True)
    return got[0], got[1]


async def assert_counters_agree(database: Database) -> None:
    counters, ledger = await counters_and_ledger(database)
    assert counters == ledger


@pytest.fixture
async def prefix(database: Database) -> AsyncIterator[str]:
    """A fresh id prefix; its rows are deleted afterwards (through the trigger, as any delete)."""
    value = f"test-counts-{uuid.uuid4().hex[:10]}-"
    yield value
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute("DELETE FROM job WHERE job_id LIKE %s", [value + "%"])


async def _insert(database: Database, rows: list[dict[str, object]], prefix: str) -> None:
    """Insert as the API does, then date the rows a day ahead: the dispatcher delivers only
    unfinished rows older than a second, so it leaves these to the test (it would run them,
    and a start after the clean-up's delete would write a row back)."""
    await put_many(database[Role.APP], "job.insert", rows)
    async with database[Role.DATA].connection() as conn:
        await conn.execute(
            "UPDATE job SET enqueued_at = now() + interval '1 day' WHERE job_id LIKE %s",
            [prefix + "%"],
        )


def _rows(prefix: str, count: int) -> list[dict[str, object]]:
    return [
        {
            "job_id": f"{prefix}{i:04d}",
            "function": ("hello", "noop")[i % 2],
            "params": Jsonb({}),
            "source": "api",
            "trace_id": None,
            "span_id": None,
        }
        for i in range(count)
    ]


async def test_counters_follow_inserts_status_changes_and_deletes(
    database: Database, prefix: str
) -> None:
    await assert_counters_agree(database)
    rows = _rows(prefix, 20)
    await _insert(database, rows, prefix)  # the API role's inserts count
    await assert_counters_agree(database)

    data = database[Role.DATA]
    # Status changes as the worker and the control functions make them (their own guards, for
    # running rows only, aside: the counters must follow any change).
    ids = [row["job_id"] for row in rows]
    async with data.connection() as conn:
        for status, some in (
            ("succeeded", ids[:10]),
            ("failed", ids[10:14]),
            ("queued", ids[10:11]),
        ):
            await conn.execute(
                "UPDATE job SET status = %s WHERE job_id = ANY(%s)",
                [status, some],  # type: ignore[arg-type]
            )
    async with database[Role.APP].connection() as conn:
        await conn.execute("SELECT * FROM cancel_job(%s)", [ids[14]])
        await conn.execute("SELECT * FROM retry_jobs(%s)", [ids[11:12]])
    async with data.connection() as conn:  # an update that leaves the status alone
        await conn.execute("UPDATE job SET tries = tries + 1 WHERE job_id LIKE %s", [prefix + "%"])
        await conn.execute(  # the function changes too (no job does, but the count follows)
            "UPDATE job SET function = 'noop' WHERE job_id = %s", [rows[0]["job_id"]]
        )
    await assert_counters_agree(database)

    async with data.connection() as conn:  # a bulk delete: one statement, many rows
        await conn.execute("DELETE FROM job WHERE job_id LIKE %s", [prefix + "%"])
    await assert_counters_agree(database)


async def test_a_rolled_back_change_leaves_the_counters_alone(
    database: Database, prefix: str
) -> None:
    async with database[Role.DATA].connection() as conn:
        await conn.set_autocommit(False)
        for row in _rows(prefix, 3):
            await conn.execute(
                "INSERT INTO job (job_id, function, status) VALUES (%s, %s, 'succeeded')",
                [row["job_id"], row["function"]],
            )
        await conn.rollback()
        await conn.set_autocommit(True)
        # The same session counts again afterwards (its slot is claimed again).
        await conn.execute(
            "INSERT INTO job (job_id, function, status) VALUES (%s, 'hello', 'succeeded')",
            [prefix + "after"],
        )
    after, ledger = await counters_and_ledger(database)
    assert after == ledger


async def _churn(database: Database, ids: list[str], seed: int) -> str:
    """A worker's life on its own rows: batches of status changes in one transaction each, in
    a random order, so the counter rows are touched in a different order every time."""
    rng = random.Random(seed)
    async with database[Role.DATA].connection() as conn:
        for _ in range(ROUNDS):
            batch = rng.sample(ids, BATCH)
            async with conn.transaction():
                for job_id in batch:
                    await conn.execute(
                        "UPDATE job SET status = %s WHERE job_id = %s",
                        [rng.choice(STATUSES), job_id],
                    )
            if rng.random() < 0.2:  # and a delete now and then
                victim = rng.choice(ids)
                await conn.execute("DELETE FROM job WHERE job_id = %s", [victim])
        cur = await conn.execute(
            sql.SQL("SELECT current_setting({}, true) AS slot").format(
                sql.Literal(f"{database.settings.db_schema}.job_count_slot")
            )
        )
        row = await cur.fetchone()
        assert row is not None
        return str(row["slot"])


async def test_concurrent_batches_keep_the_counters_exact_and_never_wait(
    database: Database, prefix: str
) -> None:
    rows = _rows(prefix, SESSIONS * 20)
    await _insert(database, rows, prefix)
    ids = [str(r["job_id"]) for r in rows]
    parts = [ids[i::SESSIONS] for i in range(SESSIONS)]  # disjoint: no waits on job rows
    async with asyncio.timeout(60):
        slots = await asyncio.gather(*(_churn(database, part, n) for n, part in enumerate(parts)))
    # Each session wrote rows of a slot of its own: writers never serialise on a counter.
    assert len(set(slots)) == SESSIONS, slots
    assert all(slot.isdigit() and int(slot) > 0 for slot in slots), slots
    await assert_counters_agree(database)


@pytest.mark.parametrize("role", [Role.APP, Role.DATA], ids=["app", "data"])
async def test_roles_read_the_counters_and_cannot_write_them(
    database: Database, role: Role
) -> None:
    async with database[role].connection() as conn:
        await conn.execute("SELECT function, status, slot, n FROM job_count LIMIT 1")
        for statement in (
            "INSERT INTO job_count VALUES ('hello', 'failed', 999, 1)",
            "SELECT job_count_slot()",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                async with conn.transaction():
                    await conn.execute(statement)  # type: ignore[arg-type]
        # Refused by privilege, or, after bootstrap.sql ran again and granted the worker's
        # role DML on every table, by row-level security: no row to update or delete.
        for statement in ("UPDATE job_count SET n = n + 1", "DELETE FROM job_count"):
            try:
                async with conn.transaction():
                    cur = await conn.execute(statement)  # type: ignore[arg-type]
            except psycopg.errors.InsufficientPrivilege:
                continue
            assert cur.rowcount == 0, statement
    await assert_counters_agree(database)


@pytest.fixture
async def phantom(database: Database) -> AsyncIterator[str]:
    """A counter row for a function no ledger row has: only the counters can show it."""
    name = f"zz-counted-{uuid.uuid4().hex[:8]}"
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute(
            "INSERT INTO job_count (function, status, slot, n) VALUES (%s, 'failed', 0, 4242)",
            [name],
        )
    yield name
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute("DELETE FROM job_count WHERE function = %s", [name])


async def test_the_page_counts_come_from_the_counters(
    database: Database, phantom: str, page_api: httpx.Client
) -> None:
    counts = await read_counts(database[Role.APP])
    row = next(r for r in counts["per_function"] if r["function"] == phantom)
    assert row["counts"]["failed"] == 4242
    assert counts["overall"]["failed"] >= 4242

    # And over HTTP, as a browser with a session (page_api's cookie) loads it.
    async with httpx.AsyncClient(base_url=page_api.base_url, cookies=page_api.cookies) as client:
        response = await client.get("/app/v1/status")
    assert response.status_code == 200, response.text[:300]
    html = response.text
    assert re.search(
        rf">{re.escape(phantom)}</a></th>\s*<td class=\"num\">0</td><td class=\"num\">0</td>"
        rf"<td class=\"num\">0</td><td class=\"num\">4242</td>",
        html,
    ), html[:3000]
