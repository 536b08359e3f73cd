"""The native stack's PostgreSQL: a project-local cluster (pg_ctl), its bootstrap and the
migrations, for deploy/local/stack.py.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from stack_processes import (
    LOGS,
    PACKAGE,
    ROOT,
    RUN,
    STATE,
    StackError,
    alive,
    check_dir,
    command_line,
    pidfile,
    port_open,
    private_dir,
    say,
    state_dirs,
    wait_for,
    write_pidfile,
    write_private,
)
from stack_processes import read_pidfile as read_pid

from {{ cookiecutter.app_code }}.core.config import Settings

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


def state_group() -> int:
    """The group `.local` gets: as root, the cluster's user's, so that it can pass through to
    `.local/postgres` (mode 0710); -1 (unchanged, mode 0700) otherwise."""
    user = pg_user()
    return -1 if user is None else user.pw_gid


def runtime_dirs() -> None:
    """`.local`, `.local/logs` and `.local/run`, private (refused when they are not ours)."""
    state_dirs(state_group())


def tmp_home() -> Path:
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"{PACKAGE}-postgres-{digest}"


def pg_home() -> Path:
    """Where the cluster lives: `.local/postgres`, unless its owner could not reach it.

    As root the cluster runs as another user, who needs to traverse every parent folder; a
    project under /root or a 0700 temp folder is not reachable, so the cluster goes to a
    folder in the temp dir named after the project path instead (made 0700 for that user; one
    that is there already and not its own is refused). `.local` lets that user's group through.
    """
    home = STATE / "postgres"
    if pg_user() is None:
        return home
    for parent in home.parents[1:]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return tmp_home()
    return home


def recorded_home() -> Path:
    """The cluster's folder as `up` recorded it (one of the two pg_home gives), or pg_home()."""
    try:
        home = Path((RUN / "postgres.home").read_text().strip())
    except OSError:
        return pg_home()
    return home if home in (STATE / "postgres", tmp_home()) else pg_home()


def postmaster_pid(data: Path) -> int | None:
    """The pid in `data/postmaster.pid` while it is this cluster's postmaster: alive, and its
    command line names `data` (a stale file's pid may be any process by now)."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not alive(pid):
        return None
    command = command_line(pid)
    if not command and not Path("/proc/self").exists():
        return pid  # no /proc (macOS): pg_ctl's own check
    return pid if "postgres" in command and f"-D {data}" in command else None


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
        # The cluster's superuser: the bootstrap step's credential, which no service holds.
        user=settings.db_bootstrap_user,
        password=settings.db_bootstrap_pwd.get_secret_value(),
        connect_timeout=2,
    )


def pg_answers(settings: Settings) -> bool:
    try:
        with pg_connect(settings):
            return True
    except psycopg.OperationalError:
        return False


def initdb(settings: Settings, home: Path, data: Path, owner: dict[str, int]) -> None:
    """A new cluster in `data`, its superuser (DB_BOOTSTRAP_USER) with DB_BOOTSTRAP_PWD passed
    in a 0600 file, never on a command line. The admin role is made by bootstrap.sql, and is
    no superuser."""
    say(f"postgres: initdb into {data}")
    pwfile = home / "pwfile"
    # A new file, never through a link planted in its place: write_private refuses one.
    secret = settings.db_bootstrap_pwd.get_secret_value() + "\n"
    write_private(pwfile, secret, (owner["user"], owner["group"]) if owner else None)
    try:
        subprocess.run(
            [
                pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                settings.db_bootstrap_user,
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
            f"of {settings.db_bootstrap_user} (DB_BOOTSTRAP_USER, DB_BOOTSTRAP_PWD): stop it, "
            "or set DB_HOST_PORT in .env to a free port"
        )
    owner = as_pg_user()
    runtime_dirs()
    if owner:
        private_dir(home, owner["user"], owner["group"])
    else:
        private_dir(home)
    if not (data / "PG_VERSION").exists():
        initdb(settings, home, data, owner)
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
    pid = postmaster_pid(data)
    if pid is None:
        raise StackError(f"PostgreSQL started, but {data / 'postmaster.pid'} names no postmaster")
    write_pidfile("postgres", pid)
    write_private(RUN / "postgres.home", str(home))
    link = LOGS / "postgres.log"
    if not os.path.lexists(link):
        link.symlink_to(log)
    wait_for("postgres", lambda: pg_answers(settings), 30, log)


def bootstrap(settings: Settings, env: dict[str, str]) -> None:
    """Database, schema, roles, grants; idempotent, and it rotates passwords to `.env`'s.

    Connects as the cluster's superuser (DB_BOOTSTRAP_USER): `env` holds its password and the
    three roles' (launch.py's "bootstrap" set), for this step alone."""
    secret = settings.db_bootstrap_pwd.get_secret_value()
    if not secret:
        raise StackError(
            "DB_BOOTSTRAP_PWD is not set in .env: the bootstrap step connects as the cluster's "
            "superuser (DB_BOOTSTRAP_USER); add its password to .env"
        )
    psql_env = dict(env, PGPASSWORD=secret, PGCONNECT_TIMEOUT="5")
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
            settings.db_bootstrap_user,
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


def stop_postgres() -> None:
    """Stop this project's cluster, if its postmaster runs (pg_ctl signals the pid in
    postmaster.pid: postmaster_pid checks first that it is the postmaster)."""
    home = recorded_home()
    if postmaster_pid(home / "data") is None:
        pidfile("postgres").unlink(missing_ok=True)
        return
    owner = pg_user()
    check_dir(home, None if owner is None else owner.pw_uid)
    say("postgres: stopping")
    subprocess.run(
        [pg_bin("pg_ctl"), "-D", str(home / "data"), "-m", "fast", "-w", "stop"],
        cwd=home,
        capture_output=True,
        **as_pg_user(),
    )
    pidfile("postgres").unlink(missing_ok=True)
