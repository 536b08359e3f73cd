"""What migrate refuses, as Flyway's validate would, before it applies anything: edited,
missing, failed or out-of-order migrations, bad names, unknown placeholders; and what it
cannot run. Each message names the file and says what to do, on one line."""

from __future__ import annotations

from pathlib import Path

import psycopg

from {{ cookiecutter.app_code }}.db.migrate import checksum

from ...migrate_helpers import write
from .conftest import applied_versions, conninfo, exists, refused, run, schema_exists


def test_edited_applied_migration_is_refused(db_name: str, sql_dir: Path) -> None:
    v1 = write(sql_dir, "V1__create_item.sql", "CREATE TABLE item (id int);\n")
    run(db_name, sql_dir)
    original = checksum(v1.read_bytes())
    v1.write_text("CREATE TABLE item (id bigint);\n", encoding="utf-8")
    write(sql_dir, "V2__next.sql", "CREATE TABLE next_one (id int);\n")

    refused(
        db_name,
        sql_dir,
        "checksum mismatch",
        "V1__create_item.sql",
        str(original),
        str(checksum(v1.read_bytes())),
        "add a new migration",
    )
    # Validation runs before anything is applied.
    assert not exists(db_name, "app.next_one")


def test_unknown_placeholder_is_an_error_naming_it(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__fine.sql", "CREATE TABLE fine (id int);\n")
    write(sql_dir, "V2__uses_unknown.sql", "GRANT SELECT ON fine TO ${reader_role};\n")

    refused(db_name, sql_dir, "V2__uses_unknown.sql", "${reader_role}")
    # Checked before anything runs.
    assert not exists(db_name, "app.fine")
    assert applied_versions(db_name) == []


def test_bad_file_name_is_refused_naming_the_file(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__fine.sql", "CREATE TABLE fine (id int);\n")
    write(sql_dir, "V2-oops.sql", "CREATE TABLE oops (id int);\n")

    refused(db_name, sql_dir, "V2-oops.sql")
    assert not schema_exists(db_name)


def test_duplicate_version_is_refused(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__one.sql", "CREATE TABLE one (id int);\n")
    write(sql_dir, "V1.0__one_again.sql", "CREATE TABLE one_again (id int);\n")

    refused(db_name, sql_dir, "V1__one.sql", "V1.0__one_again.sql")
    assert not schema_exists(db_name)


def test_version_below_the_highest_applied_is_refused(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V2__two.sql", "CREATE TABLE two (id int);\n")
    run(db_name, sql_dir)
    write(sql_dir, "V1_5__late.sql", "CREATE TABLE late (id int);\n")

    refused(db_name, sql_dir, "1.5 (V1_5__late.sql) is below")
    assert not exists(db_name, "app.late")


def test_failed_history_row_is_refused(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__one.sql", "CREATE TABLE one (id int);\n")
    run(db_name, sql_dir)
    with psycopg.connect(conninfo(db_name), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO app.flyway_schema_history (installed_rank, version, description, type,"
            " script, checksum, installed_by, execution_time, success)"
            " VALUES (2, '2', 'half', 'SQL', 'V2__half.sql', 1, 'x', 0, false)"
        )
    write(sql_dir, "V2__half.sql", "SELECT 1;\n")

    refused(
        db_name,
        sql_dir,
        "failed migration to version 2",
        "V2__half.sql",
        "installed_rank = 2",
        "repair",
    )


def test_missing_applied_file_is_refused(db_name: str, sql_dir: Path) -> None:
    v1 = write(sql_dir, "V1__one.sql", "CREATE TABLE one (id int);\n")
    write(sql_dir, "V2__two.sql", "CREATE TABLE two (id int);\n")
    run(db_name, sql_dir)
    v1.unlink()

    refused(db_name, sql_dir, "not resolved locally: 1 (V1__one.sql)")


def test_statement_that_needs_autocommit_is_explained(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__table.sql", "CREATE TABLE big (id int);\n")
    write(sql_dir, "V2__index.sql", "CREATE INDEX CONCURRENTLY big_id ON big (id);\n")

    refused(
        db_name,
        sql_dir,
        "V2__index.sql",
        "cannot run inside a transaction block",
        "Flyway image",
    )
