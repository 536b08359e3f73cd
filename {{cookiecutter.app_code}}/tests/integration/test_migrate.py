"""The native Flyway applier against a real PostgreSQL, one throwaway database per test.

Only PostgreSQL is needed (not the whole stack), so these carry no marker. The server is the
project's own (DB_HOST, DB_HOST_PORT, DB_BOOTSTRAP_USER and DB_BOOTSTRAP_PWD from `.env`: the
superuser of the cluster that `make up` starts), unless TEST_PG_HOST, TEST_PG_PORT, TEST_PG_USER
and TEST_PG_PASSWORD name another; the role must be allowed to create databases and roles. An
unreachable server fails the tests instead of skipping them: a skipped test proves nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from {{ cookiecutter.app_code }}.core.config import load_settings
from {{ cookiecutter.app_code }}.db.migrate import (
    Applied,
    Config,
    MigrationError,
    checksum,
    discover,
    info,
    main,
    migrate,
    validate,
)

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
PROJECT_SQL = Path(__file__).resolve().parents[2] / "deploy" / "db-deploy" / "sql"

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


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def flyway_env(db_name: str, location: Path, **extra: str) -> dict[str, str]:
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
    lines: list[str] = []
    applied = migrate(Config.from_env(flyway_env(db_name, location, **extra)), out=lines.append)
    return applied, lines


def fetch(db_name: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo(db_name)) as conn:
        return conn.execute(query.encode(), params or None).fetchall()


def history(db_name: str, table: str = "flyway_schema_history") -> list[tuple[Any, ...]]:
    return fetch(
        db_name,
        "SELECT installed_rank, version, description, type, script, checksum, installed_by,"
        f" execution_time, success FROM {SCHEMA}.{table} ORDER BY installed_rank",
    )


def exists(db_name: str, relation: str) -> bool:
    return fetch(db_name, "SELECT to_regclass(%s) IS NOT NULL", relation)[0][0] is True


def basic_files(root: Path) -> None:
    write(root, "V1__create_item.sql", "CREATE TABLE item (id int PRIMARY KEY, name text);\n")
    write(root, "V2__seed_items.sql", "INSERT INTO item VALUES (1, 'one'), (2, 'two');\n")
    write(root, "R__item_view.sql", "CREATE OR REPLACE VIEW item_names AS SELECT name FROM item;\n")


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

    with pytest.raises(MigrationError) as err:
        run(db_name, sql_dir)

    message = str(err.value)
    assert "V2__broken.sql" in message
    assert 'relation "no_such_table" does not exist' in message
    assert "line 3" in message
    assert "\n" not in message
    assert [row[1] for row in history(db_name) if row[3] == "SQL"] == ["1"]
    assert exists(db_name, "app.first_one")
    assert not exists(db_name, "app.half_done")
    assert not exists(db_name, "app.never_reached")

    # Fixed file: the next run applies it.
    write(sql_dir, "V2__broken.sql", broken.replace("no_such_table", "half_done"))
    applied, _ = run(db_name, sql_dir)
    assert [a.migration.version for a in applied] == ["2"]
    assert fetch(db_name, "SELECT count(*) FROM app.half_done") == [(2,)]


def test_edited_applied_migration_is_refused(db_name: str, sql_dir: Path) -> None:
    v1 = write(sql_dir, "V1__create_item.sql", "CREATE TABLE item (id int);\n")
    run(db_name, sql_dir)
    original = checksum(v1.read_bytes())
    v1.write_text("CREATE TABLE item (id bigint);\n", encoding="utf-8")
    write(sql_dir, "V2__next.sql", "CREATE TABLE next_one (id int);\n")

    with pytest.raises(MigrationError) as err:
        run(db_name, sql_dir)

    message = str(err.value)
    assert "checksum mismatch" in message
    assert "V1__create_item.sql" in message
    assert str(original) in message
    assert str(checksum(v1.read_bytes())) in message
    assert "add a new migration" in message
    # Validation runs before anything is applied.
    assert not exists(db_name, "app.next_one")


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
    versions = [row[1] for row in history(db_name) if row[3] == "SQL"]
    assert versions == ["1", "2"]
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


def test_unknown_placeholder_is_an_error_naming_it(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__fine.sql", "CREATE TABLE fine (id int);\n")
    write(sql_dir, "V2__uses_unknown.sql", "GRANT SELECT ON fine TO ${reader_role};\n")

    with pytest.raises(MigrationError) as err:
        run(db_name, sql_dir)

    assert "V2__uses_unknown.sql" in str(err.value)
    assert "${reader_role}" in str(err.value)
    # Checked before anything runs.
    assert not exists(db_name, "app.fine")
    assert [row for row in history(db_name) if row[3] == "SQL"] == []


def test_bad_file_name_is_refused_naming_the_file(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__fine.sql", "CREATE TABLE fine (id int);\n")
    write(sql_dir, "V2-oops.sql", "CREATE TABLE oops (id int);\n")

    with pytest.raises(MigrationError, match=r"V2-oops\.sql"):
        run(db_name, sql_dir)
    assert fetch(db_name, "SELECT to_regnamespace('app') IS NULL") == [(True,)]


def test_duplicate_version_is_refused(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__one.sql", "CREATE TABLE one (id int);\n")
    write(sql_dir, "V1.0__one_again.sql", "CREATE TABLE one_again (id int);\n")

    with pytest.raises(MigrationError) as err:
        run(db_name, sql_dir)
    assert "V1__one.sql" in str(err.value)
    assert "V1.0__one_again.sql" in str(err.value)
    assert fetch(db_name, "SELECT to_regnamespace('app') IS NULL") == [(True,)]


def test_version_below_the_highest_applied_is_refused(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V2__two.sql", "CREATE TABLE two (id int);\n")
    run(db_name, sql_dir)
    write(sql_dir, "V1_5__late.sql", "CREATE TABLE late (id int);\n")

    with pytest.raises(MigrationError, match=r"1\.5 \(V1_5__late.sql\) is below"):
        run(db_name, sql_dir)
    assert not exists(db_name, "app.late")


def test_versions_apply_in_numeric_order(db_name: str, sql_dir: Path) -> None:
    for version in ["1.10", "1.9", "1.2", "10", "2"]:
        name = version.replace(".", "_")
        write(sql_dir, f"V{name}__v{name}.sql", f"CREATE TABLE t_{name} (id int);\n")
    applied, lines = run(db_name, sql_dir)
    assert [a.migration.version for a in applied] == ["1.2", "1.9", "1.10", "2", "10"]
    assert lines[-1].startswith(
        'Successfully applied 5 migrations to schema "app", now at version v10'
    )


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

    with pytest.raises(MigrationError) as err:
        run(db_name, sql_dir)
    message = str(err.value)
    assert "failed migration to version 2" in message
    assert "V2__half.sql" in message
    assert "installed_rank = 2" in message
    assert "repair" in message


def test_missing_applied_file_is_refused(db_name: str, sql_dir: Path) -> None:
    v1 = write(sql_dir, "V1__one.sql", "CREATE TABLE one (id int);\n")
    write(sql_dir, "V2__two.sql", "CREATE TABLE two (id int);\n")
    run(db_name, sql_dir)
    v1.unlink()

    with pytest.raises(MigrationError, match=r"not resolved locally: 1 \(V1__one.sql\)"):
        run(db_name, sql_dir)


def test_search_path_is_reset_between_migrations(db_name: str, sql_dir: Path) -> None:
    write(
        sql_dir, "V1__wander.sql", "SET search_path TO public;\nCREATE TABLE in_public (id int);\n"
    )
    write(sql_dir, "V2__home.sql", "CREATE TABLE at_home (id int);\n")
    run(db_name, sql_dir)
    assert exists(db_name, "public.in_public")
    assert exists(db_name, "app.at_home")


def test_statement_that_needs_autocommit_is_explained(db_name: str, sql_dir: Path) -> None:
    write(sql_dir, "V1__table.sql", "CREATE TABLE big (id int);\n")
    write(sql_dir, "V2__index.sql", "CREATE INDEX CONCURRENTLY big_id ON big (id);\n")

    with pytest.raises(MigrationError) as err:
        run(db_name, sql_dir)
    assert "V2__index.sql" in str(err.value)
    assert "cannot run inside a transaction block" in str(err.value)
    assert "Flyway image" in str(err.value)


def test_info_and_validate(db_name: str, sql_dir: Path) -> None:
    basic_files(sql_dir)
    config = Config.from_env(flyway_env(db_name, sql_dir))
    lines: list[str] = []

    with pytest.raises(MigrationError, match=r"not applied to database: 1 .*run migrate"):
        validate(config, out=lines.append)
    rows = info(config, out=lines.append)
    assert [(r.version, r.state) for r in rows] == [
        ("1", "Pending"),
        ("2", "Pending"),
        ("", "Pending"),
    ]
    # Read-only: info and validate create nothing.
    assert fetch(db_name, "SELECT to_regnamespace('app') IS NULL") == [(True,)]

    migrate(config, out=lines.append)
    validate(config, out=lines.append)
    assert lines[-1] == "Successfully validated 3 migrations"
    rows = info(config, out=lines.append)
    assert [(r.category, r.version, r.state) for r in rows] == [
        ("", "", "Success"),
        ("Versioned", "1", "Success"),
        ("Versioned", "2", "Success"),
        ("Repeatable", "", "Success"),
    ]


def test_command_line(
    db_name: str,
    sql_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    basic_files(sql_dir)
    for key in list(os.environ):
        if key.startswith("FLYWAY_"):
            monkeypatch.delenv(key)
    for key, value in flyway_env(db_name, sql_dir).items():
        monkeypatch.setenv(key, value)

    assert main([]) == 0
    assert "now at version v2" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert re.search(r"\| Versioned +\| 2 +\| seed items +\| SQL ", capsys.readouterr().out)

    (sql_dir / "V1__create_item.sql").write_text("-- edited\n", encoding="utf-8")
    assert main(["validate"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("ERROR: validate failed: migration checksum mismatch")
    assert captured.err.count("\n") == 1


def test_connection_failure_is_clear_and_never_shows_the_password(
    sql_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(sql_dir, "V1__one.sql", "SELECT 1;\n")
    password = 'Sup3r\'Secret "pw" = \\x'
    for key in list(os.environ):
        if key.startswith("FLYWAY_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FLYWAY_URL", "jdbc:postgresql://127.0.0.1:1/nowhere")
    monkeypatch.setenv("FLYWAY_USER", "someone")
    monkeypatch.setenv("FLYWAY_PASSWORD", password)
    monkeypatch.setenv("FLYWAY_LOCATIONS", f"filesystem:{sql_dir}")
    monkeypatch.setenv("FLYWAY_CONNECT_RETRIES", "1")

    assert main([]) == 1
    captured = capsys.readouterr()
    assert "127.0.0.1:1/nowhere" in captured.err
    assert "retrying in 1 s (attempt 1/1)" in captured.out
    assert "Secret" not in captured.out + captured.err


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


@pytest.mark.skipif(
    not list(PROJECT_SQL.glob("*.sql")), reason=f"no migrations in {PROJECT_SQL} yet"
)
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
