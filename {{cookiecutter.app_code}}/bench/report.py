"""What a run records beside its figures (machine, versions, settings, servers) and the table
it prints. The JSON report holds everything; the table is the summary a person reads."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from typing import Any

import psutil
import psycopg
from harness import Bench
from services import stack_pid

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Role

DISTRIBUTIONS = (
    "arq",
    "redis",
    "hiredis",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "httpx",
    "orjson",
)


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": psutil.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_model": platform.processor() or platform.machine(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["libpq"] = str(psycopg.pq.version())
    return found


def service_settings(settings: Settings, mode: str | None) -> dict[str, Any]:
    argv = None
    api = stack_pid("api", mode)
    if api:
        try:
            argv = psutil.Process(api).cmdline()[1:]
        except psutil.Error:
            argv = None
    return {
        "worker_poll_delay": settings.worker_poll_delay,
        "worker_max_jobs": settings.worker_max_jobs,
        "worker_job_timeout": settings.worker_job_timeout,
        "db_pool_min_size": settings.db_pool_min_size,
        "db_pool_max_size": settings.db_pool_max_size,
        "key_ttl_seconds": settings.key_ttl_seconds,
        "api_process_argv": argv,
        "stack": {"local": "local processes", "compose": "compose"}.get(mode or "", "other"),
    }


async def servers(bench: Bench) -> dict[str, Any]:
    info = await bench.arq.info("server")
    async with bench.database[Role.ADMIN].connection() as conn:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
        cur = await conn.execute("SHOW synchronous_commit")
        sync = await cur.fetchone()
    return {
        "redis": info.get("redis_version"),
        "postgresql": row["server_version"] if row else None,
        "postgresql_synchronous_commit": sync["synchronous_commit"] if sync else None,
    }


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


Row = tuple[str, str, str, str, str, str]


def row(name: str, jobs: Any, rate: Any, latency: str = "", cpu: str = "", note: str = "") -> Row:
    """One line of the table: counts and rates formatted the same way everywhere."""
    return (name, fmt(jobs), "" if rate is None else fmt(rate, "/s"), latency, cpu, note)


def submission_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    raw = results.get("raw_enqueue")
    if raw:
        note = f"concurrency {raw['concurrency']}"
        rows.append(row("raw enqueue into arq", raw["jobs"], raw["jobs_per_s"], note=note))
    for key, name in (("api", "API alone"), ("api_worker_running", "API beside the worker")):
        api = results.get(key)
        if api:
            latency = (
                f"p50 {fmt(api['p50_ms'])} / p95 {fmt(api['p95_ms'])} / p99 {fmt(api['p99_ms'])} ms"
            )
            cpu = api.get("cpu_ms_per_request", {}).get("api")
            note = (
                f"{fmt(api['ratio_to_raw_enqueue'])}x of raw enqueue; API CPU {fmt(cpu)} ms/request"
            )
            label = f"{name}: POST /api/v1/jobs"
            rows.append(row(label, api["requests"], api["accepted_per_s"], latency, note=note))
    wrk = results.get("api_wrk", {})
    if wrk.get("requests"):
        latency = f"p50 {fmt(wrk['p50_ms'])} / p99 {fmt(wrk['p99_ms'])} ms"
        note = f"wrk, 1 thread; API CPU {fmt(wrk['cpu_ms_per_request'].get('api'))} ms/request"
        label = "API alone, wrk: POST /api/v1/jobs"
        rows.append(row(label, wrk["requests"], wrk["accepted_per_s"], latency, note=note))
    batch = results.get("batches")
    if batch:
        latency = f"p50 {fmt(batch['batch_p50_ms'])} / p99 {fmt(batch['batch_p99_ms'])} ms a batch"
        cpu = batch["cpu_ms_per_job"].get("api")
        size, flight = batch["batch_size"], batch["in_flight"]
        note = f"{size} a batch, {flight} in flight; API CPU {fmt(cpu)} ms/job"
        label = "API alone: POST /api/v1/batches"
        rows.append(row(label, batch["jobs"], batch["accepted_per_s"], latency, note=note))
    return rows


def drain_rows(results: dict[str, Any]) -> list[Row]:
    drains = results.get("drain", {})
    stock = max(
        (
            drains.get(n, {}).get("jobs_per_s") or 0
            for n in ("noop_1_worker_stock_arq", "noop_1_worker_stock_arq_ledger_off")
        ),
        default=0,
    )
    stock_sleep = drains.get("sleep_1_worker_stock_arq", {}).get("jobs_per_s")
    rows: list[Row] = []
    for name, drain in drains.items():
        note = []
        base = stock_sleep if name.startswith("sleep") else stock
        if base and "stock" not in name:
            note.append(f"{drain['jobs_per_s'] / base:.2f}x stock")
        if drain.get("ideal_jobs_per_s"):
            note.append(f"{drain['jobs_per_s'] / drain['ideal_jobs_per_s']:.0%} of ideal")
        if drain.get("ledger") and not drain["ledger"]["ok"]:
            note.append("LEDGER WRONG")
        cpu = fmt(drain.get("cpu_ms_per_job", {}).get("workers"), " ms")
        label = "drain " + name.replace("_", " ")
        rows.append(row(label, drain["jobs"], drain["jobs_per_s"], cpu=cpu, note=", ".join(note)))
    for sweep in results.get("sweep", []):
        idle = f"idle CPU {fmt(sweep['idle_cpu_percent_of_core'])}% of a core"
        cpu = fmt(sweep["cpu_ms_per_job"]["workers"], " ms")
        name = f"poll_delay={sweep['poll_delay']:g}, max_jobs={sweep['max_jobs']}"
        rows.append(row(name, sweep["jobs"], sweep["jobs_per_s"], cpu=cpu, note=idle))
    return rows


def worker_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, name, note in (
        ("enqueue_to_start", "enqueue-to-start, light load", "ledger started_at - enqueue time"),
        (
            "api_submit_to_start",
            "submit-to-start, light load",
            "through the API: ledger started_at - enqueued_at",
        ),
    ):
        latency = results.get(key)
        if latency:
            span = f"p50 {fmt(latency['p50_ms'])} / p95 {fmt(latency['p95_ms'])} ms"
            rows.append(row(name, latency["jobs"], latency["rate_per_s"], span, note=note))
    memory = results.get("memory", {})
    if memory.get("rss_at_start_bytes"):
        mib = {k: v / 2**20 for k, v in memory.items() if k.endswith("_bytes") and v}
        steps = " -> ".join(
            f"{mib.get(k, 0):.1f}"
            for k in ("rss_at_start_bytes", "rss_after_first_drain_bytes", "rss_at_end_bytes")
        )
        note = "start -> after first drain -> end"
        rows.append(row("worker RSS", memory.get("jobs_run"), None, f"{steps} MiB", note=note))
    idle = results.get("idle_cpu_percent_of_core")
    if idle is not None:
        stock = results.get("idle_cpu_percent_of_core_stock")
        note = f"{idle}% of a core (stock arq: {stock}%)"
        rows.append(row("idle worker CPU", "", None, note=note))
    return rows


def table(results: dict[str, Any]) -> str:
    """The figures as aligned columns."""
    header: Row = ("measurement", "jobs", "rate", "latency", "worker CPU/job", "note")
    rows = [header, *submission_rows(results), *drain_rows(results), *worker_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
