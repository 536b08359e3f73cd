"""A job id is taken once, forever: under a stampede, and after its Redis keys are gone."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import Ledger

pytestmark = pytest.mark.reliability


async def _stampede(
    base_url: str, auth: dict[str, str], body: dict[str, Any], n: int
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        return await asyncio.gather(
            *[client.post("/api/v1/jobs", json=body, headers=auth) for _ in range(n)]
        )


def test_50_concurrent_submissions_of_one_id(
    base_url: str,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    wait_for_job: Callable[..., dict[str, Any]],
    ledger: Ledger,
) -> None:
    jid = job_id("stampede")
    body = {"job_id": jid, "function": "hello", "params": {"name": "stampede"}}
    responses = asyncio.run(_stampede(base_url, auth, body, 50))

    codes = collections.Counter(r.status_code for r in responses)
    other = next((r.text for r in responses if r.status_code not in (202, 409)), "")
    assert codes == {202: 1, 409: 49}, f"{dict(codes)}: {other}"
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.json()["job_id"] == jid
        assert conflict.json()["status"] in {"queued", "in_progress", "succeeded"}
        assert "already taken" in conflict.json()["detail"]

    record = wait_for_job(jid)
    assert record["status"] == "succeeded" and record["tries"] == 1
    assert ledger.count("job", [jid]) == 1
    assert ledger.count("hello", [jid]) == 1


def test_id_reused_after_its_redis_keys_expired_is_still_409(
    api: httpx.Client,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    wait_for_job: Callable[..., dict[str, Any]],
    ledger: Ledger,
    redis_db: redis.Redis,
    settings: Settings,
) -> None:
    """arq alone would run it again once its keys expire; the ledger's primary key refuses."""
    jid = job_id("expired")
    body = {"job_id": jid, "function": "hello", "params": {"name": "once"}}
    assert api.post("/api/v1/jobs", json=body, headers=auth).status_code == 202
    first = wait_for_job(jid)
    assert first["status"] == "succeeded"

    # Expire every arq key of the id now (KEY_TTL_SECONDS is hours): as if the TTL had passed.
    keys = [f"arq:{kind}:{jid}" for kind in ("job", "result", "retry", "in-progress")]
    deadline = time.monotonic() + 5  # the result lands just after the ledger says succeeded
    while not redis_db.exists(f"arq:result:{jid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    redis_db.delete(*keys)
    assert redis_db.exists(*keys) == 0
    assert redis_db.zscore(settings.queue_name, jid) is None

    again = api.post("/api/v1/jobs", json=body, headers=auth)
    assert again.status_code == 409, again.text
    assert again.json()["status"] == "succeeded"

    time.sleep(1.0)  # had it been enqueued, the worker would have started it by now
    assert redis_db.exists(f"arq:job:{jid}") == 0, "the reused id reached the queue"
    assert redis_db.zscore(settings.queue_name, jid) is None
    row = ledger.job(jid)
    assert row is not None
    finished = datetime.fromisoformat(first["finished_at"].replace("Z", "+00:00"))
    assert (row["status"], row["tries"], row["finished_at"]) == ("succeeded", 1, finished)
    assert ledger.count("hello", [jid]) == 1
