"""The project's own migrations (deploy/db-deploy/sql) apply natively, with the checksums
Flyway would record, and a second run finds nothing to do."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from {{ cookiecutter.app_code }}.db.migrate import Config, discover, migrate, validate

from .conftest import fetch, flyway_env

PROJECT_SQL = Path(__file__).resolve().parents[3] / "deploy" / "db-deploy" / "sql"


@pytest.fixture
def project_roles(server: str) -> Iterator[tuple[str, str]]:
    """Uniquely named data and app roles (roles are cluster-wide), dropped afterwards."""
    suffix = secrets.token_hex(4)
    roles = (f"mig_data_{suffix}", f"mig_app_{suffix}")
    with psycopg.connect(server, autocommit=True) as conn:
        for role in roles:
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        yield roles
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            for role in roles:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_project_migrations_apply(project_roles: tuple[str, str], db_name: str) -> None:
    # project_roles before db_name: the database (and its grants) is dropped first.
    data_role, app_role = project_roles
    schema = "{{ cookiecutter.app_code }}"
    extra = {
        "FLYWAY_SCHEMAS": schema,
        "FLYWAY_PLACEHOLDERS_SCHEMA": schema,
        "FLYWAY_PLACEHOLDERS_DATA_ROLE": data_role,
        "FLYWAY_PLACEHOLDERS_APP_ROLE": app_role,
    }
    config = Config.from_env(flyway_env(db_name, PROJECT_SQL, **extra))
    files = discover(config.locations)
    assert files, f"no migrations in {PROJECT_SQL}"
    applied = migrate(config, out=lambda _: None)

    assert [a.migration.script for a in applied] == [m.script for m in files]
    rows = fetch(
        db_name,
        f'SELECT script, checksum, success FROM "{schema}".flyway_schema_history'
        " WHERE type = 'SQL' ORDER BY installed_rank",
    )
    assert rows == [(a.migration.script, a.checksum, True) for a in applied]
    lines: list[str] = []
    assert migrate(config, out=lines.append) == []
    assert lines[-1].endswith("No migration necessary.")
    validate(config, out=lines.append)
