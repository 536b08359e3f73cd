"""Paths, messages and processes shared by deploy/local/stack.py and its sibling modules.

Extra processes (the reliability tests' own workers and APIs) are started here with `spawn`:
a pid file in `.local/run/`, a log in `.local/logs/`, and no supervisor.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "{{ cookiecutter.app_code }}"
STATE = ROOT / ".local"
LOGS = STATE / "logs"
RUN = STATE / "run"


class StackError(RuntimeError):
    """Something the user must fix; the message says what."""


def say(message: str) -> None:
    print(f"[{PACKAGE}] {message}", flush=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    """Poll `check` until it passes or `timeout` runs out, showing the wait as it goes.

    On a terminal one line counts up in place; in a log (CI) a dot is printed each second.
    """
    tty = sys.stdout.isatty()
    start = time.monotonic()
    print(f"[{PACKAGE}] waiting for {what} ...", end="", flush=True)
    dots = 0
    while not check():
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            print(" timed out", flush=True)
            hint = f"; see {log}" if log else ""
            raise StackError(f"{what} did not become healthy within {timeout:.0f} s{hint}")
        if tty:
            print(f"\r[{PACKAGE}] waiting for {what} ... {elapsed:4.1f} s", end="", flush=True)
        elif int(elapsed) > dots:
            dots = int(elapsed)
            print(".", end="", flush=True)
        time.sleep(0.25)
    print(f" ok ({time.monotonic() - start:.1f} s)", flush=True)


# --- processes -------------------------------------------------------------------------------


def pidfile(name: str) -> Path:
    return RUN / f"{name}.pid"


def alive(pid: int) -> bool:
    """Whether `pid` runs; a child of this process that exited is reaped, not counted."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child (the usual case: `up` has exited since)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not zombie(pid)


def zombie(pid: int) -> bool:
    """An exited process that nobody has reaped yet: its parent exited, and an init (a
    container's, a VM's) may take seconds to reap it. Signals still "reach" it, so without
    this `make up` would not restart a worker that died."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # gone, or no /proc (macOS): kill(pid, 0) has answered
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def read_pidfile(name: str) -> int | None:
    """The pid in `.local/run/<name>.pid` if that process runs, else None."""
    try:
        pid = int(pidfile(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


def stop_pid(name: str, pid: int, timeout: float = 15.0) -> None:
    """SIGTERM (in-flight jobs finish or go back to the queue), SIGKILL after `timeout`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.1)
    say(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f} s: killing it")
    os.kill(pid, signal.SIGKILL)


def spawn(name: str, argv: list[str], env: dict[str, str]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pidfile(name).write_text(f"{proc.pid}\n")
    return proc.pid


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
