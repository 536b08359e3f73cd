"""Several workers: each cron tick runs once; 10,000 jobs in a burst all run, once each."""

from __future__ import annotations

import asyncio
import collections
import inspect
import math
import time
import uuid

import pytest
from arq import cron

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, Role
from {{ cookiecutter.app_code }}.ledger.submit import HandOver, submit
from {{ cookiecutter.app_code }}.queue import connect

from .conftest import Rig, SpawnWorkers, hello_starts

pytestmark = pytest.mark.reliability

BURST = 10_000
BURST_CONCURRENCY = 10  # measured: more only adds contention on two cores
BURST_WAIT_SECONDS = 180.0


def test_each_cron_tick_runs_once_with_three_workers(rig: Rig, spawn_workers: SpawnWorkers) -> None:
    # Three workers of the test's own, all ticking every second (the stack's worker pauses:
    # every worker must share one schedule). Its own restarts when the test ends.
    rig.stack.stop_service("worker")
    workers = spawn_workers(3, HELLO_CRON="* * * * * *")
    first = math.ceil(time.time()) + 1
    time.sleep(6)
    last = math.floor(time.time()) - 1
    # arq runs a cron job at <second>.123456 unless told otherwise: ids are cron:hello:<ms>.
    offset = inspect.signature(cron).parameters["microsecond"].default // 1000
    ticks = [f"cron:hello:{second * 1000 + offset}" for second in range(first, last + 1)]
    assert len(ticks) >= 4

    rows = rig.ledger.wait_for(ticks, within=15)
    assert {r["worker_id"] for r in rows} <= {w.worker_id for w in workers}
    assert all(r["tries"] == 1 for r in rows), [(r["job_id"], r["tries"]) for r in rows]

    started = collections.Counter(
        run_id
        for w in workers
        for run_id in hello_starts(w.log.read_text(errors="replace"))
        if run_id.startswith("cron:hello:")
    )
    assert {tick: started[tick] for tick in ticks} == dict.fromkeys(ticks, 1)
    assert rig.ledger.count("hello", ticks) == len(ticks)
    # No late copy of a tick waits in the queue to run a second time later.
    for tick in ticks:
        assert rig.redis.zscore(rig.settings.queue_name, tick) is None, tick
        assert rig.redis.exists(f"arq:job:{tick}") == 0, tick


async def _submit_burst(settings: Settings, ids: list[str]) -> float:
    """Every id through ledger.submit (commit, then the background hand-over), concurrently;
    returns seconds."""
    sizes = {"db_pool_max_size": BURST_CONCURRENCY, "db_pool_min_size": 1}
    arq = await connect(settings)
    gate = asyncio.Semaphore(BURST_CONCURRENCY)
    async with Database(settings.model_copy(update=sizes), Role.APP) as db:
        pool = db[Role.APP]
        hand_over = HandOver(arq, settings)

        async def one(jid: str) -> None:
            async with gate:
                await submit(pool, hand_over, jid, "hello", {"name": "burst"})

        start = time.monotonic()
        try:
            await asyncio.gather(*(one(jid) for jid in ids))
        finally:
            await hand_over.aclose()  # the hand-overs still pending go to Redis
            await arq.aclose()
        return time.monotonic() - start


def test_10000_jobs_in_a_burst_all_run_once(rig: Rig, spawn_workers: SpawnWorkers) -> None:
    workers = spawn_workers(2)  # with the stack's own: three
    prefix = f"burst-{uuid.uuid4().hex[:8]}-"
    ids = [f"{prefix}{i:05d}" for i in range(BURST)]

    submitted_in = asyncio.run(_submit_burst(rig.settings, ids))
    assert (
        rig.ledger.one("SELECT count(*) AS n FROM job WHERE job_id LIKE %s", [prefix + "%"])["n"]
        == BURST
    )

    deadline = time.monotonic() + BURST_WAIT_SECONDS
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {
            r["status"]: r["n"]
            for r in rig.ledger.rows(
                "SELECT status, count(*) AS n FROM job WHERE job_id LIKE %s GROUP BY status",
                [prefix + "%"],
            )
        }
        if counts.get("succeeded", 0) + counts.get("failed", 0) == BURST:
            break
        time.sleep(1)
    drained_in = time.monotonic() - deadline + BURST_WAIT_SECONDS
    assert counts == {"succeeded": BURST}, f"after {drained_in:.0f} s: {counts}"

    # None lost, none run twice, all three workers took a share.
    stats = rig.ledger.one(
        "SELECT count(*) AS n, max(tries) AS max_tries, min(tries) AS min_tries, "
        "count(DISTINCT worker_id) AS workers FROM job WHERE job_id LIKE %s",
        [prefix + "%"],
    )
    assert (stats["n"], stats["min_tries"], stats["max_tries"]) == (BURST, 1, 1), stats
    assert stats["workers"] == 3, stats
    hello = rig.ledger.one("SELECT count(*) AS n FROM hello WHERE job_id LIKE %s", [prefix + "%"])
    assert hello["n"] == BURST
    pipe = rig.redis.pipeline(transaction=False)
    for jid in ids:
        pipe.zscore(rig.settings.queue_name, jid)
    assert not any(score is not None for score in pipe.execute()), "burst jobs left in the queue"
    assert all(w.alive() for w in workers)
    print(
        f"\n{BURST} jobs: submitted in {submitted_in:.1f} s ({BURST / submitted_in:.0f}/s), "
        f"all succeeded {drained_in:.0f} s after the last submission"
    )
