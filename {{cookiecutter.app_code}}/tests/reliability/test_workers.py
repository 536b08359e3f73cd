"""Workers die: SIGKILL mid-job (the job runs again), SIGTERM (the job goes back to the queue)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from .conftest import Ledger, Rig, SpawnWorker

pytestmark = pytest.mark.reliability

# arq runs a job again only once `arq:in-progress:<id>` expires; its TTL is the longest function
# timeout + 10 s (arq 0.28, Worker.in_progress_timeout_s), and the functions' timeout is
# WORKER_JOB_TIMEOUT + 5 (worker/settings.py). The default 300 s would make the test wait over
# five minutes, so the worker that gets killed runs with WORKER_JOB_TIMEOUT=2: 17 s.
SHORT_JOB_TIMEOUT = 2
IN_PROGRESS_TTL = SHORT_JOB_TIMEOUT + 5 + 10


def wait_in_progress(ledger: Ledger, jid: str, within: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    row: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        row = ledger.job(jid)
        if row is not None and row["status"] == "in_progress":
            return row
        time.sleep(0.02)
    pytest.fail(f"job {jid} did not start within {within:.0f} s (last: {row})")


def test_worker_killed_mid_job_runs_it_again_once(rig: Rig, spawn_worker: SpawnWorker) -> None:
    # Only the short-timeout worker may take the job: the stack's own worker stops for now
    # (it is the "second worker" below; the fixtures restart it if the test fails first).
    rig.stack.stop_service("worker")
    victim = spawn_worker(WORKER_JOB_TIMEOUT=str(SHORT_JOB_TIMEOUT))

    jid = rig.new_id("sigkill")
    rig.submit(jid, name="phoenix", sleep_ms=1500)
    row = wait_in_progress(rig.ledger, jid)
    assert row["worker_id"] == victim.worker_id
    ttl = rig.redis.pttl(f"arq:in-progress:{jid}") / 1000
    assert 0 < ttl <= IN_PROGRESS_TTL + 5, f"in-progress TTL is {ttl} s"

    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    victim.wait_gone()

    # Nothing is lost: the job is still queued in Redis, and half done nowhere.
    assert rig.redis.zscore(rig.settings.queue_name, jid) is not None
    assert rig.redis.exists(f"arq:job:{jid}") == 1
    assert rig.ledger.count("hello", [jid]) == 0
    assert rig.ledger.job(jid)["status"] == "in_progress"  # type: ignore[index]

    rig.stack.start_worker(rig.settings, rig.stack.child_env(rig.settings))
    second = rig.stack.read_pid("worker")
    (done,) = rig.ledger.wait_for([jid], within=IN_PROGRESS_TTL + 15)
    assert done["tries"] == 2, done
    assert done["worker_id"].endswith(f":{second}"), done["worker_id"]
    assert done["result"]["message"] == "hello phoenix: complete"
    assert rig.ledger.count("hello", [jid]) == 1
    # Not before the in-progress key expired: no two workers ever held the job at once.
    restarted_after = time.monotonic() - killed
    assert restarted_after >= ttl - 1, f"run again after {restarted_after:.1f} s (TTL {ttl:.1f} s)"


def test_sigterm_puts_the_in_flight_job_back_in_the_queue(rig: Rig) -> None:
    jid = rig.new_id("sigterm")
    rig.submit(jid, name="interrupted", sleep_ms=3000)
    wait_in_progress(rig.ledger, jid)

    first = rig.stack.read_pid("worker")
    started = time.monotonic()
    rig.stack.stop_service("worker")  # SIGTERM, then waits for the process to exit
    stopped_in = time.monotonic() - started
    assert stopped_in < 5, f"the worker took {stopped_in:.1f} s to stop"

    row = rig.ledger.job(jid)
    assert row is not None
    assert (row["status"], row["error"]) == ("queued", "interrupted by shutdown")
    assert rig.redis.zscore(rig.settings.queue_name, jid) is not None, "the job left the queue"
    assert rig.redis.exists(f"arq:in-progress:{jid}") == 0, "the job is still marked running"
    assert rig.ledger.count("hello", [jid]) == 0

    rig.stack.start_worker(rig.settings, rig.stack.child_env(rig.settings))
    assert rig.stack.read_pid("worker") != first
    (done,) = rig.ledger.wait_for([jid], within=20)
    assert done["tries"] == 2, done
    assert done["error"] is None
    outcomes = [(a["outcome"], a["error"]) for a in done["attempts"]]
    assert outcomes == [("interrupted", "interrupted by shutdown"), ("succeeded", None)], outcomes
    assert rig.ledger.count("hello", [jid]) == 1
    log = (rig.stack.LOGS / "worker.log").read_text(errors="replace")
    assert f"{jid}:hello cancelled, will be run again" in log
