"""How `make bench` pauses the stack's worker: the mechanism follows the mode `make up`
recorded (compose: `docker compose pause`/`unpause` of the worker service; natively: SIGSTOP
and SIGCONT of its pid), and the worker is resumed whatever happens in between.

A fake `docker` on PATH records what compose is asked; the signals go to a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import services  # noqa: E402  (bench/services.py)
from console import BenchError  # noqa: E402

FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$FAKE_DOCKER_CALLS"
exit "${FAKE_DOCKER_EXIT:-0}"
"""


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` first on PATH that records its arguments, one call a line."""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "docker"
    fake.write_text(FAKE_DOCKER)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_CALLS", str(calls))
    return calls


@pytest.mark.parametrize(
    ("mode", "pid", "kind"),
    [
        ("compose", None, services.ComposePause),
        ("compose", 4242, services.ComposePause),  # a native pid file left over: not used
        ("local", 4242, services.SignalPause),
        ("local", None, services.NoPause),  # the native stack without a running worker
        (None, None, services.NoPause),
    ],
)
def test_the_mechanism_follows_the_recorded_mode(
    mode: str | None, pid: int | None, kind: type
) -> None:
    pause = services.worker_pause(mode, "app", pid)
    assert isinstance(pause, kind)
    if isinstance(pause, services.ComposePause):
        assert pause.service == "app-worker"
    if isinstance(pause, services.SignalPause):
        assert pause.pid == pid


@pytest.mark.parametrize(
    ("text", "mode"),
    [("compose\n", "compose"), ("local\n", "local"), ("none\n", None), ("", None)],
)
def test_the_recorded_mode_is_read_from_the_stacks_mode_file(
    tmp_path: Path, text: str, mode: str | None
) -> None:
    (tmp_path / "mode").write_text(text)
    assert services.recorded_mode(tmp_path / "mode") == mode
    assert services.recorded_mode(tmp_path / "missing") is None
    (tmp_path / "link").symlink_to(tmp_path / "mode")
    assert services.recorded_mode(tmp_path / "link") is None  # a planted link is not a record


def test_compose_pauses_the_worker_service_and_unpauses_it_after_an_error(
    docker: Path, tmp_path: Path
) -> None:
    pause = services.worker_pause("compose", "app", None)
    with pytest.raises(RuntimeError, match="in the block"), services.paused(pause):
        assert docker.read_text() == "compose pause app-worker\n"
        raise RuntimeError("in the block")
    assert docker.read_text().splitlines() == [
        "compose pause app-worker",
        "compose unpause app-worker",
    ]


def test_a_failing_compose_says_which_command_and_what_to_check(
    docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "1")
    with pytest.raises(BenchError, match=r"`docker compose pause app-worker` failed.*make status"):
        services.ComposePause("app-worker").pause()


def test_the_native_worker_is_stopped_and_continued() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        process = psutil.Process(child.pid)
        with services.paused(services.worker_pause("local", "app", child.pid)):
            assert wait_for_status(process, psutil.STATUS_STOPPED)
        assert wait_for_status(process, psutil.STATUS_SLEEPING)
    finally:
        child.kill()
        child.wait()


def wait_for_status(process: psutil.Process, status: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if process.status() == status:
            return True
        time.sleep(0.01)
    return False
