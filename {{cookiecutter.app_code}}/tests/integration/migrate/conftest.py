"""The native Flyway applier against a real PostgreSQL, one throwaway database per test.

Only PostgreSQL is needed (not the whole stack), so these carry no marker. The server is the
project's own (DB_HOST, DB_HOST_PORT, DB_BOOTSTRAP_USER and DB_BOOTSTRAP_PWD from `.env`: the
superuser of the cluster that `make up` starts), unless TEST_PG_HOST, TEST_PG_PORT, TEST_PG_USER
and TEST_PG_PASSWORD name another; the role must be allowed to create databases and roles. An
unreachable server fails the tests instead of skipping them: a skipped test proves nothing.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from {{ cookiecutter.app_code }}.core.config import load_settings
from {{ cookiecutter.app_code }}.db.migrate import Applied, Config, MigrationError, migrate

from ...migrate_helpers import write

if "TEST_PG_HOST" in os.environ or "TEST_PG_PORT" in os.environ:
    HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
    PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
    USER = os.environ.get("TEST_PG_USER", "postgres")
    PASSWORD = os.environ.get("TEST_PG_PASSWORD", "")
else:
    _settings = load_settings()
    HOST, PORT = _settings.db_host, _settings.db_port
    USER, PASSWORD = _settings.db_bootstrap_user, _settings.db_bootstrap_pwd.get_secret_value()
SCHEMA = "app"


def conninfo(dbname: str) -> str:
    return make_conninfo(host=HOST, port=PORT, user=USER, password=PASSWORD or None, dbname=dbname)


@pytest.fixture(scope="session")
def server() -> str:
    """Admin connection string; fails (never skips) with a hint when nothing answers."""
    try:
        with psycopg.connect(conninfo("postgres"), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
    else:
        return conninfo("postgres")
    pytest.fail(
        f"PostgreSQL is not reachable at {HOST}:{PORT} as {USER!r} ({reason}). These tests "
        "need a real server: start one, or point TEST_PG_HOST, TEST_PG_PORT, TEST_PG_USER and "
        "TEST_PG_PASSWORD at one whose role may create databases.",
        pytrace=False,
    )


@pytest.fixture
def db_name(server: str) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    name = f"mig_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def sql_dir(tmp_path: Path) -> Path:
    path = tmp_path / "sql"
    path.mkdir()
    return path


def flyway_env(db_name: str, location: Path, **extra: str) -> dict[str, str]:
    """The FLYWAY_* variables for a throwaway database and a folder of files."""
    env = {
        "FLYWAY_URL": f"jdbc:postgresql://{HOST}:{PORT}/{db_name}",
        "FLYWAY_USER": USER,
        "FLYWAY_SCHEMAS": SCHEMA,
        "FLYWAY_LOCATIONS": f"filesystem:{location}",
    }
    if PASSWORD:
        env["FLYWAY_PASSWORD"] = PASSWORD
    env.update(extra)
    return env


def run(db_name: str, location: Path, **extra: str) -> tuple[list[Applied], list[str]]:
    """One migrate run: what it applied and the lines it printed."""
    lines: list[str] = []
    applied = migrate(Config.from_env(flyway_env(db_name, location, **extra)), out=lines.append)
    return applied, lines


def refused(db_name: str, location: Path, *mentions: str, **extra: str) -> str:
    """The message of a migrate run that must fail: one line that mentions each of `mentions`
    (the file, what is wrong, what to do)."""
    with pytest.raises(MigrationError) as err:
        run(db_name, location, **extra)
    message = str(err.value)
    assert "\n" not in message
    missing = [part for part in mentions if part not in message]
    assert not missing, f"{missing} not in the message: {message}"
    return message


def fetch(db_name: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo(db_name)) as conn:
        return conn.execute(query.encode(), params or None).fetchall()


def history(db_name: str, table: str = "flyway_schema_history") -> list[tuple[Any, ...]]:
    return fetch(
        db_name,
        "SELECT installed_rank, version, description, type, script, checksum, installed_by,"
        f" execution_time, success FROM {SCHEMA}.{table} ORDER BY installed_rank",
    )


def applied_versions(db_name: str) -> list[str | None]:
    """The version of each migration row (marker rows aside), by rank."""
    return [row[1] for row in history(db_name) if row[3] == "SQL"]


def exists(db_name: str, relation: str) -> bool:
    return fetch(db_name, "SELECT to_regclass(%s) IS NOT NULL", relation)[0][0] is True


def schema_exists(db_name: str) -> bool:
    """Whether the run created the schema: a refused run must not have."""
    return fetch(db_name, "SELECT to_regnamespace(%s) IS NOT NULL", SCHEMA)[0][0] is True


def basic_files(root: Path) -> None:
    write(root, "V1__create_item.sql", "CREATE TABLE item (id int PRIMARY KEY, name text);\n")
    write(root, "V2__seed_items.sql", "INSERT INTO item VALUES (1, 'one'), (2, 'two');\n")
    write(root, "R__item_view.sql", "CREATE OR REPLACE VIEW item_names AS SELECT name FROM item;\n")
