"""The drain phases: raw enqueue, drains by bench workers, enqueue-to-start, the sweep.

Bench workers (bench/worker.py) run on queues of their own, so the stack's worker never takes
a bench job and the other way round. Each phase writes its figures into `bench.results`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from console import BenchError, Progress
from harness import Bench, Worker
from meters import ms, percentile

NOOP: dict[str, Any] = {}


async def raw_enqueue(bench: Bench) -> list[str]:
    """`enqueue_job` straight into arq (the floor of a submission); the jobs wait in a
    staging key for the first drain."""
    a = bench.args
    ids = bench.ids("raw", a.jobs)
    label = f"raw enqueue into arq ({a.concurrency} at a time)"
    took = await bench.enqueue(bench.queue("noop") + ":staging", ids, NOOP, label)
    bench.results["raw_enqueue"] = {
        "jobs": a.jobs,
        "concurrency": a.concurrency,
        "seconds": round(took, 3),
        "jobs_per_s": round(a.jobs / took, 1),
    }
    return ids


async def staged_drain(
    bench: Bench, key: str, label: str, queue: str, workers: list[Worker], count: int, **kw: Any
) -> dict[str, Any]:
    """Stage `count` jobs (params `kw`), drain them, check their ledger rows."""
    ids = bench.ids(key.replace("_", ""), count)
    await bench.enqueue(queue + ":staging", ids, kw)
    result = await bench.drain(label, queue, queue + ":staging", count, workers)
    ledger_on = "ledger_off" not in key
    result["ledger"] = await bench.ledger_check(ids, "succeeded" if ledger_on else None)
    bench.results.setdefault("drain", {})[key] = result
    return result


async def service_worker(bench: Bench, staged: list[str]) -> None:
    """No-op drains with the service's settings (one worker, then one per core), the
    enqueue-to-start latency, and the worker's memory."""
    a = bench.args
    drains = bench.results.setdefault("drain", {})
    q_on = bench.queue("noop")
    main = await bench.start_workers("service", 1, "--queue", q_on)
    service = main[0]
    memory: dict[str, Any] = {"pid_role": "the one-worker, service-settings bench worker"}
    bench.results["memory"] = memory
    memory["rss_at_start_bytes"] = bench.rss(service)
    bench.results["idle_cpu_percent_of_core"] = await bench.idle_cpu(main)
    label = "drain no-op, 1 worker, ledger on"
    drains["noop_1_worker_ledger_on"] = result = await bench.drain(
        label, q_on, q_on + ":staging", a.jobs, main
    )
    result["ledger"] = await bench.ledger_check(staged, "succeeded")
    memory["rss_after_first_drain_bytes"] = bench.rss(service)
    jobs_run = a.jobs

    await latency(bench, q_on)  # on the same, idle worker
    jobs_run += a.latency_jobs

    if a.workers > 1:
        more = await bench.start_workers("service", a.workers - 1, "--queue", q_on)
        key, n = f"noop_{a.workers}_workers_ledger_on", a.workers
        await staged_drain(
            bench, key, f"drain no-op, {n} workers, ledger on", q_on, main + more, a.jobs
        )
        await bench.stop_workers(more)
        jobs_run += a.jobs // a.workers

    if a.soak:
        jobs_run += await soak(bench, q_on, service, main, memory)
    memory["rss_at_end_bytes"] = bench.rss(service)
    memory["jobs_run"] = jobs_run
    await bench.stop_workers(main)


