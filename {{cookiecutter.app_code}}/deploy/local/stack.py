#!/usr/bin/env python3
"""The compose stack as local processes, for machines without a Docker engine.

`make up` runs this when `docker info` fails. It starts a project-local PostgreSQL (scram
passwords, 127.0.0.1:DB_HOST_PORT) and Redis (password, append-only, 127.0.0.1:REDIS_HOST_PORT),
bootstraps the roles, applies the Flyway migrations natively, then starts a project-local
supervisord that runs the worker and the API and restarts either when it exits
(deploy/local/stack_supervisor.py). A server already answering on its port with the `.env`
credentials is reused. Running `up` again starts whatever has stopped. `down` stops what `up`
started and deletes its data. `mode` records how `make up` ran the stack (`.local/mode`).

Run as root, it trusts nothing it did not make: its folders are 0700 and must be its own,
secrets go into new 0600 files that no planted link redirects, and a pid file is believed (and
its process signalled) only while the process has the identity recorded with it
(stack_processes.py).

Written by hand because no library runs "compose without containers"; it uses the project's
own settings, psycopg and redis-py, so it runs with the project's virtual environment.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the stack_* modules beside this one

import launch  # noqa: E402
import redis  # noqa: E402
import stack_supervisor as supervised  # noqa: E402
from launch import child_env as child_env  # noqa: E402  (the tests' processes use it)
from launch import process_env  # noqa: E402
from stack_postgres import as_pg_user as as_pg_user  # noqa: E402
from stack_postgres import (  # noqa: E402
    bootstrap,
    pg_answers,
    pg_user,
    recorded_home,
    runtime_dirs,
    start_postgres,
    stop_postgres,
)
from stack_postgres import pg_bin as pg_bin  # noqa: E402
from stack_processes import (  # noqa: E402
    LOGS,
    PACKAGE,
    RUN,
    STATE,
    StackError,
    alive,
    check_dir,
    identity,
    pidfile,
    port_open,
    private_dir,
    read_pidfile,
    say,
    stop_pid,
    wait_for,
    write_pidfile,
    write_private,
)
from stack_processes import spawn as spawn  # noqa: E402
from stack_processes import zombie as zombie  # noqa: E402
from stack_redis import redis_answers, redis_client, start_redis  # noqa: E402

from {{ cookiecutter.app_code }}.core.config import Settings, SettingsError, load_settings  # noqa: E402

SERVICES = ("postgres", "redis", "worker", "api")
SUPERVISOR_CONF = STATE / "supervisord.conf"
SUPERVISOR_LOG = LOGS / "supervisord.log"
SUPERVISOR_OWN_PID = RUN / "supervisord.own-pid"  # supervisord writes it; supervisord.pid: ours
MODE_FILE = STATE / "mode"  # how `make up` ran the stack: compose or local (the Makefile reads it)
MODES = ("compose", "local")


# --- migrations ------------------------------------------------------------------------------


def migrate(settings: Settings) -> None:
    """The Flyway migrations, natively, as the admin role (its password and no other)."""
    env = dict(process_env("migrate"), FLYWAY_PASSWORD=settings.db_admin_pwd.get_secret_value())
    result = subprocess.run([sys.executable, "-m", f"{PACKAGE}.db.migrate"], cwd=ROOT, env=env)
    if result.returncode != 0:
        raise StackError("migrations failed (see the error above)")


# --- processes -------------------------------------------------------------------------------


def read_pid(name: str) -> int | None:
    """The live pid of a part of the stack (the worker and the API: as supervisord says; the
    rest: its pid file), or None."""
    if name in supervised.PROGRAMS:
        info = supervisor().info(name)
        pid = int(info["pid"]) if info else 0
        return pid if pid and alive(pid) else None
    return read_pidfile(name)


# --- worker and API, under supervisord -------------------------------------------------------


def supervisor() -> supervised.Supervisor:
    return supervised.Supervisor(supervised.socket_path(RUN, ROOT, PACKAGE))


def programs(settings: Settings) -> dict[str, list[str]]:
    """What supervisord runs, by name (the order of supervised.PROGRAMS)."""
    api = [sys.executable, "-m", "uvicorn", f"{PACKAGE}.api.main:app", "--host"]
    with_own_secrets = [sys.executable, str(Path(launch.__file__).resolve())]
    return {
        "worker": [
            *with_own_secrets,
            "worker",
            "--",
            *[sys.executable, "-m", "arq", f"{PACKAGE}.worker.main.WorkerSettings"],
        ],
        "api": [
            *with_own_secrets,
            "api",
            "--",
            *[*api, settings.api_host, "--port", str(settings.api_port)],
        ],
    }


def start_supervisord(settings: Settings, env: dict[str, str]) -> supervised.Supervisor:
    """supervisord for this project, started if it does not answer. It holds no secret: its
    programs start through launch.py, which gives each its own from `.env`."""
    client = supervisor()
    if client.answers():
        return client
    pid = read_pid("supervisord")
    if pid:  # alive but deaf: its programs go with it
        stop_supervisord()
    runtime_dirs()
    private_dir(client.socket.parent)  # RUN, or its own folder in the temp dir
    config = supervised.render_config(
        socket=client.socket,
        root=ROOT,
        logs=LOGS,
        pidfile=SUPERVISOR_OWN_PID,
        identifier=f"{PACKAGE}-{settings.api_port}",
        programs=programs(settings),
    )
    for stale in (supervised.RESTARTS, *(f"{name}.pid" for name in supervised.PROGRAMS)):
        (RUN / stale).unlink(missing_ok=True)  # counts and pids start again with supervisord
    write_private(SUPERVISOR_CONF, config)
    for process in supervised.PROGRAMS:  # their own secrets, for launch.py
        launch.write_secrets(process, os.environ)
    say("supervisord: starting (it keeps the worker and the API running)")
    argv = [sys.executable, "-m", "supervisor.supervisord", "-c", str(SUPERVISOR_CONF)]
    result = subprocess.run(argv, cwd=ROOT, env=process_env(None), capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(
            f"supervisord did not start: {(result.stdout + result.stderr).strip()}\n"
            f"see {SUPERVISOR_LOG} and its config {SUPERVISOR_CONF}; fix it and run make up again"
        )
    wait_for("supervisord", client.answers, 15, SUPERVISOR_LOG)
    own = client.pid()  # its own word, over the socket in our private folder
    if own:
        write_pidfile("supervisord", own)
    return client


def stop_supervisord() -> None:
    """Stop the worker and the API (in-flight jobs go back to the queue), then supervisord."""
    client = supervisor()
    pids = {name: read_pid(name) for name in reversed(supervised.PROGRAMS)}
    who = {name: identity(pid) for name, pid in pids.items() if pid}  # who they are now
    for name, pid in pids.items():
        if pid:
            say(f"{name}: stopping (pid {pid})")
    own = read_pid("supervisord")
    own_id = identity(own) if own else None
    if own:
        say(f"supervisord: stopping (pid {own})")
    if client.answers():
        client.shutdown()
    elif own:
        os.kill(own, signal.SIGTERM)  # supervisord stops its programs on SIGTERM too
    deadline = time.monotonic() + 2 * supervised.STOP_WAIT_SECONDS + 5
    while own and alive(own, own_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    if own and alive(own, own_id):
        stop_pid("supervisord", own, timeout=1)
    for name, pid in pids.items():  # nothing outlives it (and nothing that is not it is hit)
        if pid and alive(pid, who.get(name)):
            stop_pid(name, pid)
    for stale in (pidfile("supervisord"), SUPERVISOR_OWN_PID, client.socket):
        stale.unlink(missing_ok=True)


def env_changed() -> bool:
    """Whether `.env` changed since supervisord started (its programs have the old one)."""
    started = pidfile("supervisord")
    try:
        return (ROOT / ".env").stat().st_mtime > started.stat().st_mtime
    except OSError:
        return False


def start_program(
    settings: Settings, env: dict[str, str], name: str, ready: Callable[[], bool]
) -> None:
    """Start `name` under supervisord unless it runs, then wait until `ready`.

    A program supervisord is starting again by itself (STARTING, BACKOFF) is waited for; one
    that will not start is stopped (no endless retries) and the error points at its log.
    """
    client = start_supervisord(settings, env)
    log = LOGS / f"{name}.log"
    info = client.info(name) or {}
    state = info.get("statename")
    if state == "RUNNING" and ready():
        say(f"{name}: running")
        return
    ours = state not in ("RUNNING", "STARTING", "BACKOFF")
    if ours:
        if name == "api" and port_open(settings.api_port):
            raise StackError(
                f"port {settings.api_port} is taken by another process: "
                "stop it, or set API_HOST_PORT in .env"
            )
        say(f"{name}: starting")
        client.start(name)
    else:
        say(f"{name}: {state.lower() if state else 'unknown'}, supervisord is starting it")
    failed = (*supervised.FAILED_STATES, *(("BACKOFF",) if ours else ()))

    def up_and_ready() -> bool:
        now = client.info(name)
        if now is None:
            raise StackError(f"supervisord stopped answering; see {SUPERVISOR_LOG}")
        if now["statename"] in failed:
            client.stop(name)
            why = now["spawnerr"] or f"state {now['statename']}"
            raise StackError(
                f"the {name} exited at start ({why}); see {log}, fix it and run make up again"
            )
        return bool(now["statename"] == "RUNNING" and ready())

    wait_for(name if name == "api" else f"{name} heartbeat", up_and_ready, 30, log)


def worker_beating(settings: Settings) -> bool:
    try:
        return bool(
            redis_client(settings).zcount(
                f"{settings.app_code}:workers", int((time.time() - 10) * 1000), "+inf"
            )
        )
    except redis.RedisError:
        return False


def start_worker(settings: Settings, env: dict[str, str]) -> None:
    """The worker under supervisord, once it sends heartbeats. `env` is what supervisord
    starts with if it is not running yet; a running one keeps the environment it has."""
    start_program(settings, env, "worker", lambda: worker_beating(settings))


def api_healthy(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.api_port}/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_api(settings: Settings, env: dict[str, str]) -> None:
    """The API under supervisord, once /health answers (see start_worker for `env`)."""
    start_program(settings, env, "api", lambda: api_healthy(settings))


def stop_service(name: str) -> None:
    """Stop one part of the stack (the reliability tests do). It stays stopped (supervisord
    does not restart a program it was told to stop) until start_worker/start_api or `up`."""
    if name == "postgres":
        stop_postgres()
        return
    if name in supervised.PROGRAMS:
        client = supervisor()
        if client.answers():
            client.stop(name)
        return
    pid = read_pid(name)
    if pid:
        stop_pid(name, pid)
    pidfile(name).unlink(missing_ok=True)


# --- commands --------------------------------------------------------------------------------


def record_mode(mode: str) -> None:
    """`.local/mode`: how `make up` ran the stack, for `down`, `status`, `logs` and the rest to
    use the same (a Docker engine started later changes nothing). "none" forgets it."""
    if mode in MODES:
        runtime_dirs()
        write_private(MODE_FILE, f"{mode}\n")
        return
    if not check_dir(STATE):
        return
    MODE_FILE.unlink(missing_ok=True)
    for folder in (LOGS, RUN, STATE):  # what is left of a compose run: empty folders
        with contextlib.suppress(OSError):
            folder.rmdir()


def running_before(settings: Settings) -> set[str]:
    """What answers before `up` starts anything: a server of an earlier `up` or one of the
    user's (reused), supervisord and its programs. A failed `up` leaves those running."""
    running = {
        name for name, ok in (("postgres", pg_answers), ("redis", redis_answers)) if ok(settings)
    }
    client = supervisor()
    if client.answers():
        running.add("supervisord")
        for name in supervised.PROGRAMS:
            info = client.info(name)
            if info and info.get("statename") == "RUNNING":
                running.add(name)
    return running


