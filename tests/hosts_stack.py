"""The rendered project's stack spread over the hosts of hosts_net.py, for test_hosts.py.

PostgreSQL (as the `postgres` user, scram passwords, pg_ctl) and Redis (password, append-only)
run on one host, each on a link of its own so that either can be cut alone. Roles and
migrations come from the project's own entry points (`deploy/local/stack.py bootstrap` and
`migrate`), the workers and the API from the commands the native stack's supervisord runs:
`deploy/local/launch.py worker|api -- ...`, which hands each process its own secrets from
`.env` and no others. Secrets go through files (0600) only: never a command line, never an
environment but their own process's. `runs_in_logs` reads what the workers' logs say ran.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from hosts_net import SUBNET, Host, Network

PG_PORT = 5432
REDIS_PORT = 6379
API_PORT = 8000
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def set_env(project: Path, values: dict[str, str]) -> None:
    """Set `values` in the project's `.env` (its settings file), in place or appended."""
    env_file = project / ".env"
    lines = env_file.read_text().splitlines()
    left = dict(values)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if key in left:
            lines[i] = f"{key}={left.pop(key)}"
    lines += [f"{key}={value}" for key, value in left.items()]
    env_file.write_text("\n".join(lines) + "\n")


def read_env(project: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(project / ".env").items() if v is not None}


def base_env(project: Path) -> dict[str, str]:
    """The environment the project's commands start with: no secret (they read `.env`)."""
    env = {k: v for k, v in os.environ.items() if k in KEEP_ENV}
    env.update(PYTHONPATH=str(project / "src"), PYTHONUNBUFFERED="1")
    return env


def private_file(path: Path, text: str, owner: pwd.struct_passwd | None = None) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def pg_tool(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"{name} not found: install the PostgreSQL server (postgresql)")
    return str(found)


def run(argv: list[str], what: str, **kwargs: object) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return str(done.stdout)


class Servers:
    """PostgreSQL and Redis on `host` (link 0: PostgreSQL, link 1: Redis), under `home`."""

    def __init__(self, net: Network, host: Host, env: dict[str, str]) -> None:
        self.net, self.host, self.env = net, host, env
        self.pg_address, self.redis_address = host.addresses
        self.user = pwd.getpwnam("postgres")
        self.home = Path(tempfile.mkdtemp(prefix="hosts-servers-"))
        os.chmod(self.home, 0o711)  # the cluster's user passes through to its own folder
        self.pg_home = self.home / "postgres"
        self.pg_home.mkdir(mode=0o700)
        os.chown(self.pg_home, self.user.pw_uid, self.user.pw_gid)
        self.redis: subprocess.Popen[bytes] | None = None

    def as_postgres(self, *argv: str) -> list[str]:
        return [*self.net.exec(self.host), "runuser", "-u", "postgres", "--", *argv]

    def start_postgres(self) -> None:
        data = self.pg_home / "data"
        pwfile = private_file(
            self.pg_home / "pwfile", self.env["DB_BOOTSTRAP_PWD"] + "\n", self.user
        )
        try:
            run(
                self.as_postgres(
                    pg_tool("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.env["DB_BOOTSTRAP_USER"],
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-instructions",
                ),
                "initdb",
                cwd=self.pg_home,
            )
        finally:
            pwfile.unlink()
        with (data / "pg_hba.conf").open("a") as hba:  # the other hosts, with passwords
            hba.write(f"host all all {SUBNET}.0/24 scram-sha-256\n")
        options = f"-p {PG_PORT} -c listen_addresses={self.pg_address} -k {self.pg_home}"
        log = self.pg_home / "postgres.log"
        run(
            self.as_postgres(
                pg_tool("pg_ctl"),
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
            ),
            f"pg_ctl start (see {log})",
            cwd=self.pg_home,
        )

    def start_redis(self) -> None:
        home = self.home / "redis"
        home.mkdir(mode=0o700)
        conf = private_file(
            home / "redis.conf",
            f"bind {self.redis_address}\nport {REDIS_PORT}\nprotected-mode yes\n"
            f"requirepass {self.env['REDIS_PASSWORD']}\ndir {home}\nappendonly yes\n"
            f'appendfsync everysec\nsave ""\ndaemonize no\nlogfile {home / "redis.log"}\n',
        )
        server = shutil.which("redis-server")
        if not server:
            raise RuntimeError("redis-server not found: install Redis (redis-server)")
        self.redis = subprocess.Popen([*self.net.exec(self.host), server, str(conf)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = subprocess.run(
                [
                    *self.net.exec(self.host),
                    "redis-cli",
                    "-h",
                    self.redis_address,
                    "-p",
                    str(REDIS_PORT),
                    "ping",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if "NOAUTH" in done.stdout + done.stderr or "PONG" in done.stdout:
                return
            time.sleep(0.2)
        raise RuntimeError(f"redis-server did not answer; see {home / 'redis.log'}")

    def logs(self) -> str:
        out = []
        for log in (self.pg_home / "postgres.log", self.home / "redis" / "redis.log"):
            if log.exists():
                out.append(f"--- {log}\n" + "\n".join(log.read_text().splitlines()[-20:]))
        return "\n".join(out)

    def close(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait(5)
        shutil.rmtree(self.home, ignore_errors=True)


def supervised_commands(python: str, project: Path) -> dict[str, list[str]]:
    """The commands the native stack's supervisord runs (`launch.py worker|api -- ...`), as
    deploy/local/stack.py builds them from `.env` (here: the API on its host's address)."""
    code = (
        "import json, runpy; m = runpy.run_path('deploy/local/stack.py'); "
        "print(json.dumps(m['programs'](m['load_settings']())))"
    )
    out = run([python, "-c", code], "reading the native stack's programs", cwd=project,
              env=base_env(project))  # fmt: skip
    return dict(json.loads(out.splitlines()[-1]))


class Service:
    """A worker or the API on its host, started as the native stack starts it (launch.py)."""

    def __init__(
        self, net: Network, host: Host, project: Path, command: list[str], role: str, log: Path
    ) -> None:
        self.host, self.role, self.log = host, role, log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*net.exec(host), *command],
                cwd=project,
                env=base_env(project),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The service's own pid: `ip netns exec` and launch.py both exec, never fork."""
        return self.process.pid

    def environ(self) -> dict[str, str]:
        raw = Path(f"/proc/{self.pid}/environ").read_bytes().split(b"\0")
        return dict(item.decode().split("=", 1) for item in raw if b"=" in item)

    def command_line(self) -> str:
        return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


# --- what the workers' logs say ran ---------------------------------------------------------

GIVE_BACK = re.compile(r"job (\S+): (.*); back to the queue \(no try used\)")


def log_record(line: str) -> dict[str, object]:
    """The JSON object a log line carries (the service's lines are JSON), or {}."""
    at = line.find("{")
    try:
        record = json.loads(line[at:]) if at >= 0 else {}
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def runs_in_logs(logs: list[Path]) -> tuple[Counter[str], Counter[str]]:
    """Per job id: runs of `hello` ("started" lines), and runs given back after their start."""
    started: Counter[str] = Counter()
    given_back: Counter[str] = Counter()
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            record = log_record(line)
            if record.get("job_id") and str(record.get("message")).endswith(": started"):
                started[record["job_id"]] += 1
            back = GIVE_BACK.search(line)
            if back and "start was not recorded" not in back.group(2):
                given_back[back.group(1)] += 1
    return started, given_back
