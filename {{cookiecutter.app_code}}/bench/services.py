"""The stack under test: how `make up` ran it, its processes, and pausing its worker.

`make up` records its mode in `.local/mode` (the native stack's MODE_FILE):

- `local` (deploy/local/stack.py): the worker and the API run under supervisord, PostgreSQL
  and Redis from pid files; the bench reads their pids through the stack's own `read_pid`,
  meters their CPU and pauses the worker with SIGSTOP / SIGCONT;
- `compose`: the processes live in containers; the bench pauses the worker service with
  `docker compose pause` / `unpause` (every replica of it) and has no pids to meter;
- no record: nothing to pause, nothing to meter (a stack the bench did not find).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from console import BenchError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "local"))

import stack as native  # noqa: E402  (deploy/local/stack.py)

COMPOSE = ("docker", "compose")


def recorded_mode(mode_file: Path = native.MODE_FILE) -> str | None:
    """`compose` or `local` as `make up` recorded it, or None (no record, or not ours)."""
    with contextlib.suppress(OSError):
        if not mode_file.is_symlink():
            mode = mode_file.read_text()[:16].strip()
            return mode if mode in native.MODES else None
    return None


def stack_pid(name: str, mode: str | None) -> int | None:
    """The pid of the native stack's `name` (postgres, redis, worker, api) while it runs."""
    if mode == "compose":
        return None
    try:
        return native.read_pid(name)
    except (OSError, native.StackError):
        return None


class Pause(Protocol):
    """Stops the stack's worker taking jobs for a while, then lets it go on."""

    how: str

    def pause(self) -> None: ...

    def resume(self) -> None: ...


@dataclass
class NoPause:
    how: str = "none (no stack worker found)"

    def pause(self) -> None:
        return None

    def resume(self) -> None:
        return None


@dataclass
class SignalPause:
    """The native stack: SIGSTOP the worker process, SIGCONT it after."""

    pid: int
    how: str = "SIGSTOP/SIGCONT"

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


@dataclass
class ComposePause:
    """Compose: freeze the worker service's containers (`docker compose pause`), thaw after."""

    service: str
    root: Path = ROOT
    how: str = "docker compose pause/unpause"

    def _compose(self, verb: str) -> None:
        argv = [*COMPOSE, verb, self.service]
        result = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise BenchError(
                f"`{' '.join(argv)}` failed ({result.stderr.strip() or result.returncode}): "
                "is the compose stack up (`make status`)?"
            )

    def pause(self) -> None:
        self._compose("pause")

    def resume(self) -> None:
        self._compose("unpause")


def worker_pause(mode: str | None, app_code: str, worker_pid: int | None) -> Pause:
    """How to pause the stack's worker, from the mode `make up` recorded."""
    if mode == "compose":
        return ComposePause(f"{app_code}-worker")
    if worker_pid is not None:
        return SignalPause(worker_pid)
    return NoPause()


@contextlib.contextmanager
def paused(pause: Pause) -> Iterator[None]:
    """The worker paused for the block, resumed after whatever happens."""
    pause.pause()
    try:
        yield
    finally:
        pause.resume()
