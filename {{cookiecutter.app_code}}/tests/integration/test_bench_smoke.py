"""`make bench` works: a tiny run against the running stack writes a complete JSON report.

A smoke test, not a benchmark: it checks that every phase ran and that every job's ledger row
is right, never how fast anything was (timings on a shared machine are not test material).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PAUSES = {"local": "SIGSTOP/SIGCONT", "compose": "docker compose pause/unpause"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # `make bench`, as the README has it, with this interpreter (PYTHON=: no .venv needed).
    result = subprocess.run(
        [
            "make",
            "bench",
            f"PYTHON={sys.executable}",
            f"BENCH_ARGS=--quick --workers 2 --out {out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"make bench failed:\n{result.stdout}\n{result.stderr}"
    assert "results:" in result.stdout and "measurement" in result.stdout, result.stdout
    assert "target" not in result.stdout  # acceptance numbers belong to the issues, not here
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def test_the_report_names_the_machine_versions_and_settings(report: dict[str, Any]) -> None:
    assert report["run_id"].startswith("bench-")
    assert report["machine"]["cpu_count"] >= 1
    assert report["machine"]["python"]
    assert report["versions"]["arq"] and report["versions"]["psycopg"]
    assert report["servers"]["postgresql"] and report["servers"]["redis"]
    assert {"worker_poll_delay", "worker_max_jobs", "db_pool_max_size"} <= set(report["settings"])
    assert report["parameters"]["quick"] is True
    assert "errors" not in report, report.get("errors")


def test_every_phase_ran_and_every_job_has_its_ledger_row(report: dict[str, Any]) -> None:
    assert report["raw_enqueue"]["jobs_per_s"] > 0
    api = report["api"]
    assert api["accepted"] == api["requests"], api["statuses"]
    assert api["p50_ms"] is not None and api["p99_ms"] is not None
    # Paused the way `make up` ran the stack (compose: the worker service; natively: its pid),
    # and resumed: it ran every job, below.
    assert api["stack_worker_paused"] is True
    mode = (ROOT / ".local" / "mode").read_text().strip()
    assert api["stack_worker_pause"] == PAUSES[mode], (mode, api["stack_worker_pause"])
    if mode == "local":  # the API's own CPU time, read from its process
        assert api["cpu_ms_per_request"]["api"] is not None, api["cpu_ms_per_request"]
    assert api["stack_worker_ran_all"] is True
    assert api["ledger"]["ok"] is True
    shared = report["api_worker_running"]
    assert shared["accepted"] == shared["requests"] > 0, shared["statuses"]

    drains = report["drain"]
    assert set(drains) == {
        "noop_1_worker_ledger_on",
        "noop_2_workers_ledger_on",
        "noop_1_worker_ledger_off",
        "sleep_1_worker_ledger_on",
        "sleep_2_workers_ledger_on",
        "noop_1_worker_stock_arq",
        "noop_1_worker_stock_arq_ledger_off",
        "sleep_1_worker_stock_arq",
        "batch_jobs_stack_worker",
    }
    for name, drain in drains.items():
        assert drain["jobs_per_s"] > 0, name
        assert drain["ledger"]["ok"] is True, (name, drain["ledger"])
    assert drains["noop_1_worker_ledger_off"]["ledger"]["rows_by_status"] == {}
    assert drains["noop_1_worker_stock_arq_ledger_off"]["ledger"]["rows_by_status"] == {}
    assert drains["noop_1_worker_ledger_on"]["ledger"]["rows_by_status"] == {
        "succeeded": drains["noop_1_worker_ledger_on"]["jobs"]
    }

    latency = report["enqueue_to_start"]
    assert latency["ledger"]["ok"] is True
    assert latency["p50_ms"] is not None


def test_wrk_batches_and_submit_to_start_ran(report: dict[str, Any]) -> None:
    wrk = report["api_wrk"]
    assert "skipped" not in wrk, f"the wrk phase did not run: {wrk['skipped']}; install wrk"
    assert wrk["requests"] > 0 and wrk["accepted"] == wrk["requests"], wrk
    # Shape, not speed: wrk's percentiles are whole microseconds, shown in ms to two places, so
    # a tiny smoke run on an idle machine may round its p50 to 0.
    assert wrk["socket_errors"] == 0 and 0 <= wrk["p50_ms"] <= wrk["p99_ms"], wrk
    assert wrk["stack_worker_ran_all"] is True and wrk["ledger"]["ok"] is True

    batches = report["batches"]
    assert batches["accepted"] == batches["jobs"] == report["parameters"]["batch_jobs"]
    assert batches["statuses"] == {"202": batches["jobs"]}
    assert batches["batch_size"] == report["parameters"]["batch_size"]
    drained = report["drain"]["batch_jobs_stack_worker"]
    assert drained["ledger"]["rows_by_status"] == {"succeeded": batches["jobs"]}

    through_api = report["api_submit_to_start"]
    assert through_api["ledger"]["ok"] is True and through_api["p50_ms"] is not None
    mode = (ROOT / ".local" / "mode").read_text().strip()
    if mode == "local":  # the API's own CPU time, read from its process: measured, though a
        # quick run's few milliseconds may be below the kernel's 10 ms clock tick and read 0
        assert wrk["cpu_ms_per_request"]["api"] is not None, wrk["cpu_ms_per_request"]
        assert batches["cpu_ms_per_job"]["api"] is not None, batches["cpu_ms_per_job"]


def test_memory_is_reported(report: dict[str, Any]) -> None:
    memory = report["memory"]
    if report["machine"]["platform"].startswith("Linux"):
        assert memory["rss_at_start_bytes"] > 0 and memory["rss_at_end_bytes"] > 0
    assert memory["jobs_run"] > 0
    assert "targets" not in report
