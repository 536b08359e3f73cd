"""migrate applies files as Flyway would: in order, once, each with its history row in one
transaction, placeholders replaced, repeatables rerun when they change."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from {{ cookiecutter.app_code }}.db.migrate import Applied, Config, checksum, discover, migrate

from ...migrate_helpers import write
from .conftest import (
    SCHEMA,
    USER,
    applied_versions,
    basic_files,
    exists,
    fetch,
    flyway_env,
    history,
    refused,
    run,
)

# Flyway's history table on PostgreSQL: (column, data_type, is_nullable, default, max length).
FLYWAY_COLUMNS = [
    ("installed_rank", "integer", "NO", None, None),
    ("version", "character varying", "YES", None, 50),
    ("description", "character varying", "NO", None, 200),
    ("type", "character varying", "NO", None, 20),
    ("script", "character varying", "NO", None, 1000),
    ("checksum", "integer", "YES", None, None),
    ("installed_by", "character varying", "NO", None, 100),
    ("installed_on", "timestamp without time zone", "NO", "now()", None),
    ("execution_time", "integer", "NO", None, None),
    ("success", "boolean", "NO", None, None),
]


def test_fresh_database_applies_versioned_then_repeatable(db_name: str, sql_dir: Path) -> None:
    basic_files(sql_dir)
    applied, lines = run(db_name, sql_dir)

    assert [(a.migration.version, a.migration.description) for a in applied] == [
        ("1", "create item"),
        ("2", "seed items"),
        (None, "item view"),
    ]
    migrating = [line for line in lines if line.startswith("Migrating")]
    assert len(migrating) == 3
    assert migrating[0].startswith(
        'Migrating schema "app" to version "1 - create item" ... done in '
    )
    assert migrating[1].startswith(
        'Migrating schema "app" to version "2 - seed items" ... done in '
    )
    assert migrating[2].startswith('Migrating schema "app" with repeatable migration "item view"')
    assert all(line.endswith(" ms") for line in migrating)
    assert lines[-1].startswith(
        'Successfully applied 3 migrations to schema "app", now at version v2 ('
    )
    assert 'Creating schema "app" ...' in lines

    files = {m.script: m.checksum for m in discover([sql_dir])}
    rows = history(db_name)
    # Flyway's marker row for the schema it created, then one row per migration.
    assert rows[0][:6] == (0, None, "<< Flyway Schema Creation >>", "SCHEMA", '"app"', None)
    assert [row[:6] for row in rows[1:]] == [
        (1, "1", "create item", "SQL", "V1__create_item.sql", files["V1__create_item.sql"]),
        (2, "2", "seed items", "SQL", "V2__seed_items.sql", files["V2__seed_items.sql"]),
        (3, None, "item view", "SQL", "R__item_view.sql", files["R__item_view.sql"]),
    ]
    assert all(row[6] == USER and row[7] >= 0 and row[8] is True for row in rows[1:])
    # Unqualified names land in the default schema, as under Flyway.
    assert fetch(db_name, "SELECT count(*) FROM app.item_names") == [(2,)]


def test_second_run_applies_nothing(db_name: str, sql_dir: Path) -> None:
    basic_files(sql_dir)
    run(db_name, sql_dir)
    before = history(db_name)

    applied, lines = run(db_name, sql_dir)

    assert applied == []
    assert lines[-1] == 'Schema "app" is up to date. No migration necessary.'
    assert not any(line.startswith("Migrating") for line in lines)
    assert history(db_name) == before


def test_failed_migration_leaves_no_row_and_no_partial_objects(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__ok.sql", "CREATE TABLE first_one (id int);\n")
    broken = (
        "CREATE TABLE half_done (id int);\n"
        "INSERT INTO half_done VALUES (1);\n"
        "INSERT INTO no_such_table VALUES (1);\n"
        "CREATE TABLE never_reached (id int);\n"
    )
    write(sql_dir, "V2__broken.sql", broken)

    refused(db_name, sql_dir, "V2__broken.sql", 'relation "no_such_table" does not exist', "line 3")
    assert applied_versions(db_name) == ["1"]
    assert exists(db_name, "app.first_one")
    assert not exists(db_name, "app.half_done")
    assert not exists(db_name, "app.never_reached")

    # Fixed file: the next run applies it.
    write(sql_dir, "V2__broken.sql", broken.replace("no_such_table", "half_done"))
    applied, _ = run(db_name, sql_dir)
    assert [a.migration.version for a in applied] == ["2"]
    assert fetch(db_name, "SELECT count(*) FROM app.half_done") == [(2,)]


def test_concurrent_appliers_apply_each_migration_once(db_name: str, sql_dir: Path) -> None:
    write(
        sql_dir,
        "V1__counter.sql",
        "CREATE TABLE counter (id serial PRIMARY KEY, at timestamptz DEFAULT now());\n"
        "INSERT INTO counter DEFAULT VALUES;\n"
        "SELECT pg_sleep(0.5);\n",
    )
    write(sql_dir, "V2__more.sql", "CREATE TABLE more_stuff (id int);\n")
    config = Config.from_env(flyway_env(db_name, sql_dir))
    barrier = threading.Barrier(2)
    results: list[list[Applied]] = []
    errors: list[BaseException] = []
    outputs: list[list[str]] = [[], []]

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results.append(migrate(config, out=outputs[index].append))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(len(r) for r in results) == [0, 2]
    assert fetch(db_name, "SELECT count(*) FROM app.counter") == [(1,)]
    assert applied_versions(db_name) == ["1", "2"]
    assert any(o[-1].endswith("No migration necessary.") for o in outputs)


@pytest.mark.parametrize("table", ["flyway_schema_history", "my_history"])
def test_history_table_matches_flyway_ddl(db_name: str, sql_dir: Path, table: str) -> None:
    write(sql_dir, "V1__nothing.sql", "SELECT 1;\n")
    run(db_name, sql_dir, FLYWAY_TABLE=table)

    columns = fetch(
        db_name,
        "SELECT column_name, data_type, is_nullable, column_default, character_maximum_length"
        " FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
        " ORDER BY ordinal_position",
        SCHEMA,
        table,
    )
    assert columns == FLYWAY_COLUMNS
    constraints = fetch(
        db_name,
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = to_regclass(%s)",
        f"{SCHEMA}.{table}",
    )
    assert constraints == [(f"{table}_pk", "p", "PRIMARY KEY (installed_rank)")]
    indexes = fetch(
        db_name,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s"
        " ORDER BY indexname",
        SCHEMA,
        table,
    )
    assert [name for name, _ in indexes] == [f"{table}_pk", f"{table}_s_idx"]
    assert indexes[1][1].endswith("USING btree (success)")


def test_repeatable_reruns_only_when_changed_with_a_new_row(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__base.sql", "CREATE TABLE base (id int);\n")
    view = write(sql_dir, "R__base_view.sql", "CREATE OR REPLACE VIEW v AS SELECT id FROM base;\n")
    run(db_name, sql_dir)

    applied, lines = run(db_name, sql_dir)
    assert applied == []
    assert lines[-1].endswith("No migration necessary.")

    view.write_text("CREATE OR REPLACE VIEW v AS SELECT id, 1 AS one FROM base;\n", "utf-8")
    applied, lines = run(db_name, sql_dir)
    assert [a.migration.description for a in applied] == ["base view"]
    assert lines[-1].startswith(
        'Successfully applied 1 migration to schema "app", now at version v1'
    )

    repeatable = [row for row in history(db_name) if row[2] == "base view"]
    # Flyway keeps the old row and inserts a new one with the next rank.
    assert [row[0] for row in repeatable] == [2, 3]
    assert repeatable[1][5] == checksum(view.read_bytes()) != repeatable[0][5]
    assert run(db_name, sql_dir)[0] == []


def test_repeatable_reruns_when_a_placeholder_value_changes(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "R__comment.sql", "COMMENT ON SCHEMA app IS '${note}';\n")
    run(db_name, sql_dir, FLYWAY_PLACEHOLDERS_NOTE="first")
    assert run(db_name, sql_dir, FLYWAY_PLACEHOLDERS_NOTE="first")[0] == []
    applied, _ = run(db_name, sql_dir, FLYWAY_PLACEHOLDERS_NOTE="second")
    assert len(applied) == 1
    assert fetch(db_name, "SELECT obj_description('app'::regnamespace)") == [("second",)]


def test_placeholders_are_replaced(db_name: str, sql_dir: Path) -> None:
    v1 = write(
        sql_dir,
        "V1__placeholders.sql",
        "CREATE TABLE ${Target_Schema}.seen (name text, value text);\n"
        "INSERT INTO ${TARGET_SCHEMA}.seen VALUES\n"
        "  ('schema', '${target_schema}'),\n"
        "  ('default', '${flyway:defaultSchema}'),\n"
        "  ('user', '${flyway:user}'),\n"
        "  ('database', '${flyway:database}'),\n"
        "  ('table', '${flyway:table}'),\n"
        "  ('filename', '${flyway:filename}'),\n"
        "  ('timestamp', '${flyway:timestamp}'),\n"
        "  ('percent', '%s %% %');\n",
    )
    run(db_name, sql_dir, FLYWAY_PLACEHOLDERS_TARGET_SCHEMA="app")

    seen = dict(fetch(db_name, "SELECT name, value FROM app.seen"))
    assert seen["schema"] == "app"
    assert seen["default"] == "app"
    assert seen["user"] == USER
    assert seen["database"] == db_name
    assert seen["table"] == "flyway_schema_history"
    assert seen["filename"] == "V1__placeholders.sql"
    assert len(seen["timestamp"]) == len("2024-01-31 12:00:00")
    assert seen["percent"] == "%s %% %"
    # A versioned migration records the checksum of the raw text, placeholders unreplaced.
    assert history(db_name)[-1][5] == checksum(v1.read_bytes())
    # An applied versioned file is not rendered again: its placeholders may be gone.
    assert run(db_name, sql_dir)[0] == []


def test_versions_apply_in_numeric_order(db_name: str, sql_dir: Path) -> None:
    for version in ["1.10", "1.9", "1.2", "10", "2"]:
        name = version.replace(".", "_")
        write(sql_dir, f"V{name}__v{name}.sql", f"CREATE TABLE t_{name} (id int);\n")
    applied, lines = run(db_name, sql_dir)
    assert [a.migration.version for a in applied] == ["1.2", "1.9", "1.10", "2", "10"]
    assert lines[-1].startswith(
        'Successfully applied 5 migrations to schema "app", now at version v10'
    )


def test_search_path_is_reset_between_migrations(db_name: str, sql_dir: Path) -> None:
    write(
        sql_dir, "V1__wander.sql", "SET search_path TO public;\nCREATE TABLE in_public (id int);\n"
    )
    write(sql_dir, "V2__home.sql", "CREATE TABLE at_home (id int);\n")
    run(db_name, sql_dir)
    assert exists(db_name, "public.in_public")
    assert exists(db_name, "app.at_home")
