#!/usr/bin/env python3
"""The compose stack as local processes, for machines without a Docker engine.

`make up` runs this when `docker info` fails. It starts a project-local PostgreSQL (scram
passwords, 127.0.0.1:DB_HOST_PORT) and Redis (password, append-only, 127.0.0.1:REDIS_HOST_PORT),
bootstraps the roles, applies the Flyway migrations natively, then starts the worker and the
API. A server already answering on its port with the `.env` credentials is reused. Running
`up` again restarts whatever has died. `down` stops what `up` started and deletes its data.

Written by hand because no library runs "compose without containers"; it uses the project's
own settings, psycopg and redis-py, so it runs with the project's virtual environment.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import psycopg  # noqa: E402
import redis  # noqa: E402
from dotenv import dotenv_values  # noqa: E402

from {{ cookiecutter.app_code }}.core.config import Settings, SettingsError, load_settings  # noqa: E402

PACKAGE = "{{ cookiecutter.app_code }}"
STATE = ROOT / ".local"
LOGS = STATE / "logs"
RUN = STATE / "run"
SERVICES = ("postgres", "redis", "worker", "api")


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


# --- environment -----------------------------------------------------------------------------


def child_env(settings: Settings) -> dict[str, str]:
    """`.env` under the caller's environment, plus what the children need. Never printed."""
    env = {k: v for k, v in dotenv_values(ROOT / ".env").items() if v is not None}
    env.update(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("FLYWAY_PASSWORD", settings.db_admin_pwd.get_secret_value())
    return env


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


def read_pid(name: str) -> int | None:
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


# --- PostgreSQL ------------------------------------------------------------------------------


def pg_bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: int(p.parts[-3])
    )
    if candidates:
        return str(candidates[-1])
    raise StackError(
        f"{tool} not found: install the PostgreSQL server (e.g. apt-get install postgresql)"
    )


