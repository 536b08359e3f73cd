"""deploy/local/stack_supervisor.py: supervisord's config, the event listener's restart counts
and pid files, and a real supervisord restarting a killed program (no PostgreSQL or Redis)."""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions, UnhosedConfigParser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sup() -> ModuleType:
    path = ROOT / "deploy/local/stack_supervisor.py"
    spec = importlib.util.spec_from_file_location("stack_supervisor_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sleeper(seconds: int = 60) -> list[str]:
    return [sys.executable, "-c", f"import time; time.sleep({seconds})"]


def render(sup: ModuleType, base: Path, **programs: list[str]) -> Path:
    """A config for `programs` under `base` (logs/, run/), written 0600 like stack.py does."""
    for folder in ("logs", "run"):
        (base / folder).mkdir(parents=True, exist_ok=True, mode=0o700)
    socket = sup.socket_path(base / "run", base, "stacktest")
    socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = sup.render_config(
        socket=socket,
        root=base,
        logs=base / "logs",
        pidfile=base / "run/supervisord.pid",
        identifier="test",
        programs=programs or {"worker": sleeper(), "api": sleeper()},
    )
    conf = base / "supervisord.conf"
    conf.write_text(text)
    conf.chmod(0o600)
    return conf


def test_the_config_is_what_supervisord_reads(sup: ModuleType, tmp_path: Path) -> None:
    base = tmp_path / "a 100% odd dir"  # a space and a % survive the config's interpolation
    argv = [sys.executable, "-m", "arq", "pkg.worker.WorkerSettings", "--name", "it's"]
    conf = render(sup, base, worker=argv, api=sleeper())
    parser = UnhosedConfigParser()
    parser.read(str(conf))
    worker = "program:worker"
    assert shlex.split(parser.saneget(worker, "command")) == argv
    assert parser.saneget(worker, "directory") == str(base)
    assert parser.saneget("unix_http_server", "file").startswith(str(base))
    for key, value in {
        "autostart": "false",
        "autorestart": "true",
        "stopsignal": "TERM",
        "stopwaitsecs": "15",
        "startsecs": "1",
        "redirect_stderr": "true",
    }.items():
        assert parser.saneget(worker, key) == value, key
    assert int(parser.saneget(worker, "startretries")) >= 100
    assert parser.saneget("unix_http_server", "chmod") == "0700"
    assert not parser.has_section("inet_http_server"), "no TCP port"
    # Stopped in reverse order of priority: the API before the worker, the listener last.
    ours = [s for s in parser.sections() if s.startswith(("program:", "eventlistener:"))]
    priorities = {s: int(parser.saneget(s, "priority")) for s in ours}
    assert priorities["eventlistener:events"] < priorities[worker] < priorities["program:api"]

    options = ServerOptions()  # supervisord's own reading of it: accepted, and as meant
    options.realize(args=["-c", str(conf)])
    programs = {p.name: p for group in options.process_group_configs for p in group.process_configs}
    assert set(programs) == {"worker", "api", "events"}
    assert shlex.split(programs["worker"].command) == argv
    assert programs["worker"].stdout_logfile == str(base / "logs/worker.log")
    assert programs["worker"].redirect_stderr is True
    assert programs["worker"].stopsignal == signal.SIGTERM
    assert programs["worker"].autorestart is RestartUnconditionally


def test_the_config_refuses_what_it_cannot_hold(sup: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="line break"):
        render(sup, tmp_path, worker=["python", "-c", "a\nb"], api=sleeper())
    with pytest.raises(ValueError, match="' ;'"):  # would start a comment
        render(sup, tmp_path / "x ;y")


def test_a_socket_path_too_long_for_af_unix_moves_to_the_temp_dir(sup: ModuleType) -> None:
    short = sup.socket_path(Path("/srv/app/.local/run"), Path("/srv/app"), "demo")
    assert short == Path("/srv/app/.local/run/supervisor.sock")
    deep = Path("/" + "d" * 120)
    moved = sup.socket_path(deep / ".local/run", deep, "demo")
    assert len(str(moved)) <= sup.SOCKET_MAX and moved.name == "supervisor.sock"
    assert moved == sup.socket_path(deep / ".local/run", deep, "demo")  # stable per project


def test_restarts_are_starts_after_an_exit_not_after_a_stop(
    sup: ModuleType, tmp_path: Path
) -> None:
    def starting(name: str, from_state: str) -> None:
        fields = {"processname": name, "groupname": name, "from_state": from_state}
        sup.on_event(tmp_path, "PROCESS_STATE_STARTING", fields)

    starting("worker", "STOPPED")  # make up
    starting("api", "STOPPED")
    starting("worker", "EXITED")  # killed, started again by supervisord: 1
    starting("api", "STOPPED")  # stopped, then started on request: 0
    starting("api", "BACKOFF")  # exited at start, retried by supervisord: 1
    starting("api", "FATAL")  # gave up, then started on request: still 1
    starting("events", "EXITED")  # the listener itself is not shown
    assert sup.read_restarts(tmp_path) == {"worker": 1, "api": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restarts.json"]
    (tmp_path / "restarts.json").write_text("not json")
    assert sup.read_restarts(tmp_path) == {}
    assert sup.read_restarts(tmp_path / "missing") == {}


def test_uptime(sup: ModuleType) -> None:
    assert sup.uptime({"statename": "RUNNING", "start": 1000, "now": 1000 + 3723}) == "1:02:03"
    assert sup.uptime({"statename": "STOPPED", "start": 1000, "now": 2000}) == "-"
    assert sup.uptime({}) == "-"


def test_pid_files_follow_the_programs(sup: ModuleType, tmp_path: Path) -> None:
    sup.on_event(tmp_path, "PROCESS_STATE_RUNNING", {"processname": "worker", "pid": "42"})
    assert (tmp_path / "worker.pid").read_text() == "42\n"
    sup.on_event(tmp_path, "PROCESS_STATE_STOPPING", {"processname": "worker"})
    assert (tmp_path / "worker.pid").exists()  # still running until it has exited
    sup.on_event(tmp_path, "PROCESS_STATE_EXITED", {"processname": "worker"})
    assert not (tmp_path / "worker.pid").exists()
    sup.on_event(tmp_path, "PROCESS_STATE_RUNNING", {"processname": "events", "pid": "7"})
    assert list(tmp_path.iterdir()) == []  # only the worker and the API have pid files


# --- a real supervisord ------------------------------------------------------------------


def until(check: Callable[[], Any], within: float = 15.0) -> Any:
    """`check()` once it is true; a file that is not there yet counts as false."""
    deadline = time.monotonic() + within
    while True:
        try:
            if value := check():
                return value
        except FileNotFoundError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def supervisord(sup: ModuleType, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    conf = render(sup, tmp_path)
    argv = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    subprocess.run(argv, check=True, cwd=tmp_path, capture_output=True, timeout=30)
    socket = sup.socket_path(tmp_path / "run", tmp_path, "stacktest")
    client = sup.Supervisor(socket)
    pid = int(until(lambda: (tmp_path / "run/supervisord.pid").exists() and client.answers()))
    own = int((tmp_path / "run/supervisord.pid").read_text())
    assert pid
    try:
        yield client, tmp_path
    finally:
        client.shutdown()
        until(lambda: not Path(f"/proc/{own}").exists() or _zombie(own), within=40)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_supervisord_restarts_a_killed_program_and_a_stopped_one_stays_stopped(
    sup: ModuleType, supervisord: tuple[Any, Path]
) -> None:
    client, base = supervisord
    socket_dir = client.socket.parent
    assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((base / "supervisord.conf").stat().st_mode) == 0o600
    assert client.info("worker")["statename"] == "STOPPED"  # autostart is off: stack.py starts

    client.start("worker")
    first = until(lambda: (i := client.info("worker"))["statename"] == "RUNNING" and i["pid"])
    assert until(lambda: (base / "run/worker.pid").exists())  # the listener's pid file
    os.kill(first, signal.SIGKILL)
    until(  # supervisord's own restart, within seconds
        lambda: (i := client.info("worker"))["statename"] == "RUNNING" and i["pid"] != first,
        within=10,
    )
    second = client.info("worker")["pid"]
    # The listener deletes the file when the old one exits and writes it when the new one runs.
    assert until(lambda: (base / "run/worker.pid").read_text() == f"{second}\n")
    assert until(lambda: sup.read_restarts(base / "run") == {"worker": 1})

    client.stop("worker")  # returns once it has exited, and it stays stopped
    assert client.info("worker")["statename"] == "STOPPED"
    time.sleep(2)
    assert client.info("worker")["statename"] == "STOPPED"
    assert not (base / "run/worker.pid").exists()
    client.stop("worker")  # stopping a stopped program is no error
    client.start("worker")
    until(lambda: client.info("worker")["statename"] == "RUNNING")
    assert sup.read_restarts(base / "run") == {"worker": 1}  # a start on request is none
