"""The API phases: POST /api/v1/jobs over HTTP, and the stack's worker running those jobs.

First the API alone (the stack's worker paused, as on a host of its own), then beside the
running worker. On a 2-core machine the stack's worker, running the submitted jobs as they
come, takes CPU the API would use; paused, it runs them once it is resumed. Both are reported.
How the worker is paused depends on how `make up` ran the stack (services.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
from console import Progress
from harness import Bench
from meters import CpuMeter, ms, percentile, with_children
from services import NoPause, paused, stack_pid, worker_pause


async def api(bench: Bench) -> None:
    """Submissions with the stack's worker paused, then beside it; then wait for it to run
    every accepted job."""
    a, s = bench.args, bench.settings
    ids = bench.ids("api", a.warmup + a.api_jobs)
    pause = worker_pause(bench.mode, s.app_code, stack_pid("worker", bench.mode))
    with paused(pause):
        result, accepted = await measure(bench, ids, "the API alone, stack worker paused")
    result["stack_worker_paused"] = not isinstance(pause, NoPause)
    result["stack_worker_pause"] = pause.how
    bench.results["api"] = result
    ids = bench.ids("apiw", a.warmup + a.api_jobs // 2)
    shared, more = await measure(bench, ids, "beside the running stack worker")
    bench.results["api_worker_running"] = shared
    raw = bench.results.get("raw_enqueue", {}).get("jobs_per_s")
    for r in (result, shared):
        r["ratio_to_raw_enqueue"] = round(r["accepted_per_s"] / raw, 3) if raw else None
    await wait_for_stack_worker(bench, result, [accepted, more])


async def clients(
    bench: Bench, stack: contextlib.AsyncExitStack, count: int | None = None, wait: float = 30
) -> list[httpx.AsyncClient]:
    """One httpx.AsyncClient per connection: one client with a pool of 32 costs the bench 2-3
    times the CPU per request (httpcore's pool bookkeeping), CPU the API needs more."""
    s = bench.settings
    headers = {"Authorization": f"Bearer {s.api_token.get_secret_value()}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    url = f"http://127.0.0.1:{s.api_port}"
    return [
        await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=wait)
        )
        for _ in range(count or bench.args.concurrency)
    ]


async def measure(bench: Bench, ids: list[str], label: str) -> tuple[dict[str, Any], list[str]]:
    """POST each id as a noop job, `concurrency` at a time: the warm-up first, unmeasured."""
    a = bench.args
    warmup, measured = ids[: a.warmup], ids[a.warmup :]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted_ids: list[str] = []

    async def post(client: httpx.AsyncClient, job_id: str) -> None:
        begin = time.perf_counter()
        response = await client.post(
            "/api/v1/jobs", json={"job_id": job_id, "function": "noop", "params": {}}
        )
        took = time.perf_counter() - begin
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code == 202:
            latencies.append(took)
            accepted_ids.append(job_id)

    async def run(
        pool: list[httpx.AsyncClient], batch: list[str], progress: Progress | None
    ) -> float:
        pending = iter(batch)

        async def sender(client: httpx.AsyncClient) -> None:
            for job_id in pending:
                await post(client, job_id)
                if progress and sum(statuses.values()) % 100 == 0:
                    progress.update(sum(statuses.values()))

        start = time.perf_counter()
        await asyncio.gather(*(sender(client) for client in pool))
        return time.perf_counter() - start

    async with contextlib.AsyncExitStack() as stack:
        pool = await clients(bench, stack)
        await run(pool, warmup, None)
        latencies.clear()
        statuses.clear()
        meter = api_meter(bench)
        title = f"API POST /api/v1/jobs, {a.concurrency} at a time, {label}"
        progress = Progress(title, len(measured))
        took = await run(pool, measured, progress)
    result = summary(a.concurrency, len(measured), took, statuses, latencies)
    result["cpu_ms_per_request"] = meter.per_job_ms(len(measured))
    accepted = statuses.get(202, 0)
    progress.finish(
        f"{result['accepted_per_s']:,.0f} accepted/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms"
        + ("" if accepted == len(measured) else f" (statuses: {result['statuses']})")
    )
    return result, accepted_ids


