"""deploy/local/stack.py run as root trusts nothing it did not make: folders, secret files and
pid files, with real files and real processes.

Each test runs a copy of deploy/local/ in a project folder of its own (its `.local`, its
PostgreSQL home in the temp dir, its supervisord socket), with ports nothing listens on, so
the running stack is never touched.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIBLINGS = ("launch", "stack_processes", "stack_postgres", "stack_redis", "stack_supervisor")
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder away needs root")


@dataclass
class Copy:
    """A project with a copy of deploy/local/: `stack` is its stack.py, `mods` its siblings."""

    root: Path
    stack: ModuleType
    mods: dict[str, ModuleType]

    @property
    def processes(self) -> ModuleType:
        return self.mods["stack_processes"]

    @property
    def postgres(self) -> ModuleType:
        return self.mods["stack_postgres"]


def load_copy(root: Path) -> Copy:
    """stack.py from `root`, with sibling modules of its own (not the ones already imported)."""
    shutil.copytree(
        ROOT / "deploy/local", root / "deploy/local", ignore=shutil.ignore_patterns("__pycache__")
    )
    saved = {name: sys.modules.pop(name) for name in SIBLINGS if name in sys.modules}
    path = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location(
            f"stack_copy_{abs(hash(root))}", root / "deploy/local/stack.py"
        )
        assert spec is not None and spec.loader is not None
        stack = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(stack)
        mods = {name: sys.modules.pop(name) for name in SIBLINGS}
    finally:
        sys.path[:] = path
        sys.modules.update(saved)
    assert root == stack.ROOT
    return Copy(root, stack, mods)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Copy]:
    project = load_copy(tmp_path / "project")
    for name in ("DB_PORT", "REDIS_PORT", "API_PORT"):
        monkeypatch.setenv(name, str(free_port()))
    outside = [project.postgres.tmp_home(), project.stack.supervisor().socket.parent]
    try:
        yield project
    finally:
        for folder in outside:  # the copy's folders in the temp dir, whoever owns them
            if folder.is_relative_to(tmp_path):
                continue
            if folder.is_symlink():
                folder.unlink()
            elif folder.exists():
                shutil.rmtree(folder)


@pytest.fixture
def settings(copy: Copy) -> Any:
    return copy.stack.load_settings()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A file a planted link points at; it must keep its content."""
    path = tmp_path / "precious"
    path.write_text("precious\n")
    return path


def another_uid(copy: Copy) -> int:
    """A uid that is neither ours nor the cluster's user's: `nobody`, or one nobody has."""
    user = copy.postgres.pg_user()
    taken = {os.geteuid(), user.pw_uid if user else -1}
    nobody = pwd.getpwnam("nobody").pw_uid
    return nobody if nobody not in taken else 54321


# --- secret files ----------------------------------------------------------------------------


def write_redis_conf(copy: Copy, settings: Any) -> None:
    copy.stack.start_redis(settings)


def write_supervisord_conf(copy: Copy, settings: Any) -> None:
    copy.stack.start_supervisord(settings, {})


def write_pwfile(copy: Copy, settings: Any) -> None:
    home = copy.root / ".local/postgres"
    copy.postgres.initdb(settings, home, home / "data", {})


def write_secrets(copy: Copy, settings: Any) -> None:
    copy.mods["launch"].write_secrets("worker", {})


def write_mode(copy: Copy, settings: Any) -> None:
    copy.stack.record_mode("local")


def write_pidfile(copy: Copy, settings: Any) -> None:
    copy.processes.write_pidfile("redis", os.getpid())


SECRET_FILES: dict[str, tuple[str, Callable[[Copy, Any], None]]] = {
    "redis.conf (requirepass)": (".local/redis/redis.conf", write_redis_conf),
    "supervisord.conf": (".local/supervisord.conf", write_supervisord_conf),
    "initdb's pwfile": (".local/postgres/pwfile", write_pwfile),
    "a process's secrets": (".local/run/worker.secrets.json", write_secrets),
    "the mode file": (".local/mode", write_mode),
    "a pid file": (".local/run/redis.pid", write_pidfile),
}


