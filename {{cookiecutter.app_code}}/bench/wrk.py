"""Single submissions driven by wrk, a load generator in C that costs little CPU, beside the
Python client's figure: POST /api/v1/jobs with `--concurrency` connections on one wrk thread.

A Lua script gives every request a new job id (`bench-<run>-wrk-<n>`) and reports the
percentiles as one JSON line. The token reaches wrk through a 0600 file in the bench's private
folder, never a command line or an environment. wrk is installed with apt-get when missing
(as root); without it the phase says why and is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from console import BenchError, say
from harness import Bench
from services import NoPause, paused, stack_pid, worker_pause
from submissions import api_meter, wait_for_stack_worker

SCRIPT = """
local token = io.open(os.getenv("BENCH_WRK_DIR") .. "/token"):read("*l")
local prefix = io.open(os.getenv("BENCH_WRK_DIR") .. "/prefix"):read("*l")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
request = function()
  n = n + 1
  local body = '{"job_id":"' .. prefix .. n .. '","function":"noop","params":{}}'
  return wrk.format(nil, "/api/v1/jobs", nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def find_wrk() -> tuple[str | None, str]:
    """wrk's path, installing it with apt-get if it is missing and this runs as root."""
    found = shutil.which("wrk")
    if found:
        return found, "found"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "wrk is not installed (apt-get install wrk, brew install wrk)"
    say("installing wrk (apt-get install -y wrk) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:  # a new machine has no package lists yet: fetch them once
        say("apt-get install wrk failed; running apt-get update and trying again ...")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env)
        result = subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, text=True, env=env
        )
    if result.returncode != 0:
        return None, f"apt-get install wrk failed: {result.stderr.strip()[-300:]}"
    return shutil.which("wrk"), "installed with apt-get"


async def wrk(bench: Bench) -> None:
    a, s = bench.args, bench.settings
    path, how = find_wrk()
    if path is None:
        say(f"wrk phase skipped: {how}")
        bench.results["api_wrk"] = {"skipped": how}
        return
    folder = bench.logs / "wrk"
    folder.mkdir(mode=0o700)
    (folder / "script.lua").write_text(SCRIPT)
    token = folder / "token"
    token.touch(mode=0o600)
    token.write_text(s.api_token.get_secret_value() + "\n")
    prefix = f"{bench.run_id}-wrk-"
    (folder / "prefix").write_text(prefix + "\n")
    pause = worker_pause(bench.mode, s.app_code, stack_pid("worker", bench.mode))
    argv = [
        path,
        "-t1",
        f"-c{a.concurrency}",
        f"-d{a.wrk_seconds}s",
        "-s",
        str(folder / "script.lua"),
    ]
    argv.append(f"http://127.0.0.1:{s.api_port}")
    say(f"API POST /api/v1/jobs with wrk, {a.concurrency} connections, {a.wrk_seconds} s ...")
    with paused(pause):
        meter = api_meter(bench)
        result = run_wrk(argv, folder)
        result["cpu_ms_per_request"] = meter.per_job_ms(result["requests"])
    token.unlink()
    result.update(wrk=how, stack_worker_paused=not isinstance(pause, NoPause))
    bench.results["api_wrk"] = result
    say(
        f"  wrk: {result['accepted_per_s']:,.0f} accepted/s, p50 {result['p50_ms']} ms, p99 "
        f"{result['p99_ms']} ms, API CPU {result['cpu_ms_per_request']['api']} ms a request"
    )
    # wrk counts the answers it read; requests in flight when it stopped commit too: wait until
    # the API has answered them all (the count holds still).
    count, rows = -1, await bench.rows_by_prefix(prefix)
    while len(rows) != count:
        count = len(rows)
        await asyncio.sleep(0.5)
        rows = await bench.rows_by_prefix(prefix)
    accepted = [row["job_id"] for row in rows]
    result["ledger_rows"] = len(accepted)
    bench.job_ids.extend(accepted)
    await wait_for_stack_worker(bench, result, [accepted])


def run_wrk(argv: list[str], folder: Path) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", ""), "BENCH_WRK_DIR": str(folder)}
    begin = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    took = time.perf_counter() - begin
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(
            f"wrk failed ({done.returncode}): {done.stderr[-500:] or done.stdout[-500:]}"
        )
    raw = json.loads(line[4:])
    seconds = raw["duration_us"] / 1e6
    accepted = raw["requests"] - raw["non_2xx"]
    return {
        "requests": raw["requests"],
        "connections": int(argv[2][2:]),
        "seconds": round(seconds, 3),
        "wall_seconds": round(took, 3),
        "accepted": accepted,
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["socket_errors"],
        "accepted_per_s": round(accepted / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
    }
