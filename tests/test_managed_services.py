"""A rendered project against "managed" servers: PostgreSQL that accepts only TLS, Redis that
speaks only TLS, and Redis behind a real Sentinel, all started here for the test
(managed_servers.py).

The project is configured only through its settings (DB_SSLMODE, DB_SSLROOTCERT, REDIS_SSL,
REDIS_SSL_CA_CERTS, REDIS_SENTINELS, REDIS_SENTINEL_MASTER, FLYWAY_URL parameters), as its
README's "Point at a managed PostgreSQL / Redis" says. Needs initdb/pg_ctl, psql, redis-server
and openssl; a missing one fails the tests.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from helpers import TEMPLATE, bake, clean_env, readme_block, shell
from managed_servers import MASTER, Servers, free_port, managed_servers

PROBE = TEMPLATE / "tests" / "programs" / "managed_probe.py"
APP = "mngd"


@pytest.fixture(scope="module")
def servers(cookies_session) -> Iterator[Servers]:
    with managed_servers(bake(cookies_session, {"app_code": APP})) as running:
        yield running


def child_env(servers: Servers, **overrides: str) -> dict[str, str]:
    return clean_env(PYTHONPATH="src", **overrides)


def probe(
    servers: Servers, python: str, kind: str, *envs: dict[str, str]
) -> list[dict[str, object]]:
    """Run the project's own code (settings, pools, clients) in a fresh interpreter, once per
    environment (programs/managed_probe.py); returns what each did: {"ok": ...} or
    {"error": ..., "reason": ...}."""
    done = subprocess.run(
        [python, str(PROBE), APP, kind, json.dumps(envs)],
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


def stack_env(servers: Servers, python: str, api_port: int) -> dict[str, str]:
    """The environment the README's commands run in: the managed servers' settings (TLS
    PostgreSQL, Redis by Sentinel), and `make` with the test's interpreter."""
    ca = servers.ca
    env = child_env(
        servers,
        **tls_db(servers),
        **sentinel_env(servers),
        PGSSLMODE="verify-full",
        PGSSLROOTCERT=str(ca),
        FLYWAY_URL=f"jdbc:postgresql://localhost:{servers.pg_port}/db_{APP}"
        f"?sslmode=verify-full&sslrootcert={ca}",
        API_HOST_PORT=str(api_port),
        # The README's `make ...` lines run as written, with the test's interpreter.
        MAKEFLAGS=f"DOCKER= PYTHON={python}",
    )
    # stack.py checks Redis at REDIS_HOST_PORT itself: here that is the master.
    env["REDIS_HOST_PORT"] = str(servers.master_port)
    return env


def python_shim(project: Path, python: str) -> None:
    """`.venv/bin/python` in the README's scale command: the test's interpreter."""
    shim = project / ".venv" / "bin" / "python"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec {python} "$@"\n')
    shim.chmod(0o755)


def stack_logs(project: Path) -> str:
    return "\n".join(p.read_text() for p in (project / ".local/logs").glob("*.log"))


def app_role_login(servers: Servers, password: str) -> None:
    psycopg.connect(
        host="localhost",
        port=servers.pg_port,
        dbname="postgres",
        user=f"{APP}_app",
        password=password,
        sslmode="verify-full",
        sslrootcert=str(servers.ca),
        connect_timeout=5,
    ).close()


def shell_lines(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip()]


def rotate_secrets(servers: Servers, env: dict[str, str], sh: Callable, old: dict) -> None:
    """The README's "Rotate secrets", natively: new values (here in the environment, which wins
    over .env), `make bootstrap`, `make down && make up`; the old app password stops working."""
    project = servers.project
    env.update({k: secrets.token_urlsafe(24) for k in old})
    rotate = shell_lines(readme_block(project, "make bootstrap"))
    assert rotate == ["make bootstrap", "make down && make up"]
    up = "".join(sh(line).stdout for line in rotate)
    assert "postgres: reusing the server" in up and "redis: reusing the server" in up
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        app_role_login(servers, old["DB_APP_PWD"])
    app_role_login(servers, env["DB_APP_PWD"])


