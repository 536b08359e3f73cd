"""Cancel, retry and retry policies through the API, against the running stack (#14)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, Role
from {{ cookiecutter.app_code }}.jobs.hello import RETRY

from .reads import hello_row

pytestmark = pytest.mark.integration

Wait = Callable[..., dict[str, Any]]
JOBS = "/api/v1/jobs"


@pytest.fixture
def post(api: httpx.Client, auth: dict[str, str]) -> Callable[..., httpx.Response]:
    def send(job_id: str, verb: str | None = None, **params: Any) -> httpx.Response:
        if verb is not None:
            return api.post(f"{JOBS}/{job_id}/{verb}", headers=auth)
        body = {"job_id": job_id, "function": "hello", "params": params}
        return api.post(JOBS, json=body, headers=auth)

    return send


def record(api: httpx.Client, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    response = api.get(f"{JOBS}/{job_id}", headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


@pytest.mark.anyio
async def test_cancel_queued_never_runs_and_cancel_running_aborts(
    api: httpx.Client,
    auth: dict[str, str],
    post: Callable[..., httpx.Response],
    job_id: Callable[[str], str],
    settings: Settings,
    database: Database,
) -> None:
    # Every slot of the worker busy with a 4 s job, so the last one waits in the queue.
    sleep_ms = 4000
    running = [job_id(f"busy{i}") for i in range(settings.worker_max_jobs)]
    for jid in running:
        assert post(jid, sleep_ms=sleep_ms).status_code == 202
    queued = job_id("waiting")
    assert post(queued, sleep_ms=10).status_code == 202
    deadline = time.monotonic() + 10
    while any(record(api, auth, j)["status"] != "in_progress" for j in running):
        assert time.monotonic() < deadline, "the worker did not start every busy job"
        await asyncio.sleep(0.1)
    assert record(api, auth, queued)["status"] == "queued"

    answer = post(queued, "cancel")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "cancelled"
    cancelled_at = time.monotonic()
    for jid in running:
        answer = post(jid, "cancel")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "cancelled"
    # Past the end of the busy jobs' sleep, and room in the worker for the queued one.
    await asyncio.sleep(max(0.0, sleep_ms / 1000 + 1.5 - (time.monotonic() - cancelled_at)))

    waited = record(api, auth, queued)
    assert waited["status"] == "cancelled" and waited["tries"] == 0, waited
    assert waited["attempts"] == [] and waited["started_at"] is None
    assert await hello_row(database[Role.DATA], queued) is None, "the cancelled job ran"
    for jid in running:
        done = record(api, auth, jid)
        assert done["status"] == "cancelled", done
        assert [a["outcome"] for a in done["attempts"]] == ["cancelled"], done["attempts"]
        # The abort came in mid-sleep: the job never got to its write.
        assert await hello_row(database[Role.DATA], jid) is None, f"{jid} ran to its end"


def test_cancel_and_retry_answer_404_409_401_403(
    api: httpx.Client,
    auth: dict[str, str],
    read_auth: dict[str, str],
    post: Callable[..., httpx.Response],
    job_id: Callable[[str], str],
    wait_for_job: Wait,
) -> None:
    for verb in ("cancel", "retry"):
        missing = post(job_id("nobody"), verb)
        assert missing.status_code == 404 and "no job with id" in missing.json()["detail"]
        assert post("bad id!", verb).status_code in (404, 405)
    done = job_id("done")
    assert post(done).status_code == 202
    wait_for_job(done)
    refused = post(done, "cancel")
    assert refused.status_code == 409, refused.text
    assert refused.json() == {
        "detail": f"job {done!r} is succeeded; only queued or running (in_progress) jobs can "
        "be cancelled",
        "job_id": done,
        "status": "succeeded",
    }
    again = post(done, "retry")
    assert again.status_code == 409
    assert "only failed or cancelled jobs can be retried" in again.json()["detail"]
    slow = job_id("slow")
    assert post(slow, sleep_ms=3000).status_code == 202
    early = post(slow, "retry")
    assert early.status_code == 409 and "cancel it first" in early.json()["detail"], early.text
    for verb in ("cancel", "retry"):
        read_only = api.post(f"{JOBS}/{slow}/{verb}", headers=read_auth)
        assert read_only.status_code == 403 and "API_TOKEN" in read_only.json()["detail"]
        assert api.post(f"{JOBS}/{slow}/{verb}").status_code == 401
    assert record(api, auth, slow)["status"] in ("queued", "in_progress")
    assert post(slow, "cancel").status_code == 202


def test_retry_runs_a_failed_job_again_under_its_id_keeping_each_error(
    api: httpx.Client,
    auth: dict[str, str],
    post: Callable[..., httpx.Response],
    job_id: Callable[[str], str],
    wait_for_job: Wait,
) -> None:
    jid = job_id("again")
    assert post(jid, fail=True).status_code == 202
    first = wait_for_job(jid)
    assert first["status"] == "failed" and first["tries"] == 1, first  # `fail`: never retried
    assert [a["outcome"] for a in first["attempts"]] == ["failed"]

    for n in (2, 3):
        answer = post(jid, "retry")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "queued" and answer.json()["job_id"] == jid
        assert answer.headers["Location"] == f"{JOBS}/{jid}"
        deadline = time.monotonic() + 20
        while (rec := record(api, auth, jid))["tries"] < n or rec["status"] != "failed":
            assert time.monotonic() < deadline, f"retry {n - 1} did not run: {rec}"
            time.sleep(0.1)
        assert rec["tries"] == n and len(rec["attempts"]) == n, rec
        assert [a["attempt"] for a in rec["attempts"]] == list(range(1, n + 1))
        assert all(a["outcome"] == "failed" for a in rec["attempts"])
        assert all("params.fail is true" in a["error"] for a in rec["attempts"])
        assert "params.fail is true" in rec["error"]
    starts = [at(a["started_at"]) for a in rec["attempts"]]
    assert starts == sorted(starts)


def test_cancelled_job_retried_runs_to_success(
    api: httpx.Client,
    auth: dict[str, str],
    post: Callable[..., httpx.Response],
    job_id: Callable[[str], str],
    wait_for_job: Wait,
) -> None:
    jid = job_id("revive")
    assert post(jid, sleep_ms=1500).status_code == 202
    deadline = time.monotonic() + 10
    while record(api, auth, jid)["status"] != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert post(jid, "cancel").status_code == 202
    answer = post(jid, "retry")
    assert answer.status_code == 202, answer.text
    done = wait_for_job(jid)
    assert done["status"] == "succeeded", done
    assert [a["outcome"] for a in done["attempts"]] == ["cancelled", "succeeded"]
    assert done["tries"] == 2


def test_retry_policy_runs_until_success_with_back_off(
    post: Callable[..., httpx.Response], job_id: Callable[[str], str], wait_for_job: Wait
) -> None:
    jid = job_id("flaky")
    assert post(jid, fail_until_try=3).status_code == 202
    done = wait_for_job(jid)
    assert done["status"] == "succeeded", done
    assert done["tries"] == 3
    attempts = done["attempts"]
    assert [a["outcome"] for a in attempts] == ["retrying", "retrying", "succeeded"]
    assert all("fail_until_try is 3" in a["error"] for a in attempts[:2])
    for n, (before, after) in enumerate(pairwise(attempts), start=1):
        gap = (at(after["started_at"]) - at(before["finished_at"])).total_seconds()
        assert gap >= RETRY.shortest(n), f"retry {n} came {gap:.3f} s after try {n}"


def test_retry_policy_exhausted_fails_with_every_error(
    post: Callable[..., httpx.Response],
    job_id: Callable[[str], str],
    wait_for_job: Wait,
    settings: Settings,
) -> None:
    jid = job_id("hopeless")
    assert post(jid, fail_until_try=50).status_code == 202
    done = wait_for_job(jid)
    runs = min(RETRY.retries, settings.worker_max_tries - 1) + 1
    assert done["status"] == "failed" and done["tries"] == runs, done
    outcomes = [a["outcome"] for a in done["attempts"]]
    assert outcomes == ["retrying"] * (runs - 1) + ["failed"]
    for n, attempt in enumerate(done["attempts"], start=1):
        assert f"try {n} fails (fail_until_try is 50)" in attempt["error"], attempt


def test_openapi_documents_cancel_retry_and_attempts(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    for verb in ("cancel", "retry"):
        route = spec["paths"]["/api/v1/jobs/{job_id}/" + verb]["post"]
        assert {"202", "401", "403", "404", "409", "503"} <= set(route["responses"]), verb
        assert route["security"] == [{"APIToken": []}]
    schemas = spec["components"]["schemas"]
    assert "attempts" in schemas["JobRecord"]["properties"]
    assert "cancelled" in str(schemas["JobRecord"]["properties"]["status"])
    attempt = schemas["Attempt"]["properties"]
    assert set(attempt) == {"attempt", "started_at", "finished_at", "outcome", "error", "worker_id"}
    assert all(field.get("description") or field.get("title") for field in attempt.values())
