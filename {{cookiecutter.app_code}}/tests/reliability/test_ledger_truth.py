"""The ledger is the source of truth: whatever Redis forgets, every accepted job runs, once;
nothing runs that was not accepted; arq's endings reach the ledger within seconds; FIFO holds;
concurrency grows with the workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest
import redis

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import Ledger, Rig, SpawnApi, SpawnWorker, SpawnWorkers, frozen, runs

pytestmark = pytest.mark.reliability

LOST = 500  # jobs Redis loses in the loss tests
SETTLE_WITHIN_S = 30.0  # how stale a status may be after arq finished a job


def queued_in_redis(client: redis.Redis, settings: Settings, ids: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for jid in ids:
        pipe.zscore(settings.queue_name, jid)
    return sum(score is not None for score in pipe.execute())


def assert_ran_once_each(ledger: Ledger, ids: list[str], within: float = 90) -> None:
    rows = ledger.wait_for(ids, within=within)
    assert all(r["tries"] == 1 for r in rows), sorted({r["tries"] for r in rows})
    assert ledger.count("hello", ids) == len(ids)
    counts = runs(ids)
    twice = {j: n for j, n in counts.items() if n != 1}
    assert not twice, f"{len(twice)} jobs did not run exactly once: {list(twice.items())[:5]}"


def test_redis_flushall_loses_no_accepted_job(rig: Rig) -> None:
    ids = [rig.new_id(f"flush{i}") for i in range(LOST)]
    with frozen(rig.stack.read_pid("worker")):  # the workers are paused: everything waits
        assert set(rig.post_all(ids, name="flush").values()) == {202}
        assert queued_in_redis(rig.redis, rig.settings, ids) == LOST
        rig.redis.flushall()
        assert queued_in_redis(rig.redis, rig.settings, ids) == 0
    assert_ran_once_each(rig.ledger, ids)


def test_redis_killed_and_restarted_from_its_append_only_file_loses_nothing(rig: Rig) -> None:
    ids = [rig.new_id(f"aof{i}") for i in range(LOST)]
    redis_pid = rig.stack.read_pid("redis")
    with frozen(rig.stack.read_pid("worker")):
        assert set(rig.post_all(ids, name="aof").values()) == {202}
        os.kill(redis_pid, signal.SIGKILL)  # within a second of the last write (everysec)
        while rig.stack.alive(redis_pid):
            time.sleep(0.05)
        rig.stack.start_redis(rig.settings)
        kept = queued_in_redis(rig.redis, rig.settings, ids)
    print(f"\nthe append-only file kept {kept} of {LOST} queued jobs")
    assert_ran_once_each(rig.ledger, ids)


def test_api_killed_mid_burst_every_202_runs_and_nothing_else(
    rig: Rig, spawn_api: SpawnApi
) -> None:
    process, victim = spawn_api()
    ids = [rig.new_id(f"burst{i}") for i in range(600)]
    answers: dict[str, int | None] = {}  # None: the connection broke, no answer
    todo = iter(ids)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                jid = next(todo, None)
            if jid is None:
                return
            body = {"job_id": jid, "function": "hello", "params": {"name": "burst"}}
            try:
                answers[jid] = victim.post("/api/v1/jobs", json=body, headers=rig.auth).status_code
            except httpx.TransportError:
                answers[jid] = None

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    while sum(code == 202 for code in list(answers.values())) < 100:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    for thread in threads:
        thread.join(30)

    accepted = [j for j, code in answers.items() if code == 202]
    refused = [j for j, code in answers.items() if code not in (202, None)]
    unanswered = [j for j, code in answers.items() if code is None]
    assert len(accepted) >= 100 and unanswered, answers
    rows = rig.ledger.rows("SELECT job_id FROM job WHERE job_id = ANY(%s)", [ids])
    committed = {r["job_id"] for r in rows}
    assert set(accepted) <= committed
    assert not committed & set(refused), "a refused submission is in the ledger"

    # Every committed job (each 202, and any whose answer the kill cut off) runs once.
    assert_ran_once_each(rig.ledger, sorted(committed))
    counts = runs(ids)
    assert {j for j, n in counts.items() if n} == committed, "a job ran without a ledger row"

    # A client without an answer submits again under the same id: 409 says it was accepted.
    again = {j: rig.post(j) for j in unanswered}
    for jid, response in again.items():
        assert response.status_code == (409 if jid in committed else 202), (jid, response.text)
    assert_ran_once_each(rig.ledger, [j for j in unanswered if j not in committed])


def test_max_tries_exhausted_the_ledger_says_failed_with_arqs_reason(
    rig: Rig, spawn_worker: SpawnWorker
) -> None:
    """A job that kills its worker (an OOM kill, say) with WORKER_MAX_TRIES=1: the next worker
    that takes it is past the limit, and arq ends it without running it."""
    rig.stack.stop_service("worker")  # only the test's workers, with one try each
    limits = {"WORKER_JOB_TIMEOUT": "2", "WORKER_MAX_TRIES": "1"}
    victim = spawn_worker(**limits)
    jid = rig.new_id("killer")
    assert rig.post_all([jid], name="killer", sleep_ms=5000) == {jid: 202}
    deadline = time.monotonic() + 15
    while (row := rig.ledger.job(jid)) is None or row["status"] != "in_progress":
        assert time.monotonic() < deadline, f"the job did not start: {row}"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait_gone()
    spawn_worker(**limits)

    expires = rig.redis.pttl(f"arq:in-progress:{jid}") / 1000  # then the second worker takes it
    (row,) = rig.ledger.wait_for([jid], within=expires + SETTLE_WITHIN_S, statuses=("failed",))
    assert "max 1 retries exceeded" in row["error"], row["error"]
    assert row["finished_at"] is not None
    assert runs([jid]) == {jid: 1}


def test_160_jobs_run_at_once_with_8_workers(rig: Rig, spawn_workers: SpawnWorkers) -> None:
    workers = 8  # the stack's own and 7 more, WORKER_MAX_JOBS each
    spawn_workers(workers - 1)
    capacity = workers * rig.settings.worker_max_jobs
    ids = [rig.new_id(f"wide{i}") for i in range(capacity)]
    assert set(rig.post_all(ids, name="wide", sleep_ms=6000).values()) == {202}
    most = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and most < capacity:
        row = rig.ledger.one(
            "SELECT count(*) AS n FROM job WHERE job_id = ANY(%s) AND status = 'in_progress'",
            [ids],
        )
        most = max(most, int(row["n"]))
        time.sleep(0.1)
    assert most == capacity, f"at most {most} of {capacity} jobs ran at once"
    rows = rig.ledger.wait_for(ids, within=60)
    assert len({r["worker_id"] for r in rows}) == workers


@pytest.fixture
def no_stack_worker(stack: ModuleType) -> Iterator[None]:
    stack.stop_service("worker")
    yield  # the suite's finalizer starts it again


def test_first_in_first_out_with_one_slot(
    rig: Rig, no_stack_worker: None, spawn_worker: SpawnWorker
) -> None:
    """With the workers stopped, 50 jobs queue up; one worker with one slot must start them in
    the order they were submitted (a LIFO queue, or any other order, fails this)."""
    ids = [rig.new_id(f"fifo{i:02d}") for i in range(50)]
    assert set(rig.post_all(ids, name="fifo").values()) == {202}
    spawn_worker(WORKER_MAX_JOBS="1")
    rows = rig.ledger.wait_for(ids, within=60)
    started = [r["job_id"] for r in sorted(rows, key=lambda r: r["started_at"])]
    assert started == ids
