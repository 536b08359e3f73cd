"""The native Flyway applier's pure rules: checksums, file names, versions, placeholders, URLs.

No database here: these pin the rules real Flyway applies, so the history rows this path writes
are ones Flyway accepts.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from {{ cookiecutter.app_code }}.db.migrate import (
    Config,
    MigrationError,
    checksum,
    discover,
    lock_id,
    main,
    parse_jdbc_url,
    parse_name,
    replace_placeholders,
    version_key,
)

from ..migrate_helpers import use_flyway_env, write

# Copied verbatim from the team's shared `flyway/checksum-vectors.json` (each value computed in
# Java with BufferedReader.readLine() as Flyway reads files, and checked against checksums real
# Flyway wrote into a flyway_schema_history table). Copied, not read, so these tests pass on
# machines without that folder. (name, exact file bytes in base64, checksum)
CHECKSUM_VECTORS = [
    ("lf_trailing_newline", "Q1JFQVRFIFRBQkxFIGFwcC5oZWxsbyAoaWQgYmlnaW50KTsK", -1476004717),
    ("no_trailing_newline", "Q1JFQVRFIFRBQkxFIGFwcC5oZWxsbyAoaWQgYmlnaW50KTs=", -1476004717),
    ("crlf", "Q1JFQVRFIFRBQkxFIGFwcC5oZWxsbyAoDQogIGlkIGJpZ2ludA0KKTsNCg==", 98922674),
    ("lone_cr", "U0VMRUNUIDE7DVNFTEVDVCAyOw0=", -1665099012),
    ("bom_first_line", "77u/Q1JFQVRFIFNDSEVNQSBJRiBOT1QgRVhJU1RTIGFwcDsK", -222975529),
    ("utf8_text", "LS0gY2Fmw6kg5pel5pysCklOU0VSVCBJTlRPIHQgVkFMVUVTICgnw7wnKTsK", 1236001427),
    ("blank_lines", "CgpTRUxFQ1QgMTsKCg==", 78787420),
    ("empty_file", "", 0),
    ("vertical_tab_not_a_line_break", "U0VMRUNUIDE7C1NFTEVDVCAyOwo=", 116689064),
    (
        "placeholder_raw_text",
        "R1JBTlQgVVNBR0UgT04gU0NIRU1BICR7c2NoZW1hfSBUTyAke2FwcF9yb2xlfTsK",
        2082664917,
    ),
    (
        "dollar_quoted_block",
        "RE8gJCQKQkVHSU4KICBJRiBOT1QgRVhJU1RTIChTRUxFQ1QgMSBGUk9NIHBnX3JvbGVzIFdIRVJFIHJvbG5hbWUg"
        "PSAneCcpIFRIRU4KICAgIENSRUFURSBST0xFIHg7CiAgRU5EIElGOwpFTkQKJCQ7Cg==",
        -408380053,
    ),
]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(v[1], v[2]) for v in CHECKSUM_VECTORS],
    ids=[v[0] for v in CHECKSUM_VECTORS],
)
def test_checksum_matches_flyway(content: str, expected: int) -> None:
    assert checksum(base64.b64decode(content)) == expected


def test_checksum_ignores_line_ending_style_but_not_content() -> None:
    unix = b"CREATE TABLE t (id int);\nSELECT 1;\n"
    assert checksum(unix) == checksum(unix.replace(b"\n", b"\r\n"))
    assert checksum(unix) == checksum(unix.replace(b"\n", b"\r"))
    assert checksum(unix) != checksum(unix.replace(b"int", b"bigint"))
    # Python's splitlines() would also break on these; Java's readLine() does not.
    assert checksum(b"a\x0bb") != checksum(b"a\nb")
    assert checksum("a\u2028b".encode()) != checksum(b"a\nb")
    assert checksum("a\x85b".encode()) != checksum(b"a\nb")


def test_checksum_is_a_signed_32_bit_integer() -> None:
    values = [checksum(base64.b64decode(v[1])) for v in CHECKSUM_VECTORS]
    assert all(-(2**31) <= value < 2**31 for value in values)
    assert any(value < 0 for value in values)


def test_checksum_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(ValueError):
        checksum(b"SELECT '\xff';")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("V1__job_ledger.sql", ("V", "1", "job ledger")),
        ("V2__hello.sql", ("V", "2", "hello")),
        ("V1_1__add_index.sql", ("V", "1.1", "add index")),
        ("V1.2.3__x.sql", ("V", "1.2.3", "x")),
        ("V01__leading_zero.sql", ("V", "01", "leading zero")),
        ("V3__upper_case_suffix.SQL", ("V", "3", "upper case suffix")),
        ("V4__split__at_first.sql", ("V", "4", "split  at first")),
        ("R__grants.sql", ("R", None, "grants")),
        ("R__refresh_views.sql", ("R", None, "refresh views")),
        ("sub/dir/V5__nested.sql", ("V", "5", "nested")),
    ],
)
def test_parse_name(name: str, expected: tuple[str, str | None, str]) -> None:
    assert parse_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "v1__lower_case_prefix.sql",
        "r__lower_case_prefix.sql",
        "V1_single_underscore.sql",
        "V1.sql",
        "V__no_version.sql",
        "V1__.sql",
        "R1__repeatable_with_version.sql",
        "R__.sql",
        "Va__letters.sql",
        "V1..2__double_dot.sql",
        "V1.__trailing_dot.sql",
        "U1__undo.sql",
        "afterMigrate.sql",
        "V1__not_sql.txt",
    ],
)
def test_parse_name_refuses(name: str) -> None:
    with pytest.raises(MigrationError, match="bad migration file name"):
        parse_name(name)


def test_versions_compare_numerically() -> None:
    assert version_key("1.10") > version_key("1.9")
    assert version_key("2") > version_key("1.999")
    assert version_key("1.0") == version_key("1")
    assert version_key("1.0.0") == version_key("1")
    assert version_key("1_1") == version_key("1.1")
    assert version_key("01") == version_key("1")
    assert version_key("1.0.1") > version_key("1")
    ordered = ["1", "1.1", "1.2", "1.9", "1.10", "2", "10"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    with pytest.raises(MigrationError):
        version_key("1.a")


def test_discover_orders_versions_then_repeatables(tmp_path: Path) -> None:
    for name in ["V1_10__c.sql", "R__b_view.sql", "V1_9__b.sql", "sub/V2__d.sql", "V1__a.sql"]:
        write(tmp_path, name)
    write(tmp_path, "R__a_view.sql")
    write(tmp_path, "README.md", "not a migration")
    found = discover([f"filesystem:{tmp_path}"])
    assert [(m.kind, m.version, m.description) for m in found] == [
        ("V", "1", "a"),
        ("V", "1.9", "b"),
        ("V", "1.10", "c"),
        ("V", "2", "d"),
        ("R", None, "a view"),
        ("R", None, "b view"),
    ]
    nested = next(m for m in found if m.version == "2")
    assert nested.script == "sub/V2__d.sql"
    assert nested.type == "SQL"
    assert nested.path == tmp_path / "sub" / "V2__d.sql"
    assert nested.checksum == checksum(b"SELECT 1;\n")


def test_discover_refuses_duplicate_versions(tmp_path: Path) -> None:
    write(tmp_path, "V1__first.sql")
    write(tmp_path, "V1.0__second.sql")
    with pytest.raises(MigrationError, match="more than one migration with version") as err:
        discover([tmp_path])
    assert "V1__first.sql" in str(err.value)
    assert "V1.0__second.sql" in str(err.value)


def test_discover_refuses_duplicate_repeatables(tmp_path: Path) -> None:
    write(tmp_path, "R__grants.sql")
    write(tmp_path, "more/R__grants.sql")
    with pytest.raises(MigrationError, match='repeatable migration with description "grants"'):
        discover([tmp_path])


def test_discover_refuses_bad_names_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path, "V1__ok.sql")
    write(tmp_path, "V2_missing_separator.sql")
    with pytest.raises(MigrationError, match=r"V2_missing_separator\.sql"):
        discover([tmp_path])


def test_discover_refuses_script_config_files(tmp_path: Path) -> None:
    write(tmp_path, "V1__ok.sql")
    write(tmp_path, "V1__ok.sql.conf", "executeInTransaction=false\n")
    with pytest.raises(MigrationError, match="script config files"):
        discover([tmp_path])


def test_discover_refuses_a_missing_location(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        discover([f"filesystem:{tmp_path / 'nowhere'}"])


def test_discover_resolves_relative_locations_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "deploy" / "sql", "V1__a.sql")
    monkeypatch.chdir(tmp_path)
    assert [m.script for m in discover(["filesystem:deploy/sql"])] == ["V1__a.sql"]


def test_placeholders_are_case_insensitive_and_replaced_everywhere() -> None:
    text = "GRANT USAGE ON SCHEMA ${SCHEMA} TO ${App_Role}; -- ${schema}\n"
    result = replace_placeholders(
        text, {"schema": "acme", "app_role": "acme_app"}, filename="V1__x.sql"
    )
    assert result == "GRANT USAGE ON SCHEMA acme TO acme_app; -- acme\n"


def test_placeholder_names_in_the_mapping_are_case_insensitive_too() -> None:
    result = replace_placeholders(
        "${flyway:defaultSchema}", {"FLYWAY:DEFAULTSCHEMA": "s"}, filename="f"
    )
    assert result == "s"


def test_unknown_placeholder_names_file_and_placeholder_but_no_value() -> None:
    with pytest.raises(MigrationError) as err:
        replace_placeholders(
            "SELECT '${secret}', '${nope}';", {"secret": "hunter2"}, filename="V3__x.sql"
        )
    message = str(err.value)
    assert "V3__x.sql" in message
    assert "${nope}" in message
    assert "FLYWAY_PLACEHOLDERS_NOPE" in message
    assert "hunter2" not in message


def test_text_without_placeholders_is_unchanged() -> None:
    text = "DO $$ BEGIN RAISE NOTICE '%', 1; END $$; SELECT '{}'::jsonb, $1;"
    assert replace_placeholders(text, {}, filename="f") == text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("jdbc:postgresql://127.0.0.1:5431/db_acme", ("127.0.0.1", 5431, "db_acme", {})),
        ("jdbc:postgresql://acme-postgres/db", ("acme-postgres", 5432, "db", {})),
        ("jdbc:postgresql://[::1]:6543/db", ("::1", 6543, "db", {})),
        ("jdbc:postgresql://h:1/my%20db", ("h", 1, "my db", {})),
        ("jdbc:postgresql:db", ("localhost", 5432, "db", {})),
        (
            "jdbc:postgresql://h:5432/db?sslmode=require&ApplicationName=x",
            ("h", 5432, "db", {"sslmode": "require", "ApplicationName": "x"}),
        ),
    ],
)
def test_parse_jdbc_url(url: str, expected: tuple[str, int, str, dict[str, str]]) -> None:
    assert parse_jdbc_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h:5432/db",
        "jdbc:mysql://h/db",
        "jdbc:postgresql://h:port/db",
        "jdbc:postgresql://h:70000/db",
        "jdbc:postgresql://h1:5432,h2:5432/db",
        "jdbc:postgresql://user@h/db",
    ],
)
def test_parse_jdbc_url_refuses(url: str) -> None:
    with pytest.raises(MigrationError, match="FLYWAY_URL"):
        parse_jdbc_url(url)


def env(**extra: str) -> dict[str, str]:
    base = {
        "FLYWAY_URL": "jdbc:postgresql://db.example:5431/db_acme?sslmode=verify-full&foo=1",
        "FLYWAY_USER": "acme_admin",
        "FLYWAY_PASSWORD": "p@ss w'o\"rd=\\x",
        "FLYWAY_SCHEMAS": "acme, extra",
        "FLYWAY_LOCATIONS": "filesystem:/flyway/sql,filesystem:more",
        "FLYWAY_CONNECT_RETRIES": "30",
        "FLYWAY_PLACEHOLDERS_SCHEMA": "acme",
        "FLYWAY_PLACEHOLDERS_DATA_ROLE": "acme_data",
        "FLYWAY_OUT_OF_ORDER": "true",
        "PATH": "/usr/bin",
    }
    base.update(extra)
    return base


def test_config_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config.from_env(env())
    assert (config.host, config.port, config.dbname) == ("db.example", 5431, "db_acme")
    assert config.user == "acme_admin"
    assert config.schemas == ("acme", "extra")
    assert config.locations == (Path("/flyway/sql"), tmp_path / "more")
    assert config.table == "flyway_schema_history"
    assert config.connect_retries == 30
    assert dict(config.placeholders) == {"schema": "acme", "data_role": "acme_data"}
    assert dict(config.params) == {"sslmode": "verify-full"}
    assert config.ignored == ("FLYWAY_OUT_OF_ORDER", "FLYWAY_URL parameter foo")


def test_config_conninfo_carries_any_password_and_repr_hides_it() -> None:
    config = Config.from_env(env(FLYWAY_TABLE="my_history"))
    params = conninfo_to_dict(config.conninfo())
    assert params["password"] == "p@ss w'o\"rd=\\x"
    assert params["host"] == "db.example"
    assert params["port"] == "5431"
    assert params["dbname"] == "db_acme"
    assert params["sslmode"] == "verify-full"
    assert config.table == "my_history"
    assert "p@ss" not in repr(config)
    assert "p@ss" not in config.display_url
    assert config.scrub("echo p@ss w'o\"rd=\\x") == "echo ***"


def test_config_user_and_password_may_come_from_the_url() -> None:
    config = Config.from_env(
        {
            "FLYWAY_URL": "jdbc:postgresql://h/db?user=u&password=s3cret&ssl=true",
            "FLYWAY_LOCATIONS": "filesystem:/x",
        }
    )
    assert (config.user, config.password) == ("u", "s3cret")
    assert dict(config.params) == {"sslmode": "verify-full"}
    assert config.schemas == ()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"FLYWAY_URL": ""}, "FLYWAY_URL is not set"),
        ({"FLYWAY_LOCATIONS": ""}, "FLYWAY_LOCATIONS is not set"),
        ({"FLYWAY_LOCATIONS": "classpath:db/migration"}, "only filesystem"),
        ({"FLYWAY_CONNECT_RETRIES": "many"}, "FLYWAY_CONNECT_RETRIES"),
        ({"FLYWAY_CONNECT_RETRIES": "-1"}, "FLYWAY_CONNECT_RETRIES"),
    ],
)
def test_config_refuses_bad_settings(changes: dict[str, str], message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        Config.from_env(env(**changes))


def test_lock_id_is_flyways() -> None:
    # The id Flyway takes for "public"."flyway_schema_history"; other tables get their own.
    assert lock_id("public", "flyway_schema_history") == 77433833903597
    assert lock_id("acme", "flyway_schema_history") != lock_id("public")


def test_main_reports_configuration_errors_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_flyway_env(monkeypatch)
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR: FLYWAY_URL is not set")
    assert err.count("\n") == 1
