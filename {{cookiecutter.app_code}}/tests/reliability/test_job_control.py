"""Cancel and retry under races and faults (#14): a cancel racing the start, 100 failed jobs
retried at once, a retry while Redis is down."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from .conftest import Rig, runs

pytestmark = pytest.mark.reliability

FINAL = ("succeeded", "failed", "cancelled")


def cancel(rig: Rig, jid: str) -> int:
    return rig.api.post(f"/api/v1/jobs/{jid}/cancel", headers=rig.auth).status_code


def retry(rig: Rig, jid: str) -> int:
    return rig.api.post(f"/api/v1/jobs/{jid}/retry", headers=rig.auth).status_code


def test_cancel_racing_the_start_never_started_or_aborted_and_recorded(rig: Rig) -> None:
    """Each cancel lands around its job's start (the worker polls every 10 ms): the ledger's
    row lock makes each end one of two ways, never a success after a 202."""
    rng = random.Random(14)
    answers: dict[str, int] = {}
    for n in range(30):
        jid = rig.new_id(f"race{n}")
        rig.submit(jid, sleep_ms=400)
        time.sleep(rng.uniform(0.0, 0.05))
        answers[jid] = cancel(rig, jid)
    ids = list(answers)
    rows = {r["job_id"]: r for r in rig.ledger.wait_for(ids, within=30, statuses=FINAL)}
    time.sleep(1.0)  # a run the abort missed would end (and try to record) within this
    started = runs(ids)
    never, aborted = 0, 0
    for jid, code in answers.items():
        row: dict[str, Any] = rig.ledger.job(jid)  # type: ignore[assignment]
        if code == 409:  # it had finished before the cancel came
            assert rows[jid]["status"] == "succeeded", row
            continue
        assert code == 202, (jid, code)
        assert row["status"] == "cancelled", row
        if row["attempts"] == []:
            never += 1
            assert started[jid] == 0 and row["tries"] == 0, (jid, started[jid], row)
            assert rig.ledger.count("hello", [jid]) == 0
        else:
            aborted += 1
            assert [a["outcome"] for a in row["attempts"]] == ["cancelled"], row["attempts"]
            assert row["tries"] == 1 and started[jid] <= 1, (jid, started[jid], row)
    print(
        f"cancel racing the start: {never} never started, {aborted} aborted, "
        f"{sum(c == 409 for c in answers.values())} finished first"
    )
    assert never + aborted >= 25, "most cancels should land before the 400 ms job ends"


def test_100_failed_jobs_retried_run_again_and_only_they(rig: Rig) -> None:
    retried = [rig.new_id(f"bulk{i}") for i in range(100)]
    left = [rig.new_id(f"left{i}") for i in range(5)]
    assert set(rig.post_all(retried + left, fail=True).values()) == {202}
    rig.ledger.wait_for(retried + left, within=60, statuses=("failed",))

    assert {retry(rig, jid) for jid in retried} == {202}
    deadline = time.monotonic() + 60
    while True:
        rows = rig.ledger.rows(
            "SELECT job_id, status, tries, attempts FROM job WHERE job_id = ANY(%s)",
            [retried + left],
        )
        done = [r for r in rows if r["job_id"] in retried and r["status"] == "failed"]
        if len(done) == 100 and all(r["tries"] == 2 for r in done):
            break
        assert time.monotonic() < deadline, f"{len(done)} of 100 retried jobs failed again"
        time.sleep(0.25)
    for row in rows:
        if row["job_id"] in retried:
            assert [a["attempt"] for a in row["attempts"]] == [1, 2], row
            assert all("params.fail is true" in a["error"] for a in row["attempts"])
        else:
            assert row["tries"] == 1 and len(row["attempts"]) == 1, row
    assert runs(retried) == dict.fromkeys(retried, 2)
    assert runs(left) == dict.fromkeys(left, 1)


def test_retry_while_redis_is_down_runs_once_redis_is_back(rig: Rig) -> None:
    """The retry commits in the ledger; Redis still holds the failed run's result, which the
    dispatcher must not take for the retry's (RETRY_KWARG), and delivers the job."""
    jid = rig.new_id("redisless")
    rig.submit(jid, fail=True)
    rig.ledger.wait_for([jid], within=20, statuses=("failed",))
    assert rig.redis.exists(f"arq:result:{jid}"), "arq kept no result: the test proves nothing"
    rig.stack.stop_service("redis")
    try:
        assert retry(rig, jid) == 202
        assert rig.ledger.job(jid)["status"] == "queued"  # type: ignore[index]
    finally:
        rig.stack.start_redis(rig.settings)
    deadline = time.monotonic() + 40
    while (row := rig.ledger.job(jid)) is None or row["tries"] < 2 or row["status"] != "failed":
        assert time.monotonic() < deadline, f"the retry did not run: {row}"
        time.sleep(0.25)
    assert [a["outcome"] for a in row["attempts"]] == ["failed", "failed"], row["attempts"]
    assert runs([jid]) == {jid: 2}