def api_meter(bench: Bench) -> CpuMeter:
    """CPU of the API process (with its children: WEB_CONCURRENCY > 1), the stack's worker,
    Redis and PostgreSQL: native stack only."""
    mode = bench.mode
    return CpuMeter.of(
        api=with_children(stack_pid("api", mode)),
        stack_worker=with_children(stack_pid("worker", mode)),
        redis=with_children(stack_pid("redis", mode))[:1],
        postgres=with_children(stack_pid("postgres", mode)),
    )


def acceptance(took: float, statuses: dict[int, int]) -> dict[str, Any]:
    """What every submission phase reports: how long, how many of each answer, accepted/s."""
    accepted = statuses.get(202, 0)
    return {
        "seconds": round(took, 3),
        "accepted": accepted,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted_per_s": round(accepted / took, 1),
    }


def summary(
    concurrency: int, requests: int, took: float, statuses: dict[int, int], latencies: list[float]
) -> dict[str, Any]:
    return {
        "requests": requests,
        "concurrency": concurrency,
        **acceptance(took, statuses),
        "p50_ms": ms(percentile(latencies, 50)),
        "p95_ms": ms(percentile(latencies, 95)),
        "p99_ms": ms(percentile(latencies, 99)),
    }


async def wait_for_stack_worker(
    bench: Bench, result: dict[str, Any], groups: list[list[str]]
) -> None:
    """The stack's own worker runs the API's jobs (`groups`: a phase's accepted ids each);
    wait, so that it does not share the CPU with the phases that follow (and so that the
    clean-up finds them finished)."""
    groups = [ids for ids in groups if ids]
    total = sum(len(ids) for ids in groups)
    progress = Progress("the stack's worker runs the API's jobs", total)
    deadline = time.monotonic() + bench.args.phase_timeout
    begin, done = time.perf_counter(), 0
    while time.monotonic() < deadline:
        done = 0
        for ids in groups:
            rows = await bench.rows(ids)
            done += sum(1 for r in rows if r["status"] in ("succeeded", "failed"))
        progress.update(done)
        if done >= total:
            break
        await asyncio.sleep(0.1)
    finished = done >= total
    result["stack_worker_ran_all"] = finished
    if finished and total:
        checks = [await bench.ledger_check(ids, "succeeded") for ids in groups]
        result["ledger"] = {"ok": all(c["ok"] for c in checks), "phases": checks}
        progress.finish(f"done in {time.perf_counter() - begin:.1f} s")
    else:
        progress.finish(f"{done} of {total} ran: is the stack's worker up?")
        bench.error("the stack's worker did not run the API's jobs: `make status`, `make logs`")


async def api_latency(bench: Bench) -> None:
    """Submit-to-start through the API at light load: one POST at a time, `latency_rate` a
    second, the stack's worker idle; the ledger's started_at minus its enqueued_at (the
    commit), so it includes the API's hand-over to Redis after the answer."""
    a = bench.args
    ids = bench.ids("apilatency", a.latency_jobs)
    title = f"API submit-to-start at light load ({a.latency_rate:g} jobs/s)"
    progress = Progress(title, len(ids))
    async with contextlib.AsyncExitStack() as stack:
        (client,) = await clients(bench, stack, 1)
        for n, job_id in enumerate(ids, 1):
            body = {"job_id": job_id, "function": "noop", "params": {}}
            response = await client.post("/api/v1/jobs", json=body)
            if response.status_code != 202:
                bench.error(f"API latency: {job_id} answered {response.status_code}")
            progress.update(n)
            await asyncio.sleep(1 / a.latency_rate)
    result: dict[str, Any] = {"jobs": len(ids), "rate_per_s": a.latency_rate}
    await wait_for_stack_worker(bench, result, [ids])
    rows = await bench.rows(ids)
    waits = [(r["started_at"] - r["enqueued_at"]).total_seconds() for r in rows if r["started_at"]]
    for q in (50, 95, 99):
        result[f"p{q}_ms"] = ms(percentile(waits, q))
    bench.results["api_submit_to_start"] = result
    progress.finish(f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms")