def plant(copy: Copy, relative: str) -> Path:
    """The runtime folders as `up` makes them, and the folder that holds `relative`."""
    copy.postgres.runtime_dirs()
    path = copy.root / relative
    copy.processes.private_dir(path.parent) if not path.parent.exists() else None
    return path


@pytest.mark.parametrize("which", list(SECRET_FILES))
def test_a_link_planted_at_a_secret_file_is_refused_and_its_target_untouched(
    copy: Copy, settings: Any, target: Path, which: str
) -> None:
    relative, write = SECRET_FILES[which]
    path = plant(copy, relative)
    path.symlink_to(target)
    with pytest.raises(copy.stack.StackError, match="is a symbolic link") as refused:
        write(copy, settings)
    assert "rm -rf" in str(refused.value)  # it says what to do
    assert target.read_text() == "precious\n"
    assert path.is_symlink() and stat.S_IMODE(target.stat().st_mode) != 0o600


@ROOT_ONLY
def test_a_secret_file_of_another_user_is_refused(copy: Copy, settings: Any) -> None:
    path = plant(copy, ".local/redis/redis.conf")
    path.write_text("theirs\n")
    os.chown(path, another_uid(copy), -1)
    with pytest.raises(copy.stack.StackError, match="belongs to"):
        copy.stack.start_redis(settings)
    assert path.read_text() == "theirs\n"


def test_secret_files_are_new_0600_files_of_ours(copy: Copy) -> None:
    path = plant(copy, ".local/run/worker.secrets.json")
    path.write_text("{}")  # an old one of ours is replaced, not written through
    path.chmod(0o644)
    copy.mods["launch"].write_secrets("worker", {})
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


# --- runtime folders -------------------------------------------------------------------------


def make_bad(path: Path, how: str, uid: int, elsewhere: Path) -> None:
    if how == "a link":
        elsewhere.mkdir(mode=0o700)
        path.symlink_to(elsewhere, target_is_directory=True)
        return
    path.mkdir(mode=0o700)
    if how == "world-writable":
        path.chmod(0o777)
    else:
        os.chown(path, uid, -1)


CASES = [
    pytest.param("another uid's", marks=ROOT_ONLY),
    "world-writable",
    "a link",
]


@pytest.mark.parametrize("how", CASES)
def test_a_state_folder_not_ours_is_refused(
    copy: Copy, settings: Any, tmp_path: Path, how: str
) -> None:
    state = copy.root / ".local"
    make_bad(state, how, another_uid(copy), tmp_path / "elsewhere")
    before = state.lstat()
    with pytest.raises(copy.stack.StackError, match="rm -rf") as refused:
        copy.stack.start_redis(settings)  # the first thing `up` writes in it
    assert str(state) in str(refused.value)
    after = state.lstat()
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)
    assert not (tmp_path / "elsewhere/redis").exists()
    with pytest.raises(copy.stack.StackError):
        copy.stack.down(settings)  # nor does `down` trust (or delete) what is in it
    assert os.path.lexists(state)


@pytest.mark.parametrize("how", CASES)
def test_a_postgres_home_not_ours_is_refused(
    copy: Copy, settings: Any, tmp_path: Path, how: str
) -> None:
    home = copy.postgres.pg_home()  # as root: a predictable folder in the temp dir
    copy.postgres.runtime_dirs()
    make_bad(home, how, another_uid(copy), tmp_path / "elsewhere")
    with pytest.raises(copy.stack.StackError, match="rm -rf"):
        copy.stack.start_postgres(settings)
    assert not (home / "pwfile").exists() and not (home / "data").exists()


def test_runtime_folders_are_private(copy: Copy) -> None:
    copy.postgres.runtime_dirs()
    user = copy.postgres.pg_user()
    state = (copy.root / ".local").stat()
    assert stat.S_IMODE(state.st_mode) == (0o700 if user is None else 0o710)
    assert user is None or state.st_gid == user.pw_gid  # the cluster's user passes through
    for name in ("logs", "run"):
        assert stat.S_IMODE((copy.root / ".local" / name).stat().st_mode) == 0o700


