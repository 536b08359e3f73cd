"""Fixtures for the reliability suite: faults, bad input and security against the running stack.

These tests stop and start the native stack's own PostgreSQL and Redis, kill workers and start
extra ones, through `deploy/local/stack.py` (pid files in `.local/run/`, `pg_ctl` as the
`postgres` user). Each test starts from a healthy stack and leaves one behind: whatever it
stopped is started again in a finalizer, and the next test checks readiness first. A stack that
is not running fails the tests (`make up`); nothing is skipped.

`make test-reliability` runs them (`pytest -m reliability tests/reliability`); `make test`
leaves them out.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest
import redis
from psycopg.rows import dict_row

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.core.heartbeat import workers_key

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "{{ cookiecutter.app_code }}"
READY_WAIT_SECONDS = 30.0

# Modules run in this order (cheap and harmless first, the log and secret scan last).
MODULE_ORDER = (
    "test_bad_input",
    "test_duplicates",
    "test_workers",
    "test_ledger_truth",
    "test_outages",
    "test_hand_over",
    "test_scale",
    "test_tracing",
    "test_page_cost",
    "test_fuzz",
    "test_least_privilege",
    "test_security",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = Path(str(item.fspath)).stem
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=rank)  # stable: keeps the order within a module


def _load_stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"{PACKAGE}_stack", ROOT / "deploy/local/stack.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STACK = _load_stack()


@pytest.fixture(scope="session")
def stack() -> ModuleType:
    """deploy/local/stack.py as a module: start_postgres, stop_service, read_pid, ..."""
    return STACK


# --- the stack's health, before and after every test -----------------------------------------


_PLAIN = httpx.Client(timeout=3.0)  # one client: building one costs ~0.2 s (TLS context)


def ready(settings: Settings) -> httpx.Response | None:
    """Readiness with the read token: its answer names what is wrong, for the messages here."""
    token = settings.api_read_token.get_secret_value()
    try:
        return _PLAIN.get(
            f"http://127.0.0.1:{settings.api_port}/api/v1/ready",
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.HTTPError:
        return None


def wait_until_ready(settings: Settings, within: float = READY_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + within
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        last = ready(settings)
        if last is not None and last.status_code == 200:
            return
        time.sleep(0.25)
    seen = last.text if last is not None else "no answer"
    pytest.fail(f"the stack is not ready after {within:.0f} s: {seen}", pytrace=False)


def restore(stack: ModuleType, settings: Settings) -> None:
    """Start whatever a test stopped, resume a frozen Redis, then wait for readiness.

    supervisord brings back a worker or an API that exited by itself; one a test stopped
    (stack.stop_service) stays stopped until start_worker / start_api here, which also wait
    for one that supervisord is still starting.
    """
    redis_pid = stack.read_pid("redis")
    if redis_pid:
        os.kill(redis_pid, signal.SIGCONT)
    if not stack.pg_answers(settings):
        stack.start_postgres(settings)
    if not stack.redis_answers(settings):
        stack.start_redis(settings)
    env = stack.child_env(settings)
    if stack.read_pid("worker") is None:
        stack.start_worker(settings, env)
    if stack.read_pid("api") is None or not stack.api_healthy(settings):
        stack.start_api(settings, env)
    wait_until_ready(settings)


@pytest.fixture(autouse=True)
def healthy_stack(stack: ModuleType, settings: Settings) -> Iterator[None]:
    """Fail at once on a stack that is not up; put the stack back after the test.

    The worker and the API count as started when supervisord runs them (stack.read_pid).
    """
    missing = [name for name in stack.SERVICES if stack.read_pid(name) is None]
    answer = ready(settings)
    if missing or answer is None or answer.status_code != 200:
        detail = answer.text if answer is not None else "the API does not answer"
        pytest.fail(
            f"the stack is not running or not ready (not started: {missing or 'none'}; "
            f"readiness: {detail}): start it with `make up`",
            pytrace=False,
        )
    yield
    restore(stack, settings)


@pytest.fixture(scope="session", autouse=True)
def error_answers(api: httpx.Client) -> list[httpx.Response]:
    """Every error answer the shared API client receives this session, for the secret scan
    (test_security, which runs last)."""
    seen: list[httpx.Response] = []

    def keep(response: httpx.Response) -> None:
        if response.status_code >= 400:
            response.read()
            seen.append(response)

    api.event_hooks["response"].append(keep)
    return seen


# --- direct access for the checks: SQL as the admin role, Redis, the logs ---------------------


@dataclass
class Ledger:
    """Short-lived admin connections, so a test can read the truth while pools recover."""

    settings: Settings
    stack: ModuleType

    def rows(
        self, sql: str, params: Any = None, *, superuser: bool = False
    ) -> list[dict[str, Any]]:
        """As the admin role; `superuser`: as the cluster's bootstrap superuser."""
        s = self.settings
        user, secret = (
            (s.db_bootstrap_user, s.db_bootstrap_pwd)
            if superuser
            else (s.db_admin_user, s.db_admin_pwd)
        )
        with psycopg.connect(
            host=self.settings.db_host,
            port=self.settings.db_port,
            dbname=self.settings.db_name,
            user=user,
            password=secret.get_secret_value(),
            options=f"-c search_path={self.settings.db_schema}",
            connect_timeout=3,
            row_factory=dict_row,
        ) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def one(self, sql: str, params: Any = None) -> dict[str, Any]:
        rows = self.rows(sql, params)
        assert len(rows) == 1, rows
        return rows[0]

    def job(self, job_id: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT * FROM job WHERE job_id = %s", [job_id])
        return rows[0] if rows else None

    def count(self, table: str, job_ids: list[str]) -> int:
        assert table in {"job", "hello"}
        sql = f"SELECT count(*) AS n FROM {table} WHERE job_id = ANY(%s)"
        return int(self.one(sql, [job_ids])["n"])

    def wait_for(
        self, job_ids: list[str], within: float, statuses: tuple[str, ...] = ("succeeded",)
    ) -> list[dict[str, Any]]:
        """Every job's ledger row once all are in `statuses`; fails with the stragglers."""
        deadline = time.monotonic() + within
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.rows("SELECT * FROM job WHERE job_id = ANY(%s)", [job_ids])
            if len(rows) == len(job_ids) and all(r["status"] in statuses for r in rows):
                return rows
            time.sleep(0.25)
        found = {r["job_id"]: r["status"] for r in rows}
        late = {j: found.get(j, "no ledger row") for j in job_ids if found.get(j) not in statuses}
        sample = dict(list(late.items())[:5])
        pytest.fail(
            f"{len(late)} of {len(job_ids)} jobs not {statuses} after {within:.0f} s: {sample}"
        )


@pytest.fixture
def ledger(settings: Settings, stack: ModuleType) -> Ledger:
    return Ledger(settings, stack)


@pytest.fixture
def redis_db(settings: Settings, stack: ModuleType) -> Iterator[redis.Redis]:
    client: redis.Redis = stack.redis_client(settings)
    yield client
    client.close()


def secrets_of(settings: Settings) -> dict[str, str]:
    values = {
        "API_TOKEN": settings.api_token,
        "API_READ_TOKEN": settings.api_read_token,
        "SESSION_SECRET": settings.session_secret,
        "DB_BOOTSTRAP_PWD": settings.db_bootstrap_pwd,
        "DB_ADMIN_PWD": settings.db_admin_pwd,
        "DB_DATA_PWD": settings.db_data_pwd,
        "DB_APP_PWD": settings.db_app_pwd,
        "REDIS_PASSWORD": settings.redis_password,
    }
    return {name: secret.get_secret_value() for name, secret in values.items()}


# --- processes the tests start themselves ----------------------------------------------------


@dataclass
class Process:
    """A process a test started with stack.spawn: pid file in .local/run, log in .local/logs."""

    name: str
    pid: int
    log: Path

    @property
    def worker_id(self) -> str:
        """The id a worker records in the ledger and its heartbeat."""
        return f"{socket.gethostname()}:{self.pid}"

    def alive(self) -> bool:
        return bool(STACK.alive(self.pid))

    def wait_gone(self, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while self.alive():
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} (pid {self.pid}) is still running after {within:.0f} s")
            time.sleep(0.05)


@pytest.fixture
def spawn(stack: ModuleType, settings: Settings) -> Iterator[Callable[..., Process]]:
    """Start processes of the test's own (`test-<what>-N`), stopped when the test ends.

    Each has a pid file in .local/run (so `make down` stops a leftover too) and a log in
    .local/logs. `env` adds to (or overrides) the services' environment.
    """
    started: list[Process] = []

    def start(what: str, argv: list[str], **env: str) -> Process:
        name = f"test-{what}-{len(started) + 1}"
        pid = stack.spawn(name, argv, dict(stack.child_env(settings), **env))
        started.append(process := Process(name, pid, stack.LOGS / f"{name}.log"))
        return process

    yield start
    for process in started:
        if process.alive():
            stack.stop_pid(process.name, process.pid, timeout=10)
        stack.pidfile(process.name).unlink(missing_ok=True)


@pytest.fixture
def spawn_workers(
    spawn: Callable[..., Process], settings: Settings, redis_db: redis.Redis
) -> Callable[..., list[Process]]:
    """Start `n` extra arq workers, optionally with settings of their own; returns once each
    has sent a heartbeat."""

    def start(n: int, **env: str) -> list[Process]:
        argv = [sys.executable, "-m", "arq", f"{PACKAGE}.worker.main.WorkerSettings"]
        workers = [spawn("worker", argv, **env) for _ in range(n)]
        for worker in workers:
            wait_for_heartbeat(redis_db, settings, worker)
        return workers

    return start


@pytest.fixture
def spawn_worker(spawn_workers: Callable[..., list[Process]]) -> Callable[..., Process]:
    """One extra arq worker (see spawn_workers)."""
    return lambda **env: spawn_workers(1, **env)[0]


def wait_for_heartbeat(client: redis.Redis, settings: Settings, worker: Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not worker.alive():
            pytest.fail(f"{worker.name} exited at start; see {worker.log}")
        if client.zscore(workers_key(settings.app_code), worker.worker_id) is not None:
            return
        time.sleep(0.1)
    pytest.fail(f"{worker.name} sent no heartbeat within 30 s; see {worker.log}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SpawnApi = Callable[..., tuple[Process, httpx.Client]]
SpawnWorker = Callable[..., Process]
SpawnWorkers = Callable[..., list[Process]]


@pytest.fixture
def spawn_api(spawn: Callable[..., Process]) -> Iterator[SpawnApi]:
    """Start an API of the test's own on a free port (with `env` overrides); returns it and a
    client once /health answers."""
    clients: list[httpx.Client] = []

    def start(**env: str) -> tuple[Process, httpx.Client]:
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", f"{PACKAGE}.api.main:app", "--port", str(port)]
        process = spawn("api", argv, **env)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        clients.append(client)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not process.alive():
                pytest.fail(f"{process.name} exited at start; see {process.log}")
            try:
                if client.get("/health").status_code == 200:
                    return process, client
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{process.name} did not answer within 30 s; see {process.log}")

    yield start
    for client in clients:
        client.close()


# --- what ran: the hello job logs one "started" line per run ---------------------------------


def runs(job_ids: list[str]) -> dict[str, int]:
    """How many times each job started, counted in every worker's log (the stack's and the
    tests' own): the hello job logs `{"job_id": ..., "message": "hello <name>: started"}`."""
    wanted = set(job_ids)
    counts = dict.fromkeys(job_ids, 0)
    for log in STACK.LOGS.glob("*.log"):
        for started in hello_starts(log.read_text(errors="replace")):
            if started in wanted:
                counts[started] += 1
    return counts


def hello_starts(text: str) -> Iterator[str]:
    """The job ids of the hello runs a log tells of: its JSON lines (core/logging.py)
    `{"message": "hello <name>: started", "job_id": ..., "function": "hello", ...}`."""
    for line in text.splitlines():
        if not line.startswith("{") or ': started"' not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("function") == "hello" and "job_id" in record:
                yield str(record["job_id"])


@contextlib.contextmanager
def frozen(*pids: int) -> Iterator[None]:
    """SIGSTOP the processes for the block (a paused VM, a stuck host), SIGCONT after it."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@dataclass(frozen=True)
class Rig:
    """What a fault test drives: the native stack's processes (deploy/local/stack.py), the
    settings, the API with both tokens, fresh job ids, the ledger as the admin sees it, and
    Redis."""

    stack: ModuleType
    settings: Settings
    api: httpx.Client
    auth: dict[str, str]
    read_auth: dict[str, str]
    new_id: Callable[[str], str]
    ledger: Ledger
    redis: redis.Redis

    def post(self, jid: str, via: httpx.Client | None = None, **params: Any) -> httpx.Response:
        """Submit a hello job under `jid` with API_TOKEN (through `via`, another API)."""
        body = {"job_id": jid, "function": "hello", "params": params}
        return (via or self.api).post("/api/v1/jobs", json=body, headers=self.auth)

    def submit(self, jid: str, **params: Any) -> None:
        """`post`, which must be accepted."""
        response = self.post(jid, **params)
        assert response.status_code == 202, response.text

    def post_all(self, ids: list[str], **params: Any) -> dict[str, int]:
        """`post` under each id; the status code of each answer."""
        return {jid: self.post(jid, **params).status_code for jid in ids}


@pytest.fixture
def rig(
    stack: ModuleType,
    settings: Settings,
    api: httpx.Client,
    auth: dict[str, str],
    read_auth: dict[str, str],
    job_id: Callable[[str], str],
    ledger: Ledger,
    redis_db: redis.Redis,
) -> Rig:
    return Rig(stack, settings, api, auth, read_auth, job_id, ledger, redis_db)