def undo_up(before: set[str]) -> None:
    """Stop what this `up` started and nothing that ran before it, after a failure."""
    client = supervisor()
    if "supervisord" not in before:
        if client.answers() or read_pid("supervisord"):
            stop_supervisord()
    elif client.answers():
        for name in reversed(supervised.PROGRAMS):
            if name not in before:
                with contextlib.suppress(Exception):
                    client.stop(name)
    if "redis" not in before:
        pid = read_pid("redis")
        if pid:
            say(f"redis: stopping (pid {pid}), started by this failed run")
            stop_pid("redis", pid)
        pidfile("redis").unlink(missing_ok=True)
    if "postgres" not in before:
        stop_postgres()  # only this project's cluster, and only when its postmaster runs


def up(settings: Settings) -> None:
    env = child_env(settings)
    before = running_before(settings)
    record_mode("local")
    try:
        start_postgres(settings)
        bootstrap(settings, process_env("bootstrap"))
        migrate(settings)
        start_redis(settings)
        if supervisor().answers() and env_changed():
            say(".env changed since supervisord started: restarting the worker and the API")
            stop_supervisord()
            before -= {"supervisord", *supervised.PROGRAMS}
        start_worker(settings, env)
        start_api(settings, env)
    except BaseException:
        say("up failed: stopping what this run started (what ran before it keeps running)")
        try:
            undo_up(before)
        except Exception as exc:  # the first error is the one to show; this one is said
            say(f"could not stop everything this run started ({exc}): run `make down`")
        raise
    base = f"http://localhost:{settings.api_port}"
    say("stack is up (local processes; worker and API under supervisord; logs: make logs)")
    for label, path in (
        ("API docs", "/docs"),
        ("ReDoc", "/redoc"),
        ("Status page", "/app/v1/status"),
    ):
        print(f"  {label:12} {base}{path}")