def pg_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as `postgres` (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise StackError("running as root and no 'postgres' or 'nobody' user exists to run PostgreSQL")


def pg_home() -> Path:
    """Where the cluster lives: `.local/postgres`, unless its owner could not reach it.

    As root the cluster runs as another user, who needs to traverse every parent folder; a
    project under /root or a 0700 temp folder is not reachable, so the cluster goes to a
    folder in the temp dir named after the project path instead.
    """
    home = STATE / "postgres"
    if pg_user() is None:
        return home
    for parent in home.parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
            return Path(tempfile.gettempdir()) / f"{PACKAGE}-postgres-{digest}"
    return home


def as_pg_user() -> dict[str, int]:
    user = pg_user()
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def pg_connect(
    settings: Settings, dbname: str = "postgres"
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host="127.0.0.1",
        port=settings.db_port,
        dbname=dbname,
        user=settings.db_admin_user,
        password=settings.db_admin_pwd.get_secret_value(),
        connect_timeout=2,
    )


def pg_answers(settings: Settings) -> bool:
    try:
        with pg_connect(settings):
            return True
    except psycopg.OperationalError:
        return False


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_postgres(settings: Settings) -> None:
    home = pg_home()
    data = home / "data"
    running = (home / "data" / "postmaster.pid").exists() and read_pid("postgres")
    if pg_answers(settings):
        say(
            f"postgres: {'running' if running else 'reusing the server'} "
            f"on 127.0.0.1:{settings.db_port}"
        )
        return
    if port_open(settings.db_port):
        raise StackError(
            f"port {settings.db_port} is taken by a server that refuses the .env credentials "
            f"of {settings.db_admin_user}: stop it, or set DB_HOST_PORT in .env to a free port"
        )
    owner = as_pg_user()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if owner:
        os.chown(home, owner["user"], owner["group"])
    if not (data / "PG_VERSION").exists():
        say(f"postgres: initdb into {data}")
        pwfile = home / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(settings.db_admin_pwd.get_secret_value() + "\n")
        if owner:
            os.chown(pwfile, owner["user"], owner["group"])
        try:
            subprocess.run(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    settings.db_admin_user,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                check=True,
                cwd=home,
                capture_output=True,
                text=True,
                **owner,
            )
        except subprocess.CalledProcessError as exc:
            raise StackError(f"initdb failed:\n{exc.stderr}") from None
        finally:
            pwfile.unlink(missing_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = home / "postgres.log"
    options = f"-p {settings.db_port} -c listen_addresses=127.0.0.1 -k {home}"
    say(f"postgres: starting on 127.0.0.1:{settings.db_port}")
    result = subprocess.run(
        [
            pg_bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        cwd=home,
        capture_output=True,
        text=True,
        **owner,
    )
    if result.returncode != 0:
        raise StackError(f"PostgreSQL did not start ({log}):\n{result.stdout}{result.stderr}")
    RUN.mkdir(parents=True, exist_ok=True)
    pid = (data / "postmaster.pid").read_text().split()[0]
    pidfile("postgres").write_text(f"{pid}\n")
    (RUN / "postgres.home").write_text(str(home))
    link = LOGS / "postgres.log"
    if not link.exists():
        link.symlink_to(log)
    wait_for("postgres", lambda: pg_answers(settings), 30, log)


def bootstrap(settings: Settings, env: dict[str, str]) -> None:
    """Database, schema, roles, grants; idempotent, and it rotates passwords to `.env`'s."""
    psql_env = dict(env, PGPASSWORD=settings.db_admin_pwd.get_secret_value(), PGCONNECT_TIMEOUT="5")
    result = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            settings.db_host,
            "-p",
            str(settings.db_port),
            "-U",
            settings.db_admin_user,
            "-d",
            "postgres",
            "-f",
            str(ROOT / "deploy/postgres/bootstrap.sql"),
        ],
        env=psql_env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"bootstrap failed:\n{result.stderr.strip()}")
    say(result.stdout.strip() or "bootstrap done")


def migrate(env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", f"{PACKAGE}.db.migrate"], cwd=ROOT, env=env)
    if result.returncode != 0:
        raise StackError("migrations failed (see the error above)")


def stop_postgres() -> None:
    if read_pid("postgres") is None:
        return
    home = (
        Path((RUN / "postgres.home").read_text()) if (RUN / "postgres.home").exists() else pg_home()
    )
    say("postgres: stopping")
    subprocess.run(
        [pg_bin("pg_ctl"), "-D", str(home / "data"), "-m", "fast", "-w", "stop"],
        cwd=home,
        capture_output=True,
        **as_pg_user(),
    )
    pidfile("postgres").unlink(missing_ok=True)


# --- Redis -----------------------------------------------------------------------------------


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=settings.redis_port,
        password=settings.redis_password.get_secret_value(),
        socket_timeout=1,
        socket_connect_timeout=1,
    )


def redis_answers(settings: Settings) -> bool:
    try:
        return bool(redis_client(settings).ping())
    except redis.RedisError:
        return False


def start_redis(settings: Settings) -> None:
    if redis_answers(settings):
        state = "running" if read_pid("redis") else "reusing the server"
        say(f"redis: {state} on 127.0.0.1:{settings.redis_port}")
        return
    if port_open(settings.redis_port):
        raise StackError(
            f"port {settings.redis_port} is taken by a server that refuses REDIS_PASSWORD: "
            "stop it, or set REDIS_HOST_PORT in .env to a free port"
        )
    server = shutil.which("redis-server")
    if not server:
        raise StackError(
            "redis-server not found: install Redis (e.g. apt-get install redis-server)"
        )
    home = STATE / "redis"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    conf = home / "redis.conf"
    # The password lives in a 0600 file, never on a command line.
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            f"bind 127.0.0.1\nport {settings.redis_port}\nprotected-mode yes\n"
            f"requirepass {settings.redis_password.get_secret_value()}\n"
            f'dir {home}\nappendonly yes\nappendfsync everysec\nsave ""\n'
            f"daemonize yes\npidfile {pidfile('redis')}\nlogfile {LOGS / 'redis.log'}\n"
        )
    say(f"redis: starting on 127.0.0.1:{settings.redis_port} (append-only)")
    subprocess.run([server, str(conf)], check=True, cwd=home)
    wait_for("redis", lambda: redis_answers(settings), 20, LOGS / "redis.log")


# --- worker and API --------------------------------------------------------------------------


