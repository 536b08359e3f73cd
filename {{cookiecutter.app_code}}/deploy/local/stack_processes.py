"""Paths, messages, files and processes shared by deploy/local/stack.py and its siblings.

Extra processes (the reliability tests' own workers and APIs) are started here with `spawn`:
a pid file in `.local/run/`, a log in `.local/logs/`, and no supervisor.

The stack may run as root, so what it writes is guarded: a runtime folder is made 0700 and one
that is there already must be ours (`private_dir`); a file that holds a secret is made new,
0600, never through a link (`write_private`); a pid file records the process's identity (its
start time and a hash of its command line, `identity`), and a pid whose identity differs (a
reboot, a reused pid) counts as not running and is never signalled.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import signal
import socket
import stat
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


def who(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    return f"uid {uid}"


# --- files and folders ------------------------------------------------------------------------


def not_ours(path: Path, uid: int, *, folder: bool) -> str | None:
    """Why `path` (there already) is not one the stack may use, or None when it is: a link,
    not the kind expected, owned by another uid than `uid`, or writable by group or others."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if folder != stat.S_ISDIR(st.st_mode) or not (folder or stat.S_ISREG(st.st_mode)):
        return "is not a folder" if folder else "is not a regular file"
    if st.st_uid != uid:
        return f"belongs to {who(st.st_uid)}, not {who(uid)}"
    if st.st_mode & 0o022:
        return f"is writable by {'its group' if st.st_mode & 0o020 else 'others'}"
    return None


def refuse(path: Path, why: str) -> StackError:
    return StackError(
        f"{path} {why}: the stack will not use it, as someone else may control it; "
        f"check what it is, remove it (rm -rf {path}) and run make up again"
    )


def private_dir(path: Path, uid: int | None = None, gid: int = -1, mode: int = 0o700) -> Path:
    """`path` as a runtime folder: made with `mode`, owned by `uid` (default: us) and `gid`;
    one that is there already must be ours (not_ours), and gets `mode` and `gid`."""
    uid = os.geteuid() if uid is None else uid
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        why = not_ours(path, uid, folder=True)
        if why:
            raise refuse(path, why) from None
    else:
        if uid != os.geteuid() or gid != -1:
            os.chown(path, uid, gid)
    os.chmod(path, mode, follow_symlinks=False)
    if gid != -1 and os.lstat(path).st_gid != gid:
        os.chown(path, -1, gid, follow_symlinks=False)
    return path


def state_dirs(group: int = -1) -> None:
    """`.local` (0700, or 0710 with `group`: the cluster's user passes through it as root, to
    `.local/postgres`), and its `logs/` and `run/` (0700)."""
    private_dir(STATE, gid=group, mode=0o700 if group == -1 else 0o710)
    private_dir(LOGS)
    private_dir(RUN)


def check_dir(path: Path, uid: int | None = None) -> bool:
    """Whether `path` is there, once it is known to be ours (a StackError when it is not)."""
    if not os.path.lexists(path):
        return False
    why = not_ours(path, os.geteuid() if uid is None else uid, folder=True)
    if why:
        raise refuse(path, why)
    return True


def write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> Path:
    """`text` in a new 0600 file at `path` (owned by `owner`, uid and gid): created exclusively
    and never through a link. A regular file of ours there already is replaced; anything else
    (a link, another's file) is refused and left as it is."""
    with contextlib.suppress(FileNotFoundError):
        why = not_ours(path, os.geteuid(), folder=False)
        if why:
            raise refuse(path, why)
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise refuse(path, "appeared while the stack was writing it") from None
    with os.fdopen(fd, "w") as fh:
        if owner:
            os.fchown(fh.fileno(), *owner)
        fh.write(text)
    return path


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


def identity(pid: int) -> str | None:
    """Who `pid` is: its start time (clock ticks after boot, field 22 of /proc/<pid>/stat) and
    a hash of its command line, or None when it does not run. A pid reused after the process
    exited (or after a reboot) has another identity. Without /proc (macOS): `ps`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        start = fields[19]  # the fields after "(comm)" start at field 3
    except (OSError, IndexError):
        if Path("/proc/self/stat").exists():
            return None
        found = subprocess.run(
            ["ps", "-o", "lstart=", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            check=False,
        )
        if found.returncode != 0 or not found.stdout.strip():
            return None
        start, command = "ps", found.stdout.strip()
    return f"{start}:{digest(command)}"


def digest(command: bytes) -> str:
    return hashlib.sha256(command).hexdigest()[:16]


def matches(pid: int, ident: str) -> bool:
    """Whether `pid` is still the process `ident` (identity) was taken of. One that is exiting
    has lost its command line already: the same start time then suffices (a pid and a start
    time name one process until a reboot)."""
    now = identity(pid)
    if now is None or now == ident:
        return now is not None
    start, _, command = now.partition(":")
    return command == digest(b"") and start == ident.partition(":")[0]


def command_line(pid: int) -> str:
    """`pid`'s command line, its arguments joined by spaces ("" when unknown)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return command.replace(b"\0", b" ").decode(errors="replace")


def write_pidfile(name: str, pid: int) -> None:
    """`.local/run/<name>.pid`: the pid and its identity (read_pidfile checks it)."""
    write_private(pidfile(name), f"{pid} {identity(pid) or '-'}\n")


def alive(pid: int, ident: str | None = None) -> bool:
    """Whether `pid` runs (and, given `ident`, is still that process); a child of this process
    that exited is reaped, not counted."""
    if ident is not None and not matches(pid, ident):
        return False
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
    """The pid in `.local/run/<name>.pid` if that very process runs, else None: a pid file
    without the identity write_pidfile records, or with another one (the pid is now some
    other process), is not trusted."""
    path, uid = pidfile(name), os.geteuid()
    try:
        if not_ours(RUN, uid, folder=True) or not_ours(path, uid, folder=False):
            return None  # a file anyone else could have written
        pid_text, ident = path.read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if alive(pid, ident) else None


def stop_pid(name: str, pid: int, timeout: float = 15.0) -> None:
    """SIGTERM (in-flight jobs finish or go back to the queue), SIGKILL after `timeout`; only
    ever to the process that had `pid` when this was called (callers check who that is)."""
    ident = identity(pid)
    if ident is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, ident):
            return
        time.sleep(0.1)
    if matches(pid, ident):
        say(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f} s: killing it")
        os.kill(pid, signal.SIGKILL)


def spawn(name: str, argv: list[str], env: dict[str, str]) -> int:
    """Start `argv` in its own session, its output in `.local/logs/<name>.log`, its pid and
    identity in `.local/run/<name>.pid` (the folders are there: `make up` made them)."""
    for folder in (STATE, LOGS, RUN):
        check_dir(folder) or private_dir(folder)
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
    write_pidfile(name, proc.pid)
    return proc.pid


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