def down(settings: Settings) -> None:
    for folder in (STATE, RUN):  # what is in them is trusted only when they are ours
        check_dir(folder)
    # Extra processes with a pid file here (workers the tests start) go first.
    extra = sorted(p.stem for p in RUN.glob("*.pid") if p.stem not in (*SERVICES, "supervisord"))
    for name in extra:
        pid = read_pid(name)
        if pid:
            say(f"{name}: stopping (pid {pid})")
            stop_pid(name, pid)
        pidfile(name).unlink(missing_ok=True)
    stop_supervisord()
    pid = read_pid("redis")
    if pid:
        say(f"redis: stopping (pid {pid})")
        stop_pid("redis", pid)
    stop_postgres()
    home, user = recorded_home(), pg_user()
    owners = {home: None if user is None else user.pw_uid, supervisor().socket.parent: None}
    for path in {**owners, STATE: None}:
        if check_dir(path, owners.get(path)):  # never another's folder
            shutil.rmtree(path)
    say("stack is down; its data is deleted")


def status(settings: Settings) -> int:
    """One line a part: state, pid, uptime and restarts (worker and API), where it answers."""
    client = supervisor()
    running = client.answers()
    counts = supervised.read_restarts(RUN)
    where = {
        "postgres": f"127.0.0.1:{settings.db_port}",
        "redis": f"127.0.0.1:{settings.redis_port}",
        "worker": "arq",
        "api": f"http://localhost:{settings.api_port}",
    }
    answers = {
        "postgres": lambda: pg_answers(settings),
        "redis": lambda: redis_answers(settings),
        "worker": lambda: worker_beating(settings),
        "api": lambda: api_healthy(settings),
    }
    print(f"  {'service':9} {'state':15} {'pid':>8}  {'uptime':>9}  {'restarts':>8}  where")
    down_count = 0
    for name in SERVICES:
        pid, up_for, restarted = read_pid(name), "-", "-"
        ok = answers[name]()
        if name in supervised.PROGRAMS:
            info = client.info(name) if running else None
            state = info["statename"].lower() if info else "stopped"
            up_for, restarted = supervised.uptime(info or {}), str(counts.get(name, 0))
            if state == "running" and not ok:
                state = "not answering"
            ok = ok and state == "running"
        elif ok:
            state = "running" if pid else "running (reused)"
        else:
            state = "stopped" if pid is None else "not answering"
        down_count += not ok
        shown = str(pid) if pid else "-"
        print(f"  {name:9} {state:15} {shown:>8}  {up_for:>9}  {restarted:>8}  {where[name]}")
    sup_pid = read_pid("supervisord")
    print(
        f"  supervisord {'running (pid ' + str(sup_pid) + ')' if running else 'not running'}; "
        f"its log: {SUPERVISOR_LOG.relative_to(ROOT)}"
    )
    return 1 if down_count else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = ("up", "down", "status", "bootstrap", "migrate", "mode")
    parser.add_argument("command", choices=commands)
    parser.add_argument("mode", nargs="?", choices=(*MODES, "none"), help="with `mode`")
    args = parser.parse_args(argv)
    if (args.command == "mode") != bool(args.mode):
        parser.error("`mode` takes compose, local or none (and only `mode` takes one)")
    try:
        if args.command == "mode":
            record_mode(args.mode)
            return 0
        settings = load_settings()
        if args.command == "up":
            up(settings)
        elif args.command == "down":
            down(settings)
        elif args.command == "status":
            return status(settings)
        elif args.command == "bootstrap":
            bootstrap(settings, process_env("bootstrap"))
        elif args.command == "migrate":
            migrate(settings)
    except (StackError, SettingsError) as exc:
        print(f"[{PACKAGE}] error: {exc}", file=sys.stderr)
        if args.command == "up" and isinstance(exc, StackError):
            print(
                f"[{PACKAGE}] what this run started is stopped again; `make down` stops "
                "everything the stack runs (servers of earlier runs too) and deletes its data",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