async def soak(
    bench: Bench, queue: str, service: Worker, workers: list[Worker], memory: dict[str, Any]
) -> int:
    """`--soak` more no-op jobs through one worker, its RSS sampled after each tenth."""
    total = bench.args.soak
    memory["soak_jobs"] = total
    samples: list[dict[str, int | None]] = []
    chunk = max(1000, total // 10)
    for start in range(0, total, chunk):
        ids = bench.ids(f"soak{start}", min(chunk, total - start))
        await bench.enqueue(queue + ":staging", ids, NOOP)
        label = f"soak {start + len(ids)}/{total}"
        await bench.drain(label, queue, queue + ":staging", len(ids), workers)
        samples.append({"jobs": start + len(ids), "rss_bytes": bench.rss(service)})
        check = await bench.ledger_check(ids, "succeeded")
        if not check["ok"]:
            memory["soak_ledger"] = check
    memory["soak_samples"] = samples
    return total


async def ledger_off(bench: Bench) -> None:
    """The same no-op jobs without the ledger wrapper, one worker: what the ledger costs."""
    q_off = bench.queue("noop-off")
    off = await bench.start_workers("ledger-off", 1, "--queue", q_off, "--ledger", "off")
    label = "drain no-op, 1 worker, ledger off"
    await staged_drain(bench, "noop_1_worker_ledger_off", label, q_off, off, bench.args.jobs)
    await bench.stop_workers(off)


async def sleep_jobs(bench: Bench) -> None:
    """Jobs that sleep `--sleep-ms`, max_jobs=`--sleep-max-jobs`: one worker, then one a core."""
    a = bench.args
    queue = bench.queue("sleep")
    argv = ("--queue", queue, "--max-jobs", str(a.sleep_max_jobs))
    first = await bench.start_workers("sleep", 1, *argv)
    workers = first
    for n in (1, a.workers) if a.workers > 1 else (1,):
        if n > 1:
            workers = first + await bench.start_workers("sleep", n - 1, *argv)
        plural = "s" if n > 1 else ""
        label = f"drain {a.sleep_ms} ms jobs, {n} worker{plural}, max_jobs={a.sleep_max_jobs}"
        key = f"sleep_{n}_worker{plural}_ledger_on"
        result = await staged_drain(
            bench, key, label, queue, workers, a.sleep_jobs, sleep_ms=a.sleep_ms
        )
        result["ideal_jobs_per_s"] = round(n * a.sleep_max_jobs * 1000 / a.sleep_ms, 1)
    await bench.stop_workers(workers)


async def stock_arq(bench: Bench) -> None:
    """arq as it comes (its stock settings): no-op and sleep jobs with the ledger, and no-op
    jobs without it (the plain-arq baseline)."""
    a = bench.args
    queue = bench.queue("stock")
    stock = await bench.start_workers("stock", 1, "--queue", queue, "--stock")
    bench.results["idle_cpu_percent_of_core_stock"] = await bench.idle_cpu(stock)
    label = "drain no-op, 1 worker, arq stock settings"
    await staged_drain(bench, "noop_1_worker_stock_arq", label, queue, stock, a.stock_jobs)
    label = f"drain {a.sleep_ms} ms jobs, 1 worker, arq stock settings"
    await staged_drain(
        bench,
        "sleep_1_worker_stock_arq",
        label,
        queue,
        stock,
        a.stock_sleep_jobs,
        sleep_ms=a.sleep_ms,
    )
    await bench.stop_workers(stock)

    queue = bench.queue("stock-off")
    argv = ("--queue", queue, "--stock", "--ledger", "off")
    stock = await bench.start_workers("stock-ledger-off", 1, *argv)
    label = "drain no-op, 1 worker, arq stock settings, ledger off"
    key = "noop_1_worker_stock_arq_ledger_off"
    await staged_drain(bench, key, label, queue, stock, a.stock_jobs)
    await bench.stop_workers(stock)


async def latency(bench: Bench, queue: str) -> None:
    """Jobs one at a time, `latency_rate` a second, on an idle worker: the ledger's
    started_at minus the enqueue time arq recorded."""
    a = bench.args
    ids = bench.ids("latency", a.latency_jobs)
    progress = Progress(f"enqueue-to-start at light load ({a.latency_rate:g} jobs/s)", len(ids))
    for n, job_id in enumerate(ids, 1):
        await bench.arq.enqueue_job(
            "noop", _job_id=job_id, _queue_name=queue, _expires=bench.settings.key_ttl_seconds
        )
        progress.update(n)
        await asyncio.sleep(1 / a.latency_rate)
    deadline = time.monotonic() + 30
    while await bench.arq.zcard(queue):
        if time.monotonic() > deadline:
            raise BenchError(f"latency jobs still queued after 30 s; see {bench.logs}")
        await asyncio.sleep(0.02)
    rows = await bench.rows(ids)
    waits = [(r["started_at"] - r["enqueued_at"]).total_seconds() for r in rows if r["started_at"]]
    result = {
        "jobs": len(ids),
        "rate_per_s": a.latency_rate,
        "p50_ms": ms(percentile(waits, 50)),
        "p95_ms": ms(percentile(waits, 95)),
        "p99_ms": ms(percentile(waits, 99)),
        "max_ms": ms(max(waits) if waits else None),
        "ledger": await bench.ledger_check(ids, "succeeded"),
    }
    bench.results["enqueue_to_start"] = result
    progress.finish(f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms")


async def sweep(bench: Bench) -> None:
    """Optional: one worker's drain rate (no-op or sleep jobs, --sweep-job) and idle CPU for
    each poll delay in --sweep-poll and each max_jobs in --sweep-max-jobs (the service's
    when not given)."""
    a, s = bench.args, bench.settings
    found: list[dict[str, Any]] = []
    sleeping = a.sweep_job == "sleep"
    job = f"{a.sleep_ms} ms jobs" if sleeping else "no-op"
    params = {"sleep_ms": a.sleep_ms} if sleeping else NOOP
    for delay in a.sweep_poll or [s.worker_poll_delay]:
        for max_jobs in a.sweep_max_jobs or [s.worker_max_jobs]:
            name = f"sweep{len(found)}-poll{delay:g}-max{max_jobs}"
            queue = bench.queue(name)
            argv = ("--queue", queue, "--poll-delay", str(delay), "--max-jobs", str(max_jobs))
            workers = await bench.start_workers(name, 1, *argv)
            idle = await bench.idle_cpu(workers, 3.0)
            ids = bench.ids(name, a.sleep_jobs if sleeping else a.jobs)
            await bench.enqueue(queue + ":staging", ids, params)
            label = f"poll_delay={delay:g}, max_jobs={max_jobs}: drain {job}"
            result = await bench.drain(label, queue, queue + ":staging", len(ids), workers)
            result.update(
                poll_delay=delay, max_jobs=max_jobs, job=job, idle_cpu_percent_of_core=idle
            )
            if sleeping:
                result["ideal_jobs_per_s"] = round(max_jobs * 1000 / a.sleep_ms, 1)
            result["ledger"] = await bench.ledger_check(ids, "succeeded")
            found.append(result)
            await bench.stop_workers(workers)
    bench.results["sweep"] = found
