"""POST /api/v1/batches against the running stack: each item accepted or refused on its own,
in order; only the accepted ones run; the envelope's limits; and a batch racing single
submissions of the same ids gives each id to exactly one of them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

BATCHES = "/api/v1/batches"


def hello(job_id: str, name: str) -> dict[str, Any]:
    return {"job_id": job_id, "function": "hello", "params": {"name": name}}


def test_a_mixed_batch_gets_a_code_per_item_in_order_and_only_the_accepted_run(
    api: httpx.Client,
    auth: dict[str, str],
    read_auth: dict[str, str],
    job_id: Callable[[str], str],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    new, reused, twice, bad_params = job_id("new"), job_id("reused"), job_id("twice"), job_id("bad")
    first = api.post("/api/v1/jobs", json=hello(reused, "first"), headers=auth)
    assert first.status_code == 202, first.text
    items: list[Any] = [
        hello(new, "new"),
        hello(reused, "second"),  # the id was used before
        hello(twice, "one"),
        hello(twice, "two"),  # the same id again in this batch
        {"job_id": bad_params, "function": "hello", "params": {"name": 7}},  # bad params
        {"job_id": "cron:nope", "function": "hello"},  # a reserved id
        {"job_id": job_id("unknown"), "function": "no_such_job"},
        "not an object",
    ]
    response = api.post(BATCHES, json={"jobs": items}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    codes = [(r["job_id"], r["status_code"]) for r in body["results"]]
    assert codes == [
        (new, 202),
        (reused, 409),
        (twice, 202),
        (twice, 409),
        (bad_params, 422),
        ("cron:nope", 422),
        (items[6]["job_id"], 422),
        (None, 422),
    ]
    assert body["accepted"] == 2
    results = body["results"]
    assert "detail" not in results[0] or results[0]["detail"] is None
    assert "already taken" in results[1]["detail"] and results[1]["status"]
    assert "earlier in this batch" in results[3]["detail"]
    assert results[4]["detail"][0]["loc"] == ["body", "jobs", 4, "params", "name"]
    assert "reserved" in str(results[5]["detail"])
    assert "unknown function" in str(results[6]["detail"])

    # The accepted ones run, with their own params; the refused never do.
    assert "new" in str(wait_for_job(new)["result"])
    ran_twice = wait_for_job(twice)
    assert ran_twice["status"] == "succeeded" and ran_twice["params"] == {"name": "one"}
    kept = wait_for_job(reused)
    assert kept["params"] == {"name": "first"} and kept["tries"] == 1
    assert "first" in str(kept["result"]) and "second" not in str(kept["result"])
    for refused in (bad_params, items[6]["job_id"]):
        assert api.get(f"/api/v1/jobs/{refused}", headers=read_auth).status_code == 404


def test_the_envelope_is_refused_whole_over_1000_items_or_when_wrong(
    api: httpx.Client, auth: dict[str, str], read_auth: dict[str, str], job_id: Callable[[str], str]
) -> None:
    ids = [job_id("many") for _ in range(1001)]
    response = api.post(
        BATCHES, json={"jobs": [hello(i, "x") for i in ids]}, headers=auth, timeout=30
    )
    assert response.status_code == 422, response.text[:300]
    assert "1000" in response.text
    for some in (ids[0], ids[-1]):
        assert api.get(f"/api/v1/jobs/{some}", headers=read_auth).status_code == 404
    for envelope in ({"jobs": []}, {"jobs": "x"}, [hello(job_id("e"), "x")], {"items": []}):
        response = api.post(BATCHES, json=envelope, headers=auth)
        assert response.status_code == 422, (envelope, response.text[:300])


def test_a_batch_needs_the_write_token(
    api: httpx.Client, read_auth: dict[str, str], job_id: Callable[[str], str]
) -> None:
    envelope = {"jobs": [hello(job_id("auth"), "x")]}
    assert api.post(BATCHES, json=envelope).status_code == 401
    assert api.post(BATCHES, json=envelope, headers=read_auth).status_code == 403


@pytest.mark.anyio
async def test_a_batch_racing_single_submissions_gives_each_id_to_exactly_one(
    base_url: str, auth: dict[str, str], job_id: Callable[[str], str]
) -> None:
    ids = [job_id("race") for _ in range(300)]
    async with httpx.AsyncClient(base_url=base_url, headers=auth, timeout=60) as client:
        gate = asyncio.Semaphore(16)

        async def single(jid: str) -> int:
            async with gate:
                return (await client.post("/api/v1/jobs", json=hello(jid, "single"))).status_code

        async def batch(part: list[str]) -> list[int]:
            response = await client.post(BATCHES, json={"jobs": [hello(i, "batch") for i in part]})
            assert response.status_code == 200, response.text[:300]
            return [r["status_code"] for r in response.json()["results"]]

        singles = [asyncio.create_task(single(jid)) for jid in reversed(ids)]
        batched = await asyncio.gather(batch(ids[:150]), batch(ids[150:]))
        single_codes = dict(zip(reversed(ids), await asyncio.gather(*singles), strict=True))
    batch_codes = dict(zip(ids, batched[0] + batched[1], strict=True))
    winners = Counter()
    for jid in ids:
        pair = (batch_codes[jid], single_codes[jid])
        assert sorted(pair) == [202, 409], (jid, pair)
        winners["batch" if pair[0] == 202 else "single"] += 1
    assert sum(winners.values()) == len(ids)
