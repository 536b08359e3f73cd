"""Nobody in who does not belong, no code from Redis, no secret where it could leak.

Covered elsewhere, not repeated here: what each database role is refused (DDL, DELETE, other
schemas: tests/integration/test_db.py), secrets in the cookiecutter replay file (the template's
own tests), and the status page escaping every value (tests/browser).
"""

from __future__ import annotations

import json
import pickle
import stat
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest
import redis

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import ROOT, Ledger, secrets_of

pytestmark = pytest.mark.reliability


# --- the queue runs JSON, never pickle -------------------------------------------------------


class _Touch:
    """Unpickling this creates `path` (pickle calls open(path, "w")): code run from data."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def pickled_job(marker: Path) -> bytes:
    """arq's own job format (function, args, kwargs, try, enqueue time), pickled, with a bomb."""
    job = {"f": "hello", "a": [_Touch(marker)], "k": {}, "t": 1, "et": int(time.time() * 1000)}
    return pickle.dumps(job)


def test_a_pickle_written_into_redis_does_not_run(
    stack: ModuleType,
    settings: Settings,
    redis_db: redis.Redis,
    ledger: Ledger,
    job_id: Any,
    tmp_path: Path,
) -> None:
    control = tmp_path / "control"
    pickle.loads(pickled_job(control))  # noqa: S301 - proves the payload is live
    assert control.exists(), "the payload does not work: the test would prove nothing"

    marker = tmp_path / "pwned"
    jid = job_id("pickle")
    redis_db.set(f"arq:job:{jid}", pickled_job(marker), px=60_000)
    redis_db.zadd(settings.queue_name, {jid: int(time.time() * 1000)})

    deadline = time.monotonic() + 15
    while redis_db.zscore(settings.queue_name, jid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert redis_db.zscore(settings.queue_name, jid) is None, "the worker never took the job"
    assert not marker.exists(), "the worker unpickled the job: code from Redis ran"

    result = json.loads(redis_db.get(f"arq:result:{jid}") or b"{}")  # JSON, not pickle
    assert result.get("s") is False, result
    assert "DeserializationError" in str(result.get("r")), result
    log = (stack.LOGS / "worker.log").read_text(errors="replace")
    assert f"deserializing job {jid} failed" in log
    assert ledger.job(jid) is None
    assert stack.read_pid("worker"), "the worker died"


# --- Redis and PostgreSQL let in only who has the password --------------------------------


@pytest.mark.parametrize("password", [None, "not-the-password"], ids=["none", "wrong"])
def test_redis_refuses_clients_without_the_password(
    settings: Settings, password: str | None
) -> None:
    client = redis.Redis(
        host=settings.redis_host, port=settings.redis_port, password=password, socket_timeout=2
    )
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.get(settings.queue_name)
    client.close()


def test_redis_listens_on_localhost_with_protected_mode(redis_db: redis.Redis) -> None:
    assert redis_db.config_get("bind")["bind"] == "127.0.0.1"
    assert redis_db.config_get("protected-mode")["protected-mode"] == "yes"
    assert redis_db.config_get("requirepass")["requirepass"]


def test_postgres_stores_scram_verifiers_and_accepts_nothing_weaker(
    settings: Settings, ledger: Ledger
) -> None:
    roles = [settings.db_admin_user, settings.db_data_user, settings.db_app_user]
    rows = ledger.rows(
        "SELECT rolname, rolpassword LIKE 'SCRAM-SHA-256$%%' AS scram FROM pg_authid "
        "WHERE rolname = ANY(%s)",
        [roles],
        superuser=True,  # pg_authid is the superuser's to read
    )
    assert {r["rolname"]: r["scram"] for r in rows} == dict.fromkeys(roles, True)
    assert ledger.one("SHOW password_encryption")["password_encryption"] == "scram-sha-256"
    weaker = ledger.rows(
        "SELECT line_number, type, auth_method FROM pg_hba_file_rules "
        "WHERE auth_method NOT IN ('scram-sha-256', 'reject')",
        superuser=True,
    )
    assert weaker == [], f"pg_hba.conf lets these in without a scram password: {weaker}"


@pytest.mark.parametrize("role", ["admin", "data", "app"])
def test_postgres_refuses_a_wrong_password(settings: Settings, role: str) -> None:
    user = getattr(settings, f"db_{role}_user")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=settings.db_host,
            port=settings.db_port,
            dbname=settings.db_name,
            user=user,
            password="not-the-password",
            connect_timeout=3,
        )


# --- the API: the token, and the headers -----------------------------------------------------


def test_every_mutating_operation_requires_the_token(
    api: httpx.Client, read_auth: dict[str, str]
) -> None:
    spec = api.get("/openapi.json").json()
    mutating = [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method not in {"get", "head", "options"}
    ]
    assert ("POST", "/api/v1/jobs") in mutating
    for method, path in mutating:
        operation = spec["paths"][path][method.lower()]
        assert operation.get("security"), f"{method} {path} declares no security scheme"
        url = path.replace("{job_id}", "some-job")
        body = {"job_id": "no-token-probe", "function": "hello", "params": {}}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Token x"}):
            response = api.request(method, url, json=body, headers=headers)
            assert response.status_code == 401, f"{method} {path} {headers}: {response.text}"
            assert response.headers["www-authenticate"] == "Bearer"
        refused = api.request(method, url, json=body, headers=read_auth)
        assert refused.status_code == 403, f"{method} {path} with the read token: {refused.text}"
    assert api.get("/api/v1/jobs/no-token-probe", headers=read_auth).status_code == 404


