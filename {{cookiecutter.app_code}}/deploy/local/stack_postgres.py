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
    pidfile,
    port_open,
    say,
    wait_for,
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
    try:  # a new file, never one that is there already or a link planted in its place
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise StackError(
            f"{pwfile} exists already: a failed initdb left it, or someone else put it there; "
            "check and delete it, then run make up again"
        ) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(settings.db_bootstrap_pwd.get_secret_value() + "\n")
    if owner:
        os.chown(pwfile, owner["user"], owner["group"])
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
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if owner:
        os.chown(home, owner["user"], owner["group"])
    if not (data / "PG_VERSION").exists():
        initdb(settings, home, data, owner)
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
