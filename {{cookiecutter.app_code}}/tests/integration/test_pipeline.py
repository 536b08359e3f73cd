"""The seed's worker assertions, end to end: API -> Redis -> worker -> PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.cron import next_cron
from arq.jobs import Job

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.core.cron import parse_cron
from {{ cookiecutter.app_code }}.db import Database, Role, get_one
from {{ cookiecutter.app_code }}.jobs.hello import HelloJob, HelloParams
from {{ cookiecutter.app_code }}.queue import deserialize

from .reads import hello_row, recent_cron_hellos, service_keys

pytestmark = pytest.mark.integration

Submit = Callable[..., httpx.Response]


@pytest.fixture
def submit(api: httpx.Client, auth: dict[str, str]) -> Submit:
    def post(job_id: str, function: str = "hello", **params: Any) -> httpx.Response:
        body = {"job_id": job_id, "function": function, "params": params}
        return api.post("/api/v1/jobs", json=body, headers=auth)

    return post


def test_hello_job_posted_through_the_api_succeeds(
    submit: Submit, job_id: Callable[[str], str], wait_for_job: Callable[..., dict[str, Any]]
) -> None:
    jid = job_id("hello")
    response = submit(jid, name="Ada")
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/api/v1/jobs/{jid}"
    assert response.json()["status"] == "queued"

    record = wait_for_job(jid)
    assert record["status"] == "succeeded", record["error"]
    assert record["tries"] == 1
    assert record["result"]["message"] == "hello Ada: complete"
    assert record["result"]["function"] == "hello"
    assert "job_id" not in record["result"]
    assert record["started_at"] >= record["enqueued_at"]
    assert record["finished_at"] >= record["started_at"]


def test_jobs_run_first_in_first_out(
    submit: Submit, job_id: Callable[[str], str], wait_for_job: Callable[..., dict[str, Any]]
) -> None:
    # Submitted further apart than the worker's poll delay, so each is picked up on its own.
    ids = [job_id(f"fifo{i}") for i in range(5)]
    for jid in ids:
        assert submit(jid).status_code == 202
        time.sleep(0.1)
    records = [wait_for_job(jid) for jid in ids]
    started = [r["started_at"] for r in records]
    assert started == sorted(started), "jobs started out of submission order"


@pytest.mark.anyio
async def test_redis_client_and_database_confirm_the_job(
    submit: Submit,
    job_id: Callable[[str], str],
    wait_for_job: Callable[..., dict[str, Any]],
    arq_redis: ArqRedis,
    database: Database,
    settings: Settings,
) -> None:
    jid = job_id("confirm")
    assert submit(jid, name="Grace").status_code == 202
    wait_for_job(jid)

    # The ledger row turns `succeeded` just before arq stores the result: allow a moment.
    job = Job(jid, arq_redis, _deserializer=deserialize)
    deadline = time.monotonic() + 5
    while (info := await job.result_info()) is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert info is not None and info.success is True
    assert info.result["message"] == "hello Grace: complete"
    keys = {key async for key in service_keys(arq_redis, settings)}
    assert f"arq:result:{jid}" in keys

    row = await hello_row(database[Role.DATA], jid)
    assert row is not None
    assert (row["source"], row["message"]) == ("api", "hello Grace")


def test_duplicate_job_id_is_409(
    submit: Submit, job_id: Callable[[str], str], wait_for_job: Callable[..., dict[str, Any]]
) -> None:
    jid = job_id("dup")
    assert submit(jid).status_code == 202
    again = submit(jid)
    assert again.status_code == 409
    assert again.json()["job_id"] == jid
    assert again.json()["status"] in {"queued", "in_progress", "succeeded"}
    wait_for_job(jid)
    after = submit(jid)
    assert after.status_code == 409
    assert after.json()["status"] == "succeeded"


def test_a_failing_job_is_recorded_as_failed(
    submit: Submit, job_id: Callable[[str], str], wait_for_job: Callable[..., dict[str, Any]]
) -> None:
    jid = job_id("fail")
    assert submit(jid, fail=True).status_code == 202
    record = wait_for_job(jid)
    assert record["status"] == "failed"
    assert "HelloFailed" in record["error"]
    assert "Traceback" in record["error"]
    assert record["result"] is None


def test_jobs_can_be_listed_newest_first_with_a_cursor(
    api: httpx.Client, read_auth: dict[str, str], submit: Submit, job_id: Callable[[str], str]
) -> None:
    ids = [job_id(f"list{i}") for i in range(3)]
    for jid in ids:
        assert submit(jid).status_code == 202
    first = api.get(
        "/api/v1/jobs", params={"function": "hello", "limit": 2}, headers=read_auth
    ).json()
    assert len(first["jobs"]) == 2 and first["next_cursor"]
    page_two = {"limit": 2, "before": first["next_cursor"]}
    second = api.get("/api/v1/jobs", params=page_two, headers=read_auth).json()
    seen = [j["job_id"] for j in first["jobs"]] + [j["job_id"] for j in second["jobs"]]
    assert seen[:3] == ids[::-1]
    stamps = [j["enqueued_at"] for j in first["jobs"] + second["jobs"]]
    assert stamps == sorted(stamps, reverse=True)
    garbage = api.get("/api/v1/jobs", params={"before": "garbage"}, headers=read_auth)
    assert garbage.status_code == 400


def test_jobs_can_be_listed_by_priority(
    api: httpx.Client, read_auth: dict[str, str], auth: dict[str, str], job_id: Callable[[str], str]
) -> None:
    made = {job_id(f"prio-{p}"): p for p in ("high", "low", "default", "high")}
    for jid, priority in made.items():
        body = {"job_id": jid, "function": "hello", "params": {}, "priority": priority}
        assert api.post("/api/v1/jobs", json=body, headers=auth).status_code == 202
    for priority in ("high", "default", "low"):
        query = {"priority": priority, "function": "hello", "limit": 500}
        listed = api.get("/api/v1/jobs", params=query, headers=read_auth).json()["jobs"]
        assert {j["priority"] for j in listed} == {priority}, (priority, listed[:3])
        ours = {j["job_id"] for j in listed} & set(made)
        assert ours == {jid for jid, p in made.items() if p == priority}
    wrong = api.get("/api/v1/jobs", params={"priority": "urgent"}, headers=read_auth)
    assert wrong.status_code == 422 and "priority" in wrong.text, wrong.text


@pytest.mark.anyio
async def test_cron_hello_runs(database: Database, settings: Settings) -> None:
    """A cron-made hello row appears within two periods of HELLO_CRON."""
    when = parse_cron(settings.hello_cron)
    now = datetime.now(UTC).replace(tzinfo=None)
    second_tick = next_cron(next_cron(now, **when), **when)  # type: ignore[arg-type]
    wait = (second_tick - now).total_seconds() + 5
    if wait > 120:
        pytest.skip(f"HELLO_CRON={settings.hello_cron!r} ticks less often than every minute")
    seen = await _wait_for_cron_row(database, since=now - timedelta(seconds=1), within=wait)
    assert seen["job_id"].startswith("cron:hello:")
    ledger = await get_one(database[Role.APP], "job.get", {"job_id": seen["job_id"]})
    assert ledger is not None
    assert (ledger["function"], ledger["source"], ledger["status"]) == (
        "hello",
        "cron",
        "succeeded",
    )


async def _wait_for_cron_row(database: Database, since: datetime, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        rows = await recent_cron_hellos(database[Role.DATA], within + 5)
        fresh = [r for r in rows if r["run_at"].replace(tzinfo=None) >= since]
        if fresh:
            return fresh[0]
        await asyncio.sleep(0.5)
    pytest.fail(f"no cron hello row appeared within {within:.0f} s; is the worker running?")


@pytest.mark.anyio
async def test_hello_runs_standalone_and_only_once(
    database: Database, job_id: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    jid = job_id("standalone")
    job = HelloJob(jid, database[Role.DATA])
    with caplog.at_level(logging.INFO, logger="{{ cookiecutter.app_code }}.jobs.hello"):
        result = await job.execute(HelloParams(name="Linus"))
        again = await job.execute(HelloParams(name="Linus"))
    assert result["message"] == again["message"] == "hello Linus: complete"
    assert "job_id" not in result and {"function", "message", "timestamp"} <= set(result)
    # One log record per step, with the job's id beside the message (a JSON line each).
    logged = [(r.getMessage(), getattr(r, "job_id", None)) for r in caplog.records]
    assert ("hello Linus: started", jid) in logged
    assert ("hello Linus: complete", jid) in logged
    async with database[Role.ADMIN].connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM hello WHERE job_id = %s", [jid])
        count = await cur.fetchone()
    assert count == {"n": 1}