def test_every_read_of_data_requires_a_token(api: httpx.Client) -> None:
    """Everything but /health, /api/v1/ready and the documents needs a token; readiness
    without one says ok or down and nothing of what is wrong (no host, port or role)."""
    spec = api.get("/openapi.json").json()
    open_paths = {"/health", "/api/v1/ready"}
    reads = [path for path, ops in spec["paths"].items() if "get" in ops]
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/info"} <= set(reads)
    for path in set(reads) - open_paths:
        assert spec["paths"][path]["get"].get("security"), f"GET {path} declares no scheme"
        response = api.get(path.replace("{job_id}", "some-job"))
        assert response.status_code == 401, f"GET {path}: {response.text}"
    terse = api.get("/api/v1/ready").json()
    assert set(terse["components"].values()) <= {"ok", "down"}, terse


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/health", None),
        ("GET", "/api/v1/jobs?limit=1", None),
        ("GET", "/api/v1/jobs/never-submitted", None),  # 404
        ("GET", "/openapi.json", None),
        ("POST", "/api/v1/jobs", {"job_id": "x"}),  # 401 (no token)
        ("DELETE", "/api/v1/jobs", None),  # 405
        ("POST", "/api/v1/jobs", "x" * 200_000),  # 413
    ],
)
def test_api_answers_carry_security_headers(
    api: httpx.Client, method: str, path: str, body: Any
) -> None:
    response = (
        api.request(method, path, json=body) if body is not None else api.request(method, path)
    )
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    csp = response.headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp


def test_a_page_keeps_its_own_policy(api: httpx.Client, page_api: httpx.Client) -> None:
    """The status page sets its own CSP (scripts from 'self', forms to 'self'); the middleware
    must not replace it. (The docs pages set their own too: tests/browser/test_api_docs.py.)"""
    for page in (page_api.get("/app/v1/status"), api.get("/app/v1/login")):
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "form-action 'self'" in page.headers["content-security-policy"]
        assert "default-src 'none'" not in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
    docs = api.get("/docs")
    assert docs.status_code == 200
    assert "default-src 'none'" not in docs.headers.get("content-security-policy", "")
    assert docs.headers["x-content-type-options"] == "nosniff"


# --- secrets stay secret ---------------------------------------------------------------------


def test_env_file_stays_0600(stack: ModuleType) -> None:
    assert stat.S_IMODE((ROOT / ".env").stat().st_mode) == 0o600
    conf = stack.STATE / "redis" / "redis.conf"  # holds requirepass
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600


def test_no_secret_in_any_log(stack: ModuleType, settings: Settings) -> None:
    logs = sorted(stack.LOGS.glob("*.log"))
    assert {"api.log", "worker.log", "redis.log", "postgres.log"} <= {p.name for p in logs}
    found = [
        f"{name} in {log.name}"
        for log in logs
        for name, secret in secrets_of(settings).items()
        if secret in log.resolve().read_text(errors="replace")
    ]
    assert found == []


def test_no_secret_on_any_command_line(stack: ModuleType, settings: Settings) -> None:
    """What `ps` shows of every process on the machine, the stack's own among them."""
    secrets = secrets_of(settings)
    seen: set[int] = set()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        seen.add(int(proc.name))
        found += [f"{name} in pid {proc.name}" for name, s in secrets.items() if s in cmdline]
    assert found == []
    ours = {stack.read_pid(name) for name in stack.SERVICES}
    assert None not in ours and ours <= seen, "the stack's processes were not all checked"


def test_no_secret_in_error_answers_or_ledger_errors(
    api: httpx.Client,
    auth: dict[str, str],
    read_auth: dict[str, str],
    settings: Settings,
    ledger: Ledger,
    error_answers: list[httpx.Response],
) -> None:
    """Fresh error answers of every kind, those the suite collected (the outages' 503s among
    them, when it ran whole), and the errors the worker wrote to the ledger."""
    token = settings.api_token.get_secret_value()
    fresh = [
        api.post("/api/v1/jobs", json={"job_id": "x", "function": "hello"}),
        api.post("/api/v1/jobs", json={}, headers={"Authorization": f"Bearer {token}x"}),
        api.post("/api/v1/jobs", content=b"{", headers=auth),
        api.post("/api/v1/jobs", json={"job_id": "a b", "function": "nope"}, headers=auth),
        api.post("/api/v1/jobs", content=b"x" * 200_000, headers=auth),
        api.get("/api/v1/jobs/cron:%00", headers=read_auth),
        api.get("/api/v1/jobs?before=garbage", headers=read_auth),
        api.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}x"}),
        api.post("/api/v1/jobs", json={"job_id": "x", "function": "hello"}, headers=read_auth),
        api.delete("/api/v1/jobs"),
        api.post("/app/v1/login", data={"token": token + "x", "csrf_token": "x"}),
        api.post("/app/v1/logout", data={"csrf_token": "x"}),
    ]
    answers = [r.text for r in [*fresh, *error_answers]]
    answers += [
        str(r["error"]) for r in ledger.rows("SELECT error FROM job WHERE error IS NOT NULL")
    ]
    assert len(answers) >= len(fresh)
    leaks = {name for name, secret in secrets_of(settings).items() for t in answers if secret in t}
    assert leaks == set()
