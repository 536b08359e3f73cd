"""A failed `make up` stops what it started and nothing else: with the Redis port taken by
another program, `deploy/local/stack.py up` says so, stops the PostgreSQL it started, points at
`make down`, and exits 1; a PostgreSQL that ran before it keeps running.

Each test runs a copy of deploy/local/ in a project folder of its own, on free ports
(test_stack_hardening's `copy`), so the running stack is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .test_stack_hardening import ROOT, Copy
from .test_stack_hardening import copy as copy  # the fixture

NEEDS_SERVERS = pytest.mark.skipif(
    not (shutil.which("psql") and shutil.which("redis-server")),
    reason="needs PostgreSQL's server binaries, psql and redis-server",
)


@pytest.fixture
def redis_port_taken() -> Iterator[int]:
    """A plain listening socket on the Redis port: a program that is not Redis."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(os.environ["REDIS_PORT"])))
        sock.listen()
        yield int(os.environ["REDIS_PORT"])


def stack_py(copy: Copy, *args: str) -> subprocess.CompletedProcess[str]:
    """stack.py of the copy, with this project's `.env` (its secrets) and the copy's ports."""
    if not (copy.root / ".env").exists():
        shutil.copy(ROOT / ".env", copy.root / ".env")
        for part in ("deploy/postgres", "deploy/db-deploy"):  # the bootstrap and migrations
            shutil.copytree(ROOT / part, copy.root / part)
    argv = [sys.executable, str(copy.root / "deploy/local/stack.py"), *args]
    db = copy.stack.load_settings()
    flyway = f"jdbc:postgresql://127.0.0.1:{db.db_port}/{db.db_name}"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), FLYWAY_URL=flyway)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180, cwd=ROOT)


def postmaster(copy: Copy) -> int | None:
    """The copy's PostgreSQL, if its postmaster runs (wherever pg_home put the cluster)."""
    pid = copy.postgres.postmaster_pid(copy.postgres.recorded_home() / "data")
    return None if pid is None else int(pid)


@pytest.fixture
def cleanup(copy: Copy) -> Iterator[None]:
    try:
        yield
    finally:
        copy.stack.down(copy.stack.load_settings())  # whatever a failing test left


@NEEDS_SERVERS
def test_a_failed_up_stops_the_postgres_it_started(
    copy: Copy, redis_port_taken: int, cleanup: None
) -> None:
    done = stack_py(copy, "up")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"port {redis_port_taken} is taken by a server that refuses REDIS_PASSWORD" in out
    assert "postgres: starting" in out  # it got that far, then stopped it again
    assert "postgres: stopping" in out and "make down" in out
    assert postmaster(copy) is None, "the PostgreSQL this run started is still running"
    assert not copy.stack.pg_answers(copy.stack.load_settings())
    assert not (copy.root / ".local/run/postgres.pid").exists()


@NEEDS_SERVERS
def test_a_failed_up_leaves_a_postgres_that_ran_before_it(
    copy: Copy, redis_port_taken: int, cleanup: None
) -> None:
    settings = copy.stack.load_settings()
    copy.stack.start_postgres(settings)  # what an earlier `up` left running
    before = postmaster(copy)
    assert before is not None
    done = stack_py(copy, "up")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "refuses REDIS_PASSWORD" in out and "make down" in out
    assert "postgres: stopping" not in out
    assert postmaster(copy) == before and copy.stack.pg_answers(settings)
