"""deploy/local/stack.py's liveness check: a process that died is dead, reaped or not."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stack_liveness", ROOT / "deploy/local/stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_an_unreaped_process_is_a_zombie_and_a_running_one_is_not(stack: ModuleType) -> None:
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while not stack.zombie(exited.pid):  # exited, not yet reaped by us (its parent)
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.02)
        assert os.kill(exited.pid, 0) is None  # signals still reach it: kill(0) alone says alive
        assert not stack.zombie(running.pid)
        assert stack.alive(running.pid)
    finally:
        running.kill()
        running.wait()
        exited.wait()
    assert not stack.alive(exited.pid)
    assert not stack.zombie(os.getpid() + 10_000_000)  # no such process
