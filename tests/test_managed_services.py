"""A rendered project against "managed" servers: PostgreSQL that accepts only TLS, Redis that
speaks only TLS, and Redis behind a real Sentinel, all started here for the test.

The certificates come from a throwaway CA made with openssl. The project is configured only
through its settings (DB_SSLMODE, DB_SSLROOTCERT, REDIS_SSL, REDIS_SSL_CA_CERTS,
REDIS_SENTINELS, REDIS_SENTINEL_MASTER, FLYWAY_URL parameters), as its README's "Point at a
managed PostgreSQL / Redis" says. Needs initdb/pg_ctl, psql, redis-server and openssl; a
missing one fails the tests.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

MASTER = "mymaster"
PROBE = """
import asyncio, json, os, sys
import psycopg
from arq.connections import create_pool
from {app}.core.config import load_settings
from {app}.db import Database
from {app}.db.pool import Role, conninfo
from {app}.queue import client, connect, deserialize, redis_settings, serialize

SSL = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


async def db(s):
    out = {{}}
    async with Database(s) as database:  # the pools of all three roles, as the services open them
        for role, pool in database.pools.items():
            async with pool.connection() as conn:
                row = await (await conn.execute(SSL)).fetchone()
                out[str(role)] = [row["ssl"], row["version"]]
    return out


async def db_reason(s):
    try:
        await (await psycopg.AsyncConnection.connect(conninfo(s, Role.ADMIN))).close()
    except psycopg.Error as exc:
        return str(exc)


async def queue(s):
    api = await connect(s)  # the API's client
    try:
        await api.set("probe:key", "written by the API client", ex=60)
        worker = await create_pool(  # what arq's worker builds from redis_settings()
            redis_settings(s), job_serializer=serialize, job_deserializer=deserialize
        )
        try:
            return {{"worker_read": (await worker.get("probe:key")).decode()}}
        finally:
            await worker.aclose()
    finally:
        await api.aclose()


async def queue_reason(s):
    arq = client(s)
    try:
        await arq.ping()
    except Exception as exc:
        return f"{{type(exc).__name__}}: {{exc}}"
    finally:
        await arq.aclose()


async def case(kind, env):
    os.environ.update(env)
    s = load_settings()
    try:
        return {{"ok": await (db if kind == "db" else queue)(s)}}
    except Exception as exc:
        reason = await (db_reason if kind == "db" else queue_reason)(s)
        return {{"error": f"{{type(exc).__name__}}: {{exc}}", "reason": reason}}


async def cases(kind, envs):
    answers, saved = [], dict(os.environ)
    for env in envs:
        answers.append(await case(kind, env))
        os.environ.clear()
        os.environ.update(saved)
    return answers


print(json.dumps(asyncio.run(cases(sys.argv[1], json.loads(sys.argv[2])))))
"""


def need(name: str) -> str:
    found = shutil.which(name)
    if found is None and name in ("initdb", "pg_ctl"):
        versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        found = str(versions[-1]) if versions else None
    if found is None:
        pytest.fail(f"{name} is not installed: .ci/run installs it (apt-get)", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, log: Path, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on {port} after {within:.0f} s:\n{log.read_text()[-2000:]}")


def private(path: Path, text: str) -> Path:
    """A 0600 file: server configs hold passwords, which never go on a command line."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


