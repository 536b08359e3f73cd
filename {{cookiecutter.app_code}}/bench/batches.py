"""Batch submissions: POST /api/v1/batches, `--batch-size` jobs a batch, `--batch-flight` in
flight, with the stack's worker paused (the API alone); then the stack's worker drains them.

The acceptance rate is jobs accepted a second of wall time; the API's CPU per job comes from
its own process (native stack). The drain is timed from the worker's resumption until the
queue is empty, and from the ledger (first start to last end), by one worker: the stack's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
from console import BenchError, Progress
from harness import Bench
from meters import ms, percentile
from services import NoPause, paused, stack_pid, worker_pause
from submissions import acceptance, api_meter, clients


async def batches(bench: Bench) -> None:
    a, s = bench.args, bench.settings
    ids = bench.ids("batch", a.batch_jobs)
    chunks = [ids[i : i + a.batch_size] for i in range(0, len(ids), a.batch_size)]
    pause = worker_pause(bench.mode, s.app_code, stack_pid("worker", bench.mode))
    with paused(pause):
        result = await accept(bench, chunks)
        began = time.perf_counter()
        meter = api_meter(bench)
    result["stack_worker_paused"] = not isinstance(pause, NoPause)
    bench.results["batches"] = result
    drain = await drained(bench, ids, began)
    # The stack's worker (its dispatcher included), PostgreSQL and Redis, a job of the drain.
    per_job = meter.per_job_ms(len(ids))
    drain["cpu_ms_per_job"] = {
        "workers": per_job.get("stack_worker"),
        **{k: v for k, v in per_job.items() if k not in ("stack_worker", "api", "bench")},
    }
    bench.results.setdefault("drain", {})["batch_jobs_stack_worker"] = drain


async def accept(bench: Bench, chunks: list[list[str]]) -> dict[str, Any]:
    """POST every chunk as a batch of noop jobs, `batch_flight` at a time."""
    a = bench.args
    total = sum(len(c) for c in chunks)
    codes: dict[int, int] = {}
    latencies: list[float] = []
    pending = iter(chunks)
    progress = Progress(
        f"API POST /api/v1/batches, {a.batch_size} jobs a batch, {a.batch_flight} in flight", total
    )

    async def sender(client: httpx.AsyncClient) -> None:
        for chunk in pending:
            body = {"jobs": [{"job_id": i, "function": "noop"} for i in chunk]}
            begin = time.perf_counter()
            response = await client.post("/api/v1/batches", json=body)
            latencies.append(time.perf_counter() - begin)
            if response.status_code != 200:
                raise BenchError(
                    f"a batch was refused: {response.status_code} {response.text[:300]}"
                )
            for item in response.json()["results"]:
                codes[item["status_code"]] = codes.get(item["status_code"], 0) + 1
            progress.update(sum(codes.values()))

    async with contextlib.AsyncExitStack() as stack:
        pool = await clients(bench, stack, a.batch_flight, wait=120)
        meter = api_meter(bench)
        start = time.perf_counter()
        await asyncio.gather(*(sender(client) for client in pool))
        took = time.perf_counter() - start
    accepted = codes.get(202, 0)
    result = {
        "jobs": total,
        "batch_size": a.batch_size,
        "in_flight": a.batch_flight,
        **acceptance(took, codes),
        "batch_p50_ms": ms(percentile(latencies, 50)),
        "batch_p99_ms": ms(percentile(latencies, 99)),
        "cpu_ms_per_job": meter.per_job_ms(total),
    }
    progress.finish(
        f"{result['accepted_per_s']:,.0f} jobs accepted/s ({accepted} in {took:.2f} s), "
        f"API CPU {result['cpu_ms_per_job']['api']} ms a job"
    )
    if accepted != total:
        bench.error(f"batches: {total - accepted} of {total} jobs refused: {result['statuses']}")
    return result


async def drained(bench: Bench, ids: list[str], began: float) -> dict[str, Any]:
    """Wait until the stack's queue is empty and every batch job has ended in the ledger."""
    queue = bench.settings.queue_name
    progress = Progress("the stack's worker drains the batches", len(ids))
    deadline = time.monotonic() + bench.args.phase_timeout
    while await bench.arq.zcard(queue):
        progress.update(len(ids) - int(await bench.arq.zcard(queue)))
        if time.monotonic() > deadline:
            raise BenchError(f"batch jobs still queued after {bench.args.phase_timeout:.0f} s")
        await asyncio.sleep(0.01)
    while True:  # the last ones may still be running
        check = await bench.ledger_check(ids, "succeeded", record=False)
        if check["ok"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    took = time.perf_counter() - began
    if not check["ok"]:
        bench.error(f"batch jobs in the ledger: {check['rows_by_status']}, {len(ids)} expected")
    result = {
        "jobs": len(ids),
        "workers": 1,
        "seconds": round(took, 3),
        "jobs_per_s": round(len(ids) / took, 1),
        "ledger": check,
    }
    progress.finish(
        f"{result['jobs_per_s']:,.0f} jobs/s ({len(ids)} in {took:.2f} s); ledger "
        f"{check.get('ledger_jobs_per_s')} jobs/s"
    )
    return result
