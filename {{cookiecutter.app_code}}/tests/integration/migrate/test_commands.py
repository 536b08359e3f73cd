"""info and validate (read-only, Flyway's states and messages) and the command line: its
exit codes, one-line errors, and a connection failure that never shows the password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from {{ cookiecutter.app_code }}.db.migrate import (
    Config,
    MigrationError,
    info,
    main,
    migrate,
    validate,
)

from ...migrate_helpers import use_flyway_env, write
from .conftest import basic_files, flyway_env, schema_exists


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
    assert not schema_exists(db_name)

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
    use_flyway_env(monkeypatch, flyway_env(db_name, sql_dir))

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
    use_flyway_env(
        monkeypatch,
        {
            "FLYWAY_URL": "jdbc:postgresql://127.0.0.1:1/nowhere",
            "FLYWAY_USER": "someone",
            "FLYWAY_PASSWORD": password,
            "FLYWAY_LOCATIONS": f"filesystem:{sql_dir}",
            "FLYWAY_CONNECT_RETRIES": "1",
        },
    )

    assert main([]) == 1
    captured = capsys.readouterr()
    assert "127.0.0.1:1/nowhere" in captured.err
    assert "retrying in 1 s (attempt 1/1)" in captured.out
    assert "Secret" not in captured.out + captured.err
