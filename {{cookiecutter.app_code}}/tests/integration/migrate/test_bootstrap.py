"""deploy/postgres/bootstrap.sql against a real server: the database it makes is UTF8, and a
database made beforehand in another encoding is refused with what to do.

The roles and passwords are the project's own (`.env`): the script is idempotent, so running it
for a throwaway database changes nothing for them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from {{ cookiecutter.app_code }}.core.config import load_settings

from .conftest import HOST, PASSWORD, PORT, USER

BOOTSTRAP = Path(__file__).resolve().parents[3] / "deploy" / "postgres" / "bootstrap.sql"


def run_bootstrap(db_name: str) -> subprocess.CompletedProcess[str]:
    """psql as DB_BOOTSTRAP_USER, as `make bootstrap` runs it, for the database `db_name`."""
    s = load_settings()
    env = dict(
        os.environ,
        PGPASSWORD=PASSWORD,
        DB_NAME=db_name,
        DB_SCHEMA=s.db_schema,
        DB_ADMIN_USER=s.db_admin_user,
        DB_DATA_USER=s.db_data_user,
        DB_APP_USER=s.db_app_user,
        DB_ADMIN_PWD=s.db_admin_pwd.get_secret_value(),
        DB_DATA_PWD=s.db_data_pwd.get_secret_value(),
        DB_APP_PWD=s.db_app_pwd.get_secret_value(),
    )
    command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(PORT)]
    command += ["-U", USER, "-d", "postgres", "-f", str(BOOTSTRAP)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def encoding_of(server: str, db_name: str) -> str | None:
    with psycopg.connect(server) as conn:
        row = conn.execute(
            "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = %s",
            (db_name,),
        ).fetchone()
    return None if row is None else str(row[0])


def drop(server: str, db_name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        drop_it = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(drop_it.format(sql.Identifier(db_name)))


def test_the_database_it_creates_is_utf8(server: str) -> None:
    name = f"boot_{secrets.token_hex(6)}"
    try:
        result = run_bootstrap(name)
        assert result.returncode == 0, result.stderr
        assert encoding_of(server, name) == "UTF8"
    finally:
        drop(server, name)


def test_an_existing_database_in_another_encoding_is_refused(server: str) -> None:
    name = f"boot_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as conn:
        create = sql.SQL(
            "CREATE DATABASE {} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
        conn.execute(create.format(sql.Identifier(name)))
    try:
        result = run_bootstrap(name)
        assert result.returncode != 0, "bootstrap accepted a SQL_ASCII database"
        assert f"database {name} is encoded SQL_ASCII, not UTF8" in result.stderr
        assert "ENCODING 'UTF8' TEMPLATE template0" in result.stderr, result.stderr
        assert encoding_of(server, name) == "SQL_ASCII"
    finally:
        drop(server, name)