# --- pid files -------------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process a stale pid file may name."""
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def other_identity(copy: Copy, pid: int) -> str:
    """The identity another process (not `pid`) has: what a pid file of a dead one holds."""
    with subprocess.Popen(["sleep", "5"]) as other:
        ident = copy.processes.identity(other.pid)
        other.kill()
    assert ident and ident != copy.processes.identity(pid)
    return str(ident)


@pytest.mark.parametrize("content", ["bare", "another identity"])
def test_a_stale_pid_file_is_not_trusted_nor_signalled(
    copy: Copy, settings: Any, sleeper: subprocess.Popen[bytes], content: str
) -> None:
    pid = sleeper.pid
    text = f"{pid}\n" if content == "bare" else f"{pid} {other_identity(copy, pid)}\n"
    copy.postgres.runtime_dirs()
    for name in ("redis", "postgres", "supervisord", "test-worker-1"):
        copy.processes.write_private(copy.processes.pidfile(name), text)
        assert copy.processes.read_pidfile(name) is None
        assert copy.stack.read_pid(name) is None
    copy.stack.stop_service("redis")
    copy.stack.stop_service("test-worker-1")
    # A cluster whose postmaster.pid names the process: pg_ctl would signal it.
    owner = copy.postgres.as_pg_user()
    home = copy.processes.private_dir(
        copy.postgres.pg_home(), owner.get("user"), owner.get("group", -1)
    )
    (home / "data").mkdir()
    (home / "data/postmaster.pid").write_text(f"{pid}\n{home / 'data'}\n")
    assert copy.postgres.postmaster_pid(home / "data") is None
    copy.stack.down(settings)
    assert sleeper.poll() is None, "a process that is not the stack's was signalled"
    assert copy.stack.alive(pid)
    assert not (copy.root / ".local").exists() and not home.exists()


def test_a_pid_file_with_the_processs_identity_is_trusted(
    copy: Copy, sleeper: subprocess.Popen[bytes]
) -> None:
    copy.postgres.runtime_dirs()
    copy.processes.write_pidfile("redis", sleeper.pid)
    assert copy.stack.read_pid("redis") == sleeper.pid
    path = copy.processes.pidfile("redis")
    pid, ident = path.read_text().split()
    assert int(pid) == sleeper.pid and ident == copy.processes.identity(sleeper.pid)
    copy.stack.stop_service("redis")  # ours: stopped (it returns once the process is gone)
    assert not copy.processes.alive(sleeper.pid)
    assert not path.exists()


def test_a_pid_file_is_trusted_only_in_a_folder_of_ours(
    copy: Copy, sleeper: subprocess.Popen[bytes]
) -> None:
    copy.postgres.runtime_dirs()
    copy.processes.write_pidfile("test-worker-1", sleeper.pid)
    run = copy.root / ".local/run"
    run.chmod(0o777)  # anyone could have written it
    assert copy.stack.read_pid("test-worker-1") is None
    run.chmod(0o700)
    copy.processes.pidfile("test-worker-1").chmod(0o666)
    assert copy.stack.read_pid("test-worker-1") is None


def test_a_spawned_process_records_its_identity(copy: Copy) -> None:
    pid = copy.stack.spawn("test-sleep-1", ["sleep", "60"], dict(os.environ))
    try:
        assert copy.stack.read_pid("test-sleep-1") == pid
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    assert copy.stack.read_pid("test-sleep-1") is None


# --- the mode ----------------------------------------------------------------------------


def test_the_mode_is_recorded_and_forgotten(copy: Copy) -> None:
    def stack_py(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(copy.root / "deploy/local/stack.py"), *args]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)

    assert stack_py("mode", "compose").returncode == 0
    mode = copy.root / ".local/mode"
    assert mode.read_text() == "compose\n" and stat.S_IMODE(mode.stat().st_mode) == 0o600
    assert stack_py("mode", "none").returncode == 0
    assert not (copy.root / ".local").exists()  # nothing else was in it
    assert stack_py("mode").returncode != 0 and stack_py("up", "local").returncode != 0