@dataclass
class Servers:
    project: Path
    env: dict[str, str]  # the bake's .env
    ca: Path
    other_ca: Path
    pg_port: int
    tls_redis_port: int
    master_port: int
    sentinel_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def certificates(root: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, a server certificate it signed for localhost and 127.0.0.1, and another CA."""
    openssl = need("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE"]
    ca_ext += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    for name in ("ca", "other-ca"):
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-new",
                *ec,
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.pem",
                "-days",
                "2",
                "-subj",
                f"/CN={name}",
                *ca_ext,
            ],
            cwd=root,
            check=True,
            capture_output=True,
        )
    (root / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    for argv in (
        [
            "req",
            "-new",
            *ec,
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        [
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ):
        subprocess.run([openssl, *argv], cwd=root, check=True, capture_output=True)
    return root / "ca.pem", root / "other-ca.pem", root / "server.pem", root / "server.key"


def start_tls_postgres(root: Path, env: dict[str, str], cert: Path, key: Path) -> int:
    """initdb with the bake's bootstrap superuser and password (the provider's master user);
    TLS only (hostssl), scram passwords."""
    initdb, pg_ctl = need("initdb"), need("pg_ctl")
    owner: dict[str, Any] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        owner = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    home = root / "pg"
    home.mkdir(mode=0o700)
    pwfile = private(home / "pwfile", env["DB_BOOTSTRAP_PWD"] + "\n")
    for path in (cert, key):
        shutil.copy(path, home / path.name)
    if owner:
        for path in (home, pwfile, home / cert.name, home / key.name):
            os.chown(path, owner["user"], owner["group"])
    subprocess.run(
        [
            initdb,
            "-D",
            str(home / "data"),
            "-U",
            env["DB_BOOTSTRAP_USER"],
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        cwd=home,
        check=True,
        capture_output=True,
        **owner,
    )
    (home / "data" / "pg_hba.conf").write_text(
        "local all all scram-sha-256\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostssl all all ::1/128 scram-sha-256\n"
    )
    port = free_port()
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {home} -c ssl=on "
        f"-c ssl_cert_file={home / cert.name} -c ssl_key_file={home / key.name}"
    )
    started = subprocess.run(
        [pg_ctl, "-D", str(home / "data"), "-l", str(home / "log"), "-o", options, "-w", "start"],
        cwd=home,
        capture_output=True,
        text=True,
        **owner,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    return port


def start_redis(servers: Servers, root: Path, name: str, conf: str, *args: str) -> None:
    home = root / name
    home.mkdir()
    config = private(home / "redis.conf", f'{conf}dir {home}\nlogfile {home / "log"}\nsave ""\n')
    proc = subprocess.Popen([need("redis-server"), str(config), *args], cwd=home)
    servers.procs.append(proc)


@pytest.fixture(scope="module")
def servers(cookies_session) -> Iterator[Servers]:
    result = cookies_session.bake(extra_context={"app_code": "mngd"})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    env = dict(
        line.split("=", 1)
        for line in (project / ".env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    root = Path(tempfile.mkdtemp(prefix="managed-services-"))
    root.chmod(0o755)  # PostgreSQL's user reaches its folder inside
    ca, other_ca, cert, key = certificates(root)
    pg_port = start_tls_postgres(root, env, cert, key)
    password = env["REDIS_PASSWORD"]
    servers = Servers(project, env, ca, other_ca, pg_port, free_port(), free_port(), free_port())
    try:
        start_redis(
            servers,
            root,
            "redis-tls",
            f"port 0\nbind 127.0.0.1 127.0.0.2\ntls-port {servers.tls_redis_port}\n"
            f"tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n"
            f"tls-auth-clients no\nrequirepass {password}\n",
        )
        start_redis(
            servers,
            root,
            "master",
            f"port {servers.master_port}\nbind 127.0.0.1\nrequirepass {password}\n",
        )
        wait_port(servers.master_port, root / "master" / "log")
        start_redis(
            servers,
            root,
            "sentinel",
            f"port {servers.sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {servers.master_port} 1\n"
            f"sentinel auth-pass {MASTER} {password}\n",
            "--sentinel",
        )
        wait_port(servers.tls_redis_port, root / "redis-tls" / "log")
        wait_port(servers.sentinel_port, root / "sentinel" / "log")
        yield servers
    finally:
        for proc in servers.procs:
            proc.terminate()
        for proc in servers.procs:
            proc.wait(timeout=10)
        subprocess.run(
            [need("pg_ctl"), "-D", str(root / "pg" / "data"), "-m", "immediate", "stop"],
            cwd=root,
            capture_output=True,
            check=False,
            **({"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}),
        )
        shutil.rmtree(root, ignore_errors=True)


def child_env(servers: Servers, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    return {**env, "PYTHONPATH": "src", **overrides}


def probe(
    servers: Servers, python: str, kind: str, *envs: dict[str, str]
) -> list[dict[str, object]]:
    """Run the project's own code (settings, pools, clients) in a fresh interpreter, once per
    environment; returns what each did: {"ok": ...} or {"error": ..., "reason": ...}."""
    done = subprocess.run(
        [python, "-c", PROBE.format(app="mngd"), kind, json.dumps(envs)],
        cwd=servers.project,
        env=child_env(servers),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers: list[dict[str, object]] = json.loads(done.stdout)
    return answers


def tls_db(servers: Servers, **env: str) -> dict[str, str]:
    return {
        "DB_HOST": "localhost",
        "DB_HOST_PORT": str(servers.pg_port),
        "DB_SSLMODE": "verify-full",
        "DB_SSLROOTCERT": str(servers.ca),
        "DB_CONNECT_TIMEOUT": "0.5",  # a refused connection fails within a second
        **env,
    }


def test_postgres_over_verified_tls_for_every_role(servers: Servers, project_python: str) -> None:
    # The roles the pools log in as: bootstrap as the admin (TLS through psql's PGSSLMODE).
    bootstrap = subprocess.run(
        ["make", "bootstrap", f"PYTHON={project_python}", "DOCKER="],
        cwd=servers.project,
        env=child_env(
            servers,
            **tls_db(servers),
            PGSSLMODE="verify-full",
            PGSSLROOTCERT=str(servers.ca),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr
    [answer] = probe(servers, project_python, "db", tls_db(servers))
    assert answer.get("ok"), answer
    roles = answer["ok"]
    assert isinstance(roles, dict) and set(roles) == {"admin", "data", "app"}
    assert all(ssl is True and version.startswith("TLS") for ssl, version in roles.values())


def test_postgres_refuses_a_wrong_ca_and_plain_connections(
    servers: Servers, project_python: str
) -> None:
    wrong_ca, plain = probe(
        servers,
        project_python,
        "db",
        tls_db(servers, DB_SSLROOTCERT=str(servers.other_ca)),
        tls_db(servers, DB_SSLMODE="disable", DB_SSLROOTCERT=""),
    )
    assert "DatabaseUnavailable" in str(wrong_ca.get("error")), wrong_ca
    assert "DB_SSLMODE=verify-full" in str(wrong_ca["error"])
    assert "certificate verify failed" in str(wrong_ca["reason"]), wrong_ca
    assert "DatabaseUnavailable" in str(plain.get("error")), plain
    assert "no encryption" in str(plain["reason"]), plain  # pg_hba: hostssl only


def tls_redis(servers: Servers, **env: str) -> dict[str, str]:
    return {
        "REDIS_HOST": "localhost",
        "REDIS_HOST_PORT": str(servers.tls_redis_port),
        "REDIS_SSL": "true",
        "REDIS_SSL_CA_CERTS": str(servers.ca),
        **env,
    }


def test_redis_over_verified_tls_for_the_api_and_the_worker(
    servers: Servers, project_python: str
) -> None:
    good, wrong_ca, wrong_host, plain = probe(
        servers,
        project_python,
        "redis",
        tls_redis(servers),
        tls_redis(servers, REDIS_SSL_CA_CERTS=str(servers.other_ca)),
        tls_redis(servers, REDIS_HOST="127.0.0.2"),  # listens, but not in the certificate
        tls_redis(servers, REDIS_SSL="false", REDIS_SSL_CA_CERTS=""),
    )
    assert good == {"ok": {"worker_read": "written by the API client"}}
    direct = redis.Redis(
        host="127.0.0.1",
        port=servers.tls_redis_port,
        password=servers.env["REDIS_PASSWORD"],
        ssl=True,
        ssl_ca_certs=str(servers.ca),
    )
    assert direct.get("probe:key") == b"written by the API client"
    direct.close()
    for answer, reason in (
        (wrong_ca, "certificate verify failed"),
        (wrong_host, "IP address mismatch"),
        (plain, "Connection"),
    ):
        assert "QueueUnavailable: cannot connect to Redis at" in str(answer.get("error")), answer
        assert reason in str(answer["reason"]), answer
    assert "over TLS" in str(wrong_ca["error"]) and "over TLS" not in str(plain["error"])


def sentinel_env(servers: Servers, **env: str) -> dict[str, str]:
    return {
        "REDIS_SENTINELS": f"127.0.0.1:{servers.sentinel_port}",
        "REDIS_SENTINEL_MASTER": MASTER,
        # Nothing listens here: with Sentinel these are not used.
        "REDIS_HOST": "127.0.0.1",
        "REDIS_HOST_PORT": str(free_port()),
        **env,
    }


def test_redis_through_a_real_sentinel(servers: Servers, project_python: str) -> None:
    answer, unknown = probe(
        servers,
        project_python,
        "redis",
        sentinel_env(servers),
        sentinel_env(servers, REDIS_SENTINEL_MASTER="nope"),
    )
    assert answer == {"ok": {"worker_read": "written by the API client"}}
    master = redis.Redis(port=servers.master_port, password=servers.env["REDIS_PASSWORD"])
    assert master.get("probe:key") == b"written by the API client"
    master.close()
    assert "cannot connect to the master 'nope' of the sentinels" in str(unknown.get("error"))
    assert "MasterNotFoundError" in str(unknown["reason"]), unknown


def readme_block(project: Path, marker: str) -> list[str]:
    """The lines of the README's first ```shell block that contains `marker`."""
    blocks = re.findall(r"```shell\n(.*?)```", (project / "README.md").read_text(), re.S)
    found = next((b for b in blocks if marker in b), None)
    assert found is not None, f"the README has no shell block with {marker!r}"
    return [line for line in found.splitlines() if line.strip()]


