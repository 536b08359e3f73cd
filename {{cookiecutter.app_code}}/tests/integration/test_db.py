"""The database layer on the real server: every role, every verb, what each role is refused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import (
    Database,
    Role,
    UnknownQuery,
    execute_one,
    get_many,
    get_one,
    put_many,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def rows(database: Database) -> AsyncIterator[list[str]]:
    """Three fresh ledger ids, deleted afterwards by the admin role."""
    ids = [f"test-db-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    yield ids
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute("DELETE FROM job WHERE job_id = ANY(%s)", [ids])


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
async def test_each_role_connects_with_its_own_user(
    database: Database, settings: Settings, role: Role
) -> None:
    row = await get_one(database[role], "health.ping")
    assert row == {"ok": 1}
    async with database[role].connection() as conn:
        cur = await conn.execute("SELECT current_user AS u, current_schema() AS s")
        got = await cur.fetchone()
    assert got is not None
    assert got["u"] == getattr(settings, f"db_{role.value}_user")
    assert got["s"] == settings.db_schema


async def test_pool_is_reused_not_reopened(settings: Settings) -> None:
    async with Database(settings.model_copy(update={"db_pool_max_size": 1}), Role.APP) as db:
        pids = set()
        for _ in range(20):
            async with db[Role.APP].connection() as conn:
                cur = await conn.execute("SELECT pg_backend_pid() AS pid")
                row = await cur.fetchone()
                assert row is not None
                pids.add(row["pid"])
        assert len(pids) == 1
        assert db[Role.APP].get_stats().get("connections_num", 0) == 1


async def test_put_many_get_one_get_many_execute_one(database: Database, rows: list[str]) -> None:
    app, data = database[Role.APP], database[Role.DATA]
    params = [
        {
            "job_id": job,
            "function": "hello",
            "params": Jsonb({"n": i}),
            "source": "api",
            "trace_id": None,
            "span_id": None,
        }
        for i, job in enumerate(rows)
    ]
    assert await put_many(app, "job.insert", params) == 3

    one = await get_one(app, "job.get", {"job_id": rows[1]})
    assert one is not None
    assert (one["job_id"], one["params"], one["status"]) == (rows[1], {"n": 1}, "queued")
    assert await get_one(app, "job.get", {"job_id": "no-such-job"}) is None

    counts = await get_many(app, "status.counts")
    queued = [c["n"] for c in counts if (c["function"], c["status"]) == ("hello", "queued")]
    assert queued and queued[0] >= 3, counts

    # An end is recorded only for a running row (a cancel or retry meanwhile stands).
    succeed = {"job_id": rows[0], "result": Jsonb({})}
    assert await execute_one(data, "job.succeed", succeed) == 0
    start = {
        "job_id": rows[0],
        "function": "hello",
        "params": Jsonb({"n": 0}),
        "source": "api",
        "tries": 1,
        "enqueued_at": one["enqueued_at"],
        "worker_id": "test:1",
        "trace_id": None,
    }
    assert await execute_one(data, "job.start", start) == 1
    assert await execute_one(data, "job.succeed", succeed) == 1
    done = await get_one(data, "job.get", {"job_id": rows[0]})
    assert done is not None and done["status"] == "succeeded"


async def test_unknown_query_lists_the_known_ones(database: Database) -> None:
    with pytest.raises(UnknownQuery, match=r"unknown query 'job\.nope'; known queries: .*job\.get"):
        await get_one(database[Role.APP], "job.nope")


async def test_parameters_are_bound_not_formatted(database: Database) -> None:
    hostile = "x'; DROP TABLE job; --"
    assert await get_one(database[Role.APP], "job.get", {"job_id": hostile}) is None
    assert await get_one(database[Role.APP], "job.get", {"job_id": "no-such-job"}) is None


REFUSED = [
    pytest.param(Role.APP, "DELETE FROM job", id="app-cannot-delete-jobs"),
    pytest.param(Role.APP, "UPDATE job SET status = 'failed'", id="app-cannot-update-jobs"),
    pytest.param(
        Role.APP,
        "INSERT INTO hello (job_id, source, message) VALUES ('x', 'api', 'x')",
        id="app-cannot-insert-hello",
    ),
    pytest.param(Role.APP, "CREATE TABLE sneaky (id int)", id="app-cannot-create-table"),
    pytest.param(Role.DATA, "CREATE TABLE sneaky (id int)", id="data-cannot-create-table"),
    pytest.param(Role.DATA, "ALTER TABLE job ADD COLUMN x int", id="data-cannot-alter"),
    pytest.param(Role.DATA, "DROP TABLE hello", id="data-cannot-drop"),
    pytest.param(Role.DATA, "CREATE TABLE public.sneaky (id int)", id="data-cannot-use-public"),
    pytest.param(Role.APP, "SELECT * FROM flyway_schema_history", id="app-cannot-read-history"),
    pytest.param(Role.DATA, "DELETE FROM flyway_schema_history", id="data-cannot-touch-history"),
    pytest.param(Role.DATA, "SELECT * FROM cancel_job('x')", id="data-cannot-cancel"),
    pytest.param(Role.DATA, "SELECT * FROM retry_jobs(ARRAY['x'])", id="data-cannot-retry"),
    pytest.param(Role.APP, "SELECT job_refuse_start('x')", id="app-cannot-refuse-starts"),
    pytest.param(
        Role.APP, "SELECT job_attempt_end('[]', 'failed', NULL)", id="app-cannot-end-attempts"
    ),
]


@pytest.mark.parametrize(("role", "statement"), REFUSED)
async def test_roles_are_refused_what_they_must_not_do(
    database: Database, role: Role, statement: str
) -> None:
    async with database[role].connection() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with conn.transaction():
                await conn.execute(statement)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", [Role.APP, Role.DATA], ids=["app", "data"])
async def test_roles_cannot_read_another_schema(database: Database, role: Role) -> None:
    other = f"other_{uuid.uuid4().hex[:8]}"
    async with database[Role.ADMIN].connection() as admin:
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(other)))
        await admin.execute(
            sql.SQL("CREATE TABLE {}.secret (v text)").format(sql.Identifier(other))
        )
    try:
        async with database[role].connection() as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(sql.SQL("SELECT * FROM {}.secret").format(sql.Identifier(other)))
    finally:
        async with database[Role.ADMIN].connection() as admin:
            await admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(other)))