def start_worker(settings: Settings, env: dict[str, str]) -> None:
    if read_pid("worker"):
        say("worker: running")
        return
    say("worker: starting")
    spawn("worker", [sys.executable, "-m", "arq", f"{PACKAGE}.worker.WorkerSettings"], env)

    def beating() -> bool:
        if read_pid("worker") is None:
            raise StackError(f"the worker exited at start; see {LOGS / 'worker.log'}")
        try:
            return bool(
                redis_client(settings).zcount(
                    f"{settings.app_code}:workers", int((time.time() - 10) * 1000), "+inf"
                )
            )
        except redis.RedisError:
            return False

    wait_for("worker heartbeat", beating, 30, LOGS / "worker.log")


def api_healthy(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.api_port}/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_api(settings: Settings, env: dict[str, str]) -> None:
    if read_pid("api") and api_healthy(settings):
        say("api: running")
        return
    if port_open(settings.api_port):
        raise StackError(
            f"port {settings.api_port} is taken by another process: "
            "stop it, or set API_HOST_PORT in .env"
        )
    say("api: starting")
    spawn(
        "api",
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"{PACKAGE}.api.main:app",
            "--host",
            settings.api_host,
            "--port",
            str(settings.api_port),
        ],
        env,
    )

    def healthy() -> bool:
        if read_pid("api") is None:
            raise StackError(f"the API exited at start; see {LOGS / 'api.log'}")
        return api_healthy(settings)

    wait_for("api", healthy, 30, LOGS / "api.log")


def stop_service(name: str) -> None:
    """Stop one part of the stack (the reliability tests do); `up` starts it again."""
    if name == "postgres":
        stop_postgres()
        return
    pid = read_pid(name)
    if pid:
        stop_pid(name, pid)
    pidfile(name).unlink(missing_ok=True)


# --- commands --------------------------------------------------------------------------------


def up(settings: Settings) -> None:
    env = child_env(settings)
    start_postgres(settings)
    bootstrap(settings, env)
    migrate(env)
    start_redis(settings)
    start_worker(settings, env)
    start_api(settings, env)
    base = f"http://localhost:{settings.api_port}"
    say("stack is up (local processes; logs: make logs)")
    for label, path in (
        ("API docs", "/docs"),
        ("ReDoc", "/redoc"),
        ("Status page", "/app/v1/status"),
    ):
        print(f"  {label:12} {base}{path}")


def down(settings: Settings) -> None:
    # Extra processes with a pid file here (workers the tests start) go first.
    extra = sorted(p.stem for p in RUN.glob("*.pid") if p.stem not in SERVICES)
    for name in (*extra, "api", "worker"):
        pid = read_pid(name)
        if pid:
            say(f"{name}: stopping (pid {pid})")
            stop_pid(name, pid)
        pidfile(name).unlink(missing_ok=True)
    pid = read_pid("redis")
    if pid:
        say(f"redis: stopping (pid {pid})")
        stop_pid("redis", pid)
    stop_postgres()
    home = (
        Path((RUN / "postgres.home").read_text()) if (RUN / "postgres.home").exists() else pg_home()
    )
    for path in {home, STATE}:
        if path.exists():
            shutil.rmtree(path)
    say("stack is down; its data is deleted")


def status(settings: Settings) -> int:
    rows = {
        "postgres": (read_pid("postgres"), pg_answers(settings), f"127.0.0.1:{settings.db_port}"),
        "redis": (read_pid("redis"), redis_answers(settings), f"127.0.0.1:{settings.redis_port}"),
        "worker": (read_pid("worker"), read_pid("worker") is not None, "arq"),
        "api": (read_pid("api"), api_healthy(settings), f"http://localhost:{settings.api_port}"),
    }
    down_count = 0
    for name, (pid, ok, where) in rows.items():
        if ok:
            state = f"running (pid {pid})" if pid else "running (not started by make up)"
        else:
            state = "stopped" if pid is None else f"not answering (pid {pid})"
            down_count += 1
        print(f"  {name:9} {state:34} {where}")
    return 1 if down_count else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=("up", "down", "status", "bootstrap", "migrate"))
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "up":
            up(settings)
        elif args.command == "down":
            down(settings)
        elif args.command == "status":
            return status(settings)
        elif args.command == "bootstrap":
            bootstrap(settings, child_env(settings))
        elif args.command == "migrate":
            migrate(child_env(settings))
    except (StackError, SettingsError) as exc:
        print(f"[{PACKAGE}] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
