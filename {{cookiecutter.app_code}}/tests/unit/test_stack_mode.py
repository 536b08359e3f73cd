"""The Makefile's mode: what `make up` recorded in .local/mode drives `down`, `status`, `logs`,
`migrate` and `bootstrap`, whatever Docker says by then; STACK forces one; a Docker engine
without compose stops with one line. A fake `docker` on PATH plays the engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_COMPOSE = (
    "a Docker engine is running but it has no compose plugin: install docker-compose-plugin "
    "(or the compose v2 binary), or run with STACK=local for the native stack"
)
FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$FAKE_DOCKER_CALLS"
case "$1 $2" in
  "info "*) exit "$FAKE_DOCKER_INFO";;
  "compose version") [ "$FAKE_COMPOSE" = 0 ] && exit 0
    echo "docker: unknown command: docker compose" >&2; exit 125;;
esac
exit 0
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile alone in a folder, with a `.env` (make up needs one) and a fake docker."""
    (tmp_path / "project").mkdir()
    shutil.copy(ROOT / "Makefile", tmp_path / "project/Makefile")
    (tmp_path / "project/.env").write_text("")
    (tmp_path / "bin").mkdir()
    docker = tmp_path / "bin/docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    return tmp_path / "project"


def record(project: Path, mode: str) -> None:
    (project / ".local").mkdir(mode=0o700, exist_ok=True)
    (project / ".local/mode").write_text(f"{mode}\n")


def make(
    project: Path, *args: str, engine: bool = True, compose: bool = True
) -> subprocess.CompletedProcess[str]:
    """`make ARGS` with the fake docker: `docker info` answers when `engine`, `docker compose
    version` when `compose`. Nothing of the caller's make (MAKEFLAGS, STACK) leaks in."""
    leaks = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "STACK")
    env = {k: v for k, v in os.environ.items() if k not in leaks}
    env.update(
        PATH=f"{project.parent / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        FAKE_DOCKER_CALLS=str(project.parent / "calls"),
        FAKE_DOCKER_INFO="0" if engine else "1",
        FAKE_COMPOSE="0" if compose else "1",
    )
    argv = ["make", "--no-print-directory", *args, f"PYTHON={sys.executable}"]
    return subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=60)


def docker_calls(project: Path) -> list[str]:
    calls = project.parent / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("target", ["down", "status", "migrate", "bootstrap"])
def test_a_recorded_local_stack_stays_local_when_a_docker_engine_appears(
    project: Path, target: str
) -> None:
    record(project, "local")
    done = make(project, "-n", target)
    assert done.returncode == 0, done.stderr
    assert f"deploy/local/stack.py {target}" in done.stdout
    assert "docker" not in done.stdout
    assert docker_calls(project) == []  # the record is enough: no detection


def test_logs_follow_the_recorded_mode(project: Path) -> None:
    record(project, "local")
    assert "tail -n 50 -F .local/logs/" in make(project, "-n", "logs").stdout
    record(project, "compose")
    assert "docker compose logs --follow" in make(project, "-n", "logs", engine=False).stdout


def test_a_recorded_compose_stack_is_brought_down_by_compose(project: Path) -> None:
    record(project, "compose")
    done = make(project, "-n", "down", engine=False)
    assert done.returncode == 0, done.stderr
    assert "docker compose down --volumes --remove-orphans" in done.stdout
    assert "stack.py mode none" in done.stdout  # and the record goes with it
    assert "stack.py down" not in done.stdout


def test_without_a_record_up_detects_and_records(project: Path) -> None:
    done = make(project, "-n", "up")
    assert "stack.py mode compose" in done.stdout, done.stderr
    assert "docker compose up --detach --build --wait" in done.stdout
    assert docker_calls(project) == ["info", "compose version"]
    local = make(project, "-n", "up", engine=False)
    assert "deploy/local/stack.py up" in local.stdout and "docker compose" not in local.stdout


def test_stack_forces_a_mode(project: Path) -> None:
    record(project, "compose")
    done = make(project, "-n", "down", "STACK=local")
    assert "deploy/local/stack.py down" in done.stdout and "docker" not in done.stdout
    bad = make(project, "down", "STACK=podman")
    assert bad.returncode != 0
    assert "STACK=podman: use STACK=compose or STACK=local" in bad.stderr


def test_the_older_docker_switch_still_forces_a_mode(project: Path) -> None:
    done = make(project, "-n", "up", "DOCKER=")  # the rendered CI's `make up DOCKER=`
    assert "deploy/local/stack.py up" in done.stdout and "docker" not in done.stdout
    assert "docker compose up" in make(project, "-n", "up", "DOCKER=yes", engine=False).stdout
    assert docker_calls(project) == []


@pytest.mark.parametrize("target", ["up", "down", "status"])
def test_a_docker_engine_without_compose_gets_one_line(project: Path, target: str) -> None:
    done = make(project, target, compose=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and NO_COMPOSE in lines[0], done.stderr
    assert "unknown command" not in done.stderr + done.stdout
    assert done.stdout == ""
    assert "compose up" not in " ".join(docker_calls(project))


def test_targets_without_a_stack_run_no_docker_command(project: Path) -> None:
    for target in ("test", "test-unit", "lint", "help"):
        make(project, "-n", target) if target != "help" else None
    assert docker_calls(project) == []
    shown = make(project, "help", compose=False).stdout  # help says what `up` would do
    assert "a Docker engine without compose" in shown.splitlines()[0]