def test_the_stack_runs_on_tls_postgres_and_sentinel_redis(
    servers: Servers, project_python: str
) -> None:
    """The README's commands, pasted, against servers of one's own: `make up` reuses them,
    bootstraps and migrates over TLS, the worker and the API find Redis by Sentinel; then the
    native "Rotate secrets" and "Scale workers" commands, `make migrate` and `make logs`.

    (stack.py checks Redis at REDIS_HOST_PORT itself, so here that is the master; the sentinel
    routing alone is proven by test_redis_through_a_real_sentinel.)"""
    project, app, ca = servers.project, "mngd", servers.ca
    api_port = free_port()
    env = child_env(
        servers,
        **tls_db(servers),
        **sentinel_env(servers),
        PGSSLMODE="verify-full",
        PGSSLROOTCERT=str(ca),
        FLYWAY_URL=f"jdbc:postgresql://localhost:{servers.pg_port}/db_{app}"
        f"?sslmode=verify-full&sslrootcert={ca}",
        API_HOST_PORT=str(api_port),
        # The README's `make ...` lines run as written, with the test's interpreter.
        MAKEFLAGS=f"DOCKER= PYTHON={project_python}",
    )
    env["REDIS_HOST_PORT"] = str(servers.master_port)
    # `.venv/bin/python` in the README's scale command: the test's interpreter.
    shim = project / ".venv" / "bin" / "python"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec {project_python} "$@"\n')
    shim.chmod(0o755)

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        logs = "\n".join(p.read_text() for p in (project / ".local/logs").glob("*.log"))
        assert done.returncode == 0, f"$ {command}\n{done.stdout}{done.stderr}\n{logs}"
        return done

    def app_role_login(password: str) -> None:
        psycopg.connect(
            host="localhost",
            port=servers.pg_port,
            dbname="postgres",
            user=f"{app}_app",
            password=password,
            sslmode="verify-full",
            sslrootcert=str(ca),
            connect_timeout=5,
        ).close()

    old = {k: servers.env[k] for k in ("DB_DATA_PWD", "DB_APP_PWD", "API_TOKEN")}
    extra_worker = None
    try:
        sh("make bootstrap")  # the roles, with the passwords of the bake's .env
        app_role_login(old["DB_APP_PWD"])

        # "Rotate secrets", natively: new values (here in the environment, which wins over .env).
        env.update({k: secrets.token_urlsafe(24) for k in old})
        rotate = readme_block(project, "make bootstrap")
        assert rotate == ["make bootstrap", "make down && make up"]
        up = ""
        for line in rotate:
            up += sh(line).stdout
        assert "postgres: reusing the server" in up and "redis: reusing the server" in up
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            app_role_login(old["DB_APP_PWD"])
        app_role_login(env["DB_APP_PWD"])

        # "Scale workers", natively: one more worker beside make up's; and `make migrate`.
        [scale] = readme_block(project, "-m arq")
        pidfile = project / ".local" / "readme-worker.pid"
        log = project / ".local" / "logs" / "readme-worker.log"
        sh(f"exec >{log} 2>&1\n{scale}\necho $! > {pidfile}")
        extra_worker = int(pidfile.read_text())
        assert "is up to date" in sh("make migrate").stdout  # while the worker starts
        master = redis.Redis(port=servers.master_port, password=servers.env["REDIS_PASSWORD"])
        member = f"{socket.gethostname()}:{extra_worker}"
        deadline = time.monotonic() + 20
        while master.zscore(f"{app}:workers", member) is None:
            assert time.monotonic() < deadline, f"the README's extra worker {member} never beat"
            time.sleep(0.1)
        assert master.zcard(f"{app}:workers") >= 2
        master.close()

        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as api:
            assert api.get("/api/v1/ready").status_code == 200
            job = {"job_id": f"managed-{time.time_ns()}", "function": "hello", "params": {}}
            stale = api.post(
                "/api/v1/jobs", headers={"Authorization": f"Bearer {old['API_TOKEN']}"}, json=job
            )
            assert stale.status_code == 401
            submitted = api.post(
                "/api/v1/jobs", headers={"Authorization": f"Bearer {env['API_TOKEN']}"}, json=job
            )
            assert submitted.status_code == 202, submitted.text
            deadline, status = time.monotonic() + 20, None
            while time.monotonic() < deadline and status != "succeeded":
                read = {"Authorization": f"Bearer {servers.env['API_READ_TOKEN']}"}
                status = api.get(f"/api/v1/jobs/{job['job_id']}", headers=read).json()["status"]
                time.sleep(0.1)
            assert status == "succeeded"
        with psycopg.connect(
            host="localhost",
            port=servers.pg_port,
            dbname=f"db_{app}",
            # Other roles' sessions are a superuser's to see (the admin role is none).
            user=servers.env["DB_BOOTSTRAP_USER"],
            password=servers.env["DB_BOOTSTRAP_PWD"],
            sslmode="verify-full",
            sslrootcert=str(ca),
        ) as conn:
            rows = conn.execute(
                "SELECT a.application_name, s.ssl FROM pg_stat_activity a "
                "JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE %s",
                [f"{app}-%"],
            ).fetchall()
        assert {name for name, _ in rows} >= {f"{app}-app", f"{app}-data"}
        assert all(ssl for _, ssl in rows)

        # `make logs` follows the logs until stopped.
        follow = subprocess.Popen(
            ["make", "logs"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        time.sleep(0.5)
        os.killpg(follow.pid, signal.SIGTERM)
        followed = follow.communicate(timeout=10)[0].decode()
        assert "==> .local/logs/api.log <==" in followed and "Uvicorn running" in followed
    finally:
        if extra_worker is not None:
            os.kill(extra_worker, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and Path(f"/proc/{extra_worker}").exists():
                time.sleep(0.1)
        down = subprocess.run(
            ["make", "down"], cwd=project, env=env, capture_output=True, text=True, check=False
        )
    assert down.returncode == 0, down.stdout + down.stderr
