"""The generated stack for real: `make up` without Docker, the project's own suite, `make down`.

The defaults project is made as a user keeping it current would: `cruft create` from an older
commit of the template, a local change, then `cruft update` to this template, so its suites
also prove that an updated project works.

Each bake starts a project-local PostgreSQL and Redis plus the worker and the API as local
processes under supervisord (`make up STACK=local`, whether a Docker engine runs or not; the
compose stack is test_compose.py's), checks that a killed worker is
restarted by supervisord, runs `make test` against them (and, for the
defaults, `make test-reliability`: faults, bad input, security), and checks that `make down`
leaves nothing running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    PROJECT_TEMPLATE,
    bake,
    clean_env,
    commit_all,
    copy_template,
    cruft_project,
    git,
    readme_block,
    run,
)
from options import STACK_OPTION_SETS


def make(
    project: Path,
    python: str,
    *args: str,
    timeout: float = 600,
    path: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`make ARGS`; `path`: a folder put first on PATH (a fake docker); `extra_env`: more."""
    env = clean_env(**(extra_env or {}))
    if path is not None:
        env["PATH"] = f"{path}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["make", *args, f"PYTHON={python}"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    print(f"$ make {' '.join(args)}  (exit {done.returncode})\n{done.stdout}{done.stderr}")
    return done


def logs(project: Path) -> str:
    out = []
    for log in sorted((project / ".local" / "logs").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-30:]
        out.append(f"--- {log.name}\n" + "\n".join(lines))
    return "\n".join(out)


def status_row(out: str, name: str) -> dict[str, str]:
    """One line of the native `make status`: service, state, pid, uptime, restarts, where."""
    found = re.search(rf"^ +{name} +(\S+(?: \S+)?) +(\d+|-) +(\S+) +(\d+|-) ", out, re.M)
    keys = ("state", "pid", "uptime", "restarts")
    return dict(zip(keys, found.groups(), strict=True)) if found else {"missing": out}


def assert_supervisord_restarts_the_worker(project: Path, python: str) -> None:
    """SIGKILL the stack's worker: a new pid within seconds, and `make status` counts 1 restart."""
    worker_pid = status_row(make(project, python, "status").stdout, "worker")["pid"]
    os.kill(int(worker_pid), signal.SIGKILL)
    deadline = time.monotonic() + 20
    row: dict[str, str] = {}
    while time.monotonic() < deadline:
        row = status_row(make(project, python, "status").stdout, "worker")
        restarted = row.get("pid") != worker_pid and row.get("restarts") not in (None, "0")
        if row.get("state") == "running" and restarted:
            break
        time.sleep(0.5)
    assert row.get("state") == "running", f"supervisord did not restart the worker: {row}"
    assert row["pid"] not in (worker_pid, "-") and row["restarts"] == "1", row
    assert status_row(make(project, python, "status").stdout, "api")["restarts"] == "0"


