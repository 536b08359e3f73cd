"""Priorities and delayed jobs through the whole stack: a `high` job overtakes a `low` backlog,
each priority is first in, first out, `low` still progresses under a `high` backlog (the
claim's fair turns), and a delayed job that Redis forgets runs, not before its run_at."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from types import ModuleType
from typing import Any

import pytest

from {{ cookiecutter.app_code }}.queue import queue_for

from .conftest import Rig, SpawnWorker, runs

pytestmark = pytest.mark.reliability

# A cron schedule that never comes within a test (1 January, midnight): the spawned worker's
# only cron job is the one it runs at start.
RARE_CRON = "0 0 0 1 1 *"


@pytest.fixture
def no_stack_worker(stack: ModuleType) -> Iterator[None]:
    """The backlog waits until the test's own worker starts."""
    stack.stop_service("worker")
    yield  # the suite's finalizer starts it again


def batch(rig: Rig, ids: list[str], priority: str, **params: Any) -> None:
    """Submit hello jobs under `ids` in one POST /api/v1/batches, every one accepted."""
    items = [
        {"job_id": jid, "function": "hello", "params": params, "priority": priority} for jid in ids
    ]
    response = rig.api.post("/api/v1/batches", json={"jobs": items}, headers=rig.auth, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(ids), response.text


def started_order(rig: Rig, ids: list[str], within: float) -> list[str]:
    rows = rig.ledger.wait_for(ids, within=within)
    return [r["job_id"] for r in sorted(rows, key=lambda r: (r["started_at"], r["job_id"]))]


def test_a_high_job_overtakes_1000_low_ones(
    rig: Rig, no_stack_worker: None, spawn_worker: SpawnWorker
) -> None:
    """1,000 `low` jobs are queued, then one `high` job; a worker with the stack's settings
    starts: the high job finishes before a fifth of the low ones (first in, first out for all
    would finish it last). The backlog is queued before the worker starts, so the test proves
    the claim's order, not how fast a submission reaches Redis during a drain."""
    low = [rig.new_id(f"low{i:04d}") for i in range(1000)]
    batch(rig, low, "low", sleep_ms=50)
    high = rig.new_id("high")
    body = {"job_id": high, "function": "hello", "priority": "high"}
    assert rig.api.post("/api/v1/jobs", json=body, headers=rig.auth).status_code == 202
    # In Redis first: no worker runs, so no dispatcher either; the API's own hand-over puts it
    # there, retrying after a Redis failure left by an earlier test (test_hand_over.py proves
    # that). How soon a submission gets there is not what this test measures.
    high_queue = queue_for(rig.settings.queue_name, "high")
    deadline = time.monotonic() + 30
    while rig.redis.zscore(high_queue, high) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.redis.zscore(high_queue, high) is not None, "the high job never reached Redis"
    spawn_worker(HELLO_CRON=RARE_CRON)
    done = rig.ledger.wait_for([high], within=30)[0]["finished_at"]
    rows = rig.ledger.wait_for(low, within=120)
    before = sum(1 for r in rows if r["finished_at"] < done)
    assert before < len(low) // 5, f"{before} of {len(low)} low jobs finished before the high one"


def test_each_priority_is_first_in_first_out_with_one_slot(
    rig: Rig, no_stack_worker: None, spawn_worker: SpawnWorker
) -> None:
    """30 jobs of each priority, submitted interleaved; one worker with one slot starts each
    priority's jobs in the order they were submitted, `high` ahead of the rest."""
    ids: dict[str, list[str]] = {p: [] for p in ("high", "default", "low")}
    for i in range(30):
        for priority, mine in ids.items():
            mine.append(jid := rig.new_id(f"fifo-{priority}{i:02d}"))
            body = {"job_id": jid, "function": "hello", "priority": priority}
            assert rig.api.post("/api/v1/jobs", json=body, headers=rig.auth).status_code == 202
    spawn_worker(WORKER_MAX_JOBS="1", HELLO_CRON=RARE_CRON)
    order = started_order(rig, [j for mine in ids.values() for j in mine], within=60)
    for priority, mine in ids.items():
        assert [j for j in order if j in mine] == mine, f"{priority} ran out of order"
    # Fair turns (one claim in 5) take the oldest job of any priority, which may be a `default`
    # or `low` one; the rest take `high`: at least 3 of the first 5 are `high`.
    assert sum(j in ids["high"] for j in order[:5]) >= 3, order[:5]
    assert order.index(ids["high"][-1]) < 45, "the high jobs did not go first"


def test_low_jobs_progress_under_a_high_backlog(
    rig: Rig, no_stack_worker: None, spawn_worker: SpawnWorker
) -> None:
    """5 `low` jobs wait behind 100 newer `high` ones; one slot: every 5th claim is a fair turn
    and takes the oldest job, a `low` one, so all 5 start before 40 of the `high` ones have
    (strict priority would start them after all 100)."""
    low = [rig.new_id(f"starve-low{i}") for i in range(5)]
    batch(rig, low, "low")
    time.sleep(0.05)  # the high jobs are newer
    high = [rig.new_id(f"starve-high{i:03d}") for i in range(100)]
    batch(rig, high, "high")
    spawn_worker(WORKER_MAX_JOBS="1", HELLO_CRON=RARE_CRON)
    order = started_order(rig, low + high, within=60)
    last_low = max(order.index(j) for j in low)
    assert last_low < 45, f"the last low job started {last_low + 1}th: {order[:50]}"


def test_a_delayed_job_survives_flushall_and_does_not_start_early(rig: Rig) -> None:
    jid = rig.new_id("delayed")
    body = {"job_id": jid, "function": "hello", "priority": "high", "delay_seconds": 6}
    response = rig.api.post("/api/v1/jobs", json=body, headers=rig.auth)
    assert response.status_code == 202, response.text
    run_at = datetime.fromisoformat(response.json()["run_at"])
    queue = queue_for(rig.settings.queue_name, "high")
    deadline = time.monotonic() + 5
    while rig.redis.zscore(queue, jid) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    score = rig.redis.zscore(queue, jid)
    assert score is not None, "the delayed job never reached the high queue"
    assert abs(score / 1000 - run_at.timestamp()) < 0.01, "not scored at its run_at"
    rig.redis.flushall()
    row = rig.ledger.wait_for([jid], within=30)[0]
    assert row["started_at"] >= run_at, f"started {row['started_at']}, before run_at {run_at}"
    assert (row["started_at"] - run_at).total_seconds() < 5, "started long after its run_at"
    assert row["tries"] == 1
    assert runs([jid]) == {jid: 1}