def scale_workers(servers: Servers, sh: Callable) -> int:
    """The README's "Scale workers", natively: one more worker beside make up's, which beats
    in the workers' set; `make migrate` meanwhile. Returns its pid."""
    project = servers.project
    [scale] = shell_lines(readme_block(project, "-m arq"))
    pidfile = project / ".local" / "readme-worker.pid"
    log = project / ".local" / "logs" / "readme-worker.log"
    sh(f"exec >{log} 2>&1\n{scale}\necho $! > {pidfile}")
    extra_worker = int(pidfile.read_text())
    assert "is up to date" in sh("make migrate").stdout  # while the worker starts
    master = redis.Redis(port=servers.master_port, password=servers.env["REDIS_PASSWORD"])
    member = f"{socket.gethostname()}:{extra_worker}"
    deadline = time.monotonic() + 20
    while master.zscore(f"{APP}:workers", member) is None:
        assert time.monotonic() < deadline, f"the README's extra worker {member} never beat"
        time.sleep(0.1)
    assert master.zcard(f"{APP}:workers") >= 2
    master.close()
    return extra_worker


def submit_with_rotated_token(servers: Servers, env: dict[str, str], old_token: str) -> None:
    """The old token is refused; the new one submits a job that the workers run."""
    api_port = env["API_HOST_PORT"]
    with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as api:
        assert api.get("/api/v1/ready").status_code == 200
        job = {"job_id": f"managed-{time.time_ns()}", "function": "hello", "params": {}}
        stale = api.post("/api/v1/jobs", headers={"Authorization": f"Bearer {old_token}"}, json=job)
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


def assert_sessions_use_tls(servers: Servers) -> None:
    """The app and data roles' sessions (the API's and the worker's) are all on TLS."""
    with psycopg.connect(
        host="localhost",
        port=servers.pg_port,
        dbname=f"db_{APP}",
        # Other roles' sessions are a superuser's to see (the admin role is none).
        user=servers.env["DB_BOOTSTRAP_USER"],
        password=servers.env["DB_BOOTSTRAP_PWD"],
        sslmode="verify-full",
        sslrootcert=str(servers.ca),
    ) as conn:
        rows = conn.execute(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a "
            "JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE %s",
            [f"{APP}-%"],
        ).fetchall()
    assert {name for name, _ in rows} >= {f"{APP}-app", f"{APP}-data"}
    assert all(ssl for _, ssl in rows)


def assert_make_logs_follows(project: Path, env: dict[str, str]) -> None:
    """`make logs` follows the logs until stopped."""
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


def stop_worker(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)


def test_the_stack_runs_on_tls_postgres_and_sentinel_redis(
    servers: Servers, project_python: str
) -> None:
    """The README's commands, pasted, against servers of one's own: `make up` reuses them,
    bootstraps and migrates over TLS, the worker and the API find Redis by Sentinel; then the
    native "Rotate secrets" and "Scale workers" commands, `make migrate` and `make logs`.

    (stack.py checks Redis at REDIS_HOST_PORT itself, so here that is the master; the sentinel
    routing alone is proven by test_redis_through_a_real_sentinel.)"""
    project = servers.project
    env = stack_env(servers, project_python, free_port())
    python_shim(project, project_python)
    sh = shell(project, env, timeout=180, explain=lambda: stack_logs(project))
    old = {k: servers.env[k] for k in ("DB_DATA_PWD", "DB_APP_PWD", "API_TOKEN")}
    extra_worker = None
    try:
        sh("make bootstrap")  # the roles, with the passwords of the bake's .env
        app_role_login(servers, old["DB_APP_PWD"])
        rotate_secrets(servers, env, sh, old)
        extra_worker = scale_workers(servers, sh)
        submit_with_rotated_token(servers, env, old["API_TOKEN"])
        assert_sessions_use_tls(servers)
        assert_make_logs_follows(project, env)
    finally:
        if extra_worker is not None:
            stop_worker(extra_worker)
        down = subprocess.run(
            ["make", "down"], cwd=project, env=env, capture_output=True, text=True, check=False
        )
    assert down.returncode == 0, down.stdout + down.stderr