def docker_engine(folder: Path) -> Path:
    """A fake `docker` whose engine and compose plugin answer, and which logs its calls."""
    folder.mkdir()
    docker = folder / "docker"
    docker.write_text(f'#!/bin/sh\necho "$*" >> "{folder / "calls"}"\nexit 0\n')
    docker.chmod(0o755)
    return folder


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(*needles: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


def updated_project(tmp_path: Path, tool) -> Path:
    """A project cruft created from an older commit of the template (its README differs), with
    a committed local change, then `cruft update -y` to this template's files."""
    template = copy_template(tmp_path / "template")
    readme = template / PROJECT_TEMPLATE / "README.md"
    current = readme.read_text(encoding="utf-8")
    readme.write_text(current.replace("\n## Tests\n", "\n## Tests (older)\n", 1), encoding="utf-8")
    git(template, "init", "-q")
    commit_all(template, "older")
    project = cruft_project(template, tmp_path / "out", tool)
    with (project / "README.md").open("a", encoding="utf-8") as ours:
        ours.write("\nOur own notes.\n")
    commit_all(project, "our notes")
    readme.write_text(current, encoding="utf-8")
    head = commit_all(template, "current")

    done = run([tool("cruft"), "update", "-y"], project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((project / ".cruft.json").read_text())["commit"] == head
    text = (project / "README.md").read_text(encoding="utf-8")
    assert "\n## Tests\n" in text and "Our own notes." in text
    return project


def ports_of(context: dict[str, str]) -> list[int]:
    """The three host ports a bake with these answers listens on."""
    defaults = (("api_host_port", "8080"), ("db_host_port", "5431"), ("redis_host_port", "6378"))
    return [int(context.get(key, default)) for key, default in defaults]


def start(project: Path, python: str) -> Path:
    """`make up`, its records, and supervisord restarting a killed worker; PostgreSQL's home."""
    # STACK=local: a Docker engine may be running (test_compose.py starts one), and then
    # `make up` alone would choose compose.
    up = make(project, python, "up", "STACK=local", timeout=300)
    assert up.returncode == 0, logs(project)
    assert "stack is up" in up.stdout
    pg_home = Path((project / ".local/run/postgres.home").read_text())
    assert (project / ".local/mode").read_text() == "local\n"  # what `down` will follow
    for name in ("postgres", "redis", "supervisord"):  # pid and identity
        assert len((project / f".local/run/{name}.pid").read_text().split()) == 2, name

    assert make(project, python, "status").returncode == 0

    # A worker that dies is started again by supervisord, by itself and with a new pid, and
    # `make status` counts the restart; `make up` then finds everything running.
    assert_supervisord_restarts_the_worker(project, python)
    again = make(project, python, "up", "STACK=local", timeout=300)
    assert again.returncode == 0, logs(project)
    assert "worker: running" in again.stdout and "worker: starting" not in again.stdout
    assert "api: running" in again.stdout and "postgres: running" in again.stdout
    return pg_home


def run_suites(project: Path, python: str, reliability: bool) -> None:
    """`make test`, the README's "submit a job" lines, and `make test-reliability`."""
    suite = make(project, python, "test", "PYTEST_ARGS=-q -p no:cacheprovider", timeout=900)
    assert suite.returncode == 0, f"the project's own suite failed:\n{logs(project)}"
    assert " passed" in suite.stdout and " failed" not in suite.stdout
    assert " skipped" not in suite.stdout, "the suite skipped tests: every test must run here"

    # The README's own "submit a job" commands, run as a reader would paste them.
    block = readme_block(project, "TOKEN=")
    pasted = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block + "\nsleep 1\n" + block.splitlines()[-1]],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert pasted.returncode == 0, pasted.stderr
    assert '"status":"succeeded"' in pasted.stdout, pasted.stdout

    if reliability:  # the fault, bad-input and security suite
        done = make(
            project,
            python,
            "test-reliability",
            "PYTEST_ARGS=-q -p no:cacheprovider",
            timeout=1800,  # outages of 2 and 3 minutes among them
        )
        assert done.returncode == 0, f"make test-reliability failed:\n{logs(project)}"
        assert " passed" in done.stdout and " failed" not in done.stdout
        assert " skipped" not in done.stdout


def stop(
    project: Path, python: str, tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`make down` with a Docker engine that started since `make up`: the recorded mode
    (local) must win. Returns the result and the fake engine's folder."""
    engine = docker_engine(tmp_path / "docker-engine")
    return make(project, python, "down", timeout=120, path=engine), engine


def assert_nothing_is_left(project: Path, app: str, ports: list[int], pg_home: Path | None) -> None:
    """No server listening, no process of the project, no runtime folder."""
    time.sleep(0.5)
    assert [p for p in ports if listening(p)] == [], "make down left a server listening"
    leftovers = processes_mentioning(
        str(project), f"{app}.worker", f"{app}.api.main", *([str(pg_home)] if pg_home else [])
    )
    assert leftovers == [], f"make down left processes running: {leftovers}"
    assert not (project / ".local").exists()
    assert pg_home is None or not pg_home.exists()


@pytest.mark.parametrize(
    "context", [c for _, c in STACK_OPTION_SETS], ids=[i for i, _ in STACK_OPTION_SETS]
)
def test_make_up_test_down_without_docker(
    cookies, context: dict[str, str], project_python: str, tmp_path: Path, tool
) -> None:
    project = bake(cookies, context) if context else updated_project(tmp_path, tool)
    app = context.get("app_code", "aserv")
    ports = ports_of(context)
    busy = [p for p in ports if listening(p)]
    assert not busy, f"ports {busy} are already taken on this machine: free them and rerun"

    pg_home = None
    try:
        pg_home = start(project, project_python)
        run_suites(project, project_python, reliability=not context)
    finally:
        down, engine = stop(project, project_python, tmp_path)
    assert down.returncode == 0
    assert "stack is down" in down.stdout
    assert not (engine / "calls").exists(), (engine / "calls").read_text()
    assert_nothing_is_left(project, app, ports, pg_home)
