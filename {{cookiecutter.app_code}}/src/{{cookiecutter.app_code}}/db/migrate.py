"""Flyway-compatible migration applier for machines without Docker.

The compose stack runs the official Flyway image; this module applies the same SQL files with
psycopg 3 and writes history rows that real Flyway accepts, so both paths can share one
database. It reads the image's own variables (FLYWAY_URL, FLYWAY_USER, FLYWAY_PASSWORD,
FLYWAY_SCHEMAS, FLYWAY_LOCATIONS, FLYWAY_TABLE, FLYWAY_CONNECT_RETRIES,
FLYWAY_PLACEHOLDERS_<NAME>) and depends only on psycopg and the standard library, not on the
application's settings, so it also runs on its own:

    python -m <app>.db.migrate [migrate|info|validate]

Rules mirrored from Flyway: file names, version order, checksums, placeholders, the history
table's DDL, the advisory lock, one transaction per migration and the validation messages.
Not supported here: statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY,
VACUUM; Flyway detects those and runs them outside one, this path refuses them with a hint),
script config files (`*.sql.conf`), SQL callbacks, undo and baseline commands.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

__all__ = [
    "Applied",
    "Config",
    "HistoryRow",
    "InfoRow",
    "Migration",
    "MigrationError",
    "checksum",
    "discover",
    "info",
    "lock_id",
    "main",
    "migrate",
    "parse_jdbc_url",
    "parse_name",
    "replace_placeholders",
    "validate",
    "version_key",
]

DEFAULT_TABLE = "flyway_schema_history"
DEFAULT_PORT = 5432
# Flyway's PostgreSQLAdvisoryLockTemplate: "Flyway" in ASCII, plus the table's hash code.
LOCK_MAGIC_NUM = 0x466C79776179
SCHEMA_MARKER_DESCRIPTION = "<< Flyway Schema Creation >>"
# Flyway abbreviates longer values to fit the history table's columns.
MAX_DESCRIPTION = 200
MAX_SCRIPT = 1000

Out = Callable[[str], object]
Kind = Literal["V", "R"]


class MigrationError(Exception):
    """A problem the operator must fix; the message says what and where (never a password)."""


# --------------------------------------------------------------------------- names, checksums

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def _checksum_text(text: str) -> int:
    """Flyway's checksum of already decoded text (repeatables hash the replaced text)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    crc = 0
    # Java's BufferedReader.readLine() breaks on \n, \r and \r\n only; the breaks are dropped.
    for line in _LINE_BREAK.split(text):
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= (1 << 31) else crc


def checksum(data: bytes) -> int:
    """Flyway's checksum of a file's bytes, so the history rows match what Flyway would write.

    CRC32 over each line's UTF-8 bytes (line breaks and a leading BOM dropped), as a signed
    32-bit integer. Raises UnicodeDecodeError (a ValueError) for bytes that are not UTF-8.
    """
    return _checksum_text(data.decode("utf-8"))


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of a version: numeric parts, trailing zeros ignored (1.10 > 1.9, 1.0 == 1)."""
    text = version.replace("_", ".")
    if not _VERSION.fullmatch(text):
        raise MigrationError(
            f"invalid version {version!r}: only digits separated by '.' or '_' are allowed"
        )
    parts = [int(part) for part in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def parse_name(filename: str) -> tuple[Kind, str | None, str]:
    """Split `V<version>__<description>.sql` or `R__<description>.sql` the way Flyway does.

    Returns (kind, version with `_` as `.`, description with `_` as space). Flyway silently
    skips names it cannot parse; a skipped migration is a surprise in production, so this
    refuses them instead.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    expected = "expected V<version>__<description>.sql or R__<description>.sql"
    if not name.lower().endswith(".sql"):
        raise MigrationError(f"bad migration file name {name!r}: {expected}")
    stem = name[: -len(".sql")]
    prefix = stem[:1]
    if prefix not in ("V", "R"):
        raise MigrationError(
            f"bad migration file name {name!r}: {expected} (the prefix is case-sensitive; "
            "SQL callbacks, undo and baseline migrations are not supported by the native path)"
        )
    raw_version, sep, raw_description = stem[1:].partition("__")
    if not sep or not raw_description:
        raise MigrationError(f"bad migration file name {name!r}: {expected}")
    description = raw_description.replace("_", " ")
    if prefix == "R":
        if raw_version:
            raise MigrationError(
                f"bad migration file name {name!r}: a repeatable migration has no version "
                "(R__<description>.sql)"
            )
        return "R", None, description
    if not raw_version:
        raise MigrationError(f"bad migration file name {name!r}: the version is missing")
    version = raw_version.replace("_", ".")
    if not _VERSION.fullmatch(version):
        raise MigrationError(
            f"bad migration file name {name!r}: invalid version {raw_version!r} "
            "(digits separated by '.' or '_')"
        )
    return "V", version, description


_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def replace_placeholders(text: str, placeholders: Mapping[str, str], *, filename: str) -> str:
    """Replace `${name}` (name matched case-insensitively) as Flyway does; unknown is an error.

    Values are never shown in errors: a placeholder may carry a secret.
    """
    values = {key.lower(): value for key, value in placeholders.items()}
    unknown: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values.get(name.lower())
        if value is None:
            if name not in unknown:
                unknown.append(name)
            return match.group(0)
        return value

    result = _PLACEHOLDER.sub(substitute, text)
    if unknown:
        shown = ", ".join("${" + name[:60] + "}" for name in unknown)
        env = ", ".join(
            "FLYWAY_PLACEHOLDERS_" + re.sub(r"\W", "_", name).upper()
            for name in unknown
            if not name.lower().startswith("flyway:")
        )
        hint = f"; define it in the environment ({env}=...)" if env else ""
        raise MigrationError(f"{filename}: no value provided for placeholder {shown}{hint}")
    return result


def _java_hash(text: str) -> int:
    """java.lang.String.hashCode(), over UTF-16 code units, as a signed 32-bit integer."""
    data = text.encode("utf-16-be")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= (1 << 31) else h


def _quote(name: str) -> str:
    """An identifier quoted the way Flyway prints and hashes it."""
    return '"' + name.replace('"', '""') + '"'


def lock_id(schema: str, table: str = DEFAULT_TABLE) -> int:
    """The advisory lock key Flyway takes for this history table, so the two paths exclude
    each other: the magic number plus the hash of the quoted `"schema"."table"`.

    For "public"."flyway_schema_history" this is 77433833903597.
    """
    return LOCK_MAGIC_NUM + _java_hash(f"{_quote(schema)}.{_quote(table)}")


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Migration:
    """One SQL file, as Flyway resolves it.

    `checksum` is the checksum of the raw file text. Versioned migrations record exactly this;
    repeatables record the checksum of the text after placeholder replacement, computed when
    the database is known (Flyway accepts either for a repeatable).
    """

    version: str | None
    description: str
    script: str
    checksum: int
    type: str
    kind: Kind
    path: Path

    @property
    def key(self) -> tuple[int, ...]:
        """Numeric sort key of a versioned migration; () for a repeatable."""
        return version_key(self.version) if self.version is not None else ()

    @property
    def label(self) -> str:
        """How Flyway names the migration in its messages."""
        if self.version is None:
            return f'repeatable migration "{self.description}"'
        return f"version {self.version}"

    def read_text(self) -> str:
        """The file's text, BOM dropped, as Flyway executes it."""
        try:
            text = self.path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrationError(f"{self.script}: not valid UTF-8 ({exc.reason})") from None
        except OSError as exc:
            raise MigrationError(f"{self.script}: cannot read {self.path}: {exc}") from None
        return text[1:] if text.startswith("\ufeff") else text


def _location_path(location: str | Path) -> Path:
    """`filesystem:<path>` (or a bare path) resolved against the current directory."""
    if isinstance(location, Path):
        return Path.cwd() / location
    text = location.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() == "filesystem":
        text = rest
    elif sep and prefix.lower() in ("classpath", "s3", "gcs", "azure"):
        raise MigrationError(
            f"location {location!r}: only filesystem:<path> locations are supported natively"
        )
    if not text:
        raise MigrationError(f"location {location!r} has no path")
    return Path.cwd() / text


def discover(locations: Iterable[str | Path]) -> list[Migration]:
    """All migrations under the locations: versioned by version, then repeatables by
    description. Refuses what Flyway would skip or reject (bad names, duplicates), because a
    silently skipped file means a database that differs from the code.
    """
    found: list[Migration] = []
    for location in locations:
        root = _location_path(location)
        if not root.is_dir():
            raise MigrationError(
                f"migration location {root} does not exist or is not a directory "
                f"(relative paths are resolved against the current directory, {Path.cwd()})"
            )
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            script = path.relative_to(root).as_posix()
            lower = path.name.lower()
            if lower.endswith(".sql.conf"):
                raise MigrationError(
                    f"{script}: script config files are not supported by the native path "
                    "(run this migration with the Flyway image)"
                )
            if not lower.endswith(".sql"):
                continue
            try:
                kind, version, description = parse_name(path.name)
            except MigrationError as exc:
                raise MigrationError(f"{path}: {exc}") from None
            try:
                value = checksum(path.read_bytes())
            except UnicodeDecodeError as exc:
                raise MigrationError(f"{path}: not valid UTF-8 ({exc.reason})") from None
            found.append(Migration(version, description, script, value, "SQL", kind, path))

    by_version: dict[tuple[int, ...], Migration] = {}
    by_description: dict[str, Migration] = {}
    for m in found:
        if m.version is not None:
            other = by_version.setdefault(m.key, m)
            if other is not m:
                raise MigrationError(
                    f"found more than one migration with version {m.version}: "
                    f"{other.path} and {m.path} (versions compare numerically, 1.0 equals 1)"
                )
        else:
            twin = by_description.setdefault(m.description, m)
            if twin is not m:
                raise MigrationError(
                    f'found more than one repeatable migration with description "{m.description}"'
                    f": {twin.path} and {m.path}"
                )
    versioned = sorted(by_version.values(), key=lambda m: m.key)
    repeatable = sorted(by_description.values(), key=lambda m: m.description)
    return versioned + repeatable


# --------------------------------------------------------------------------- configuration

# JDBC URL parameters with a libpq equivalent; others are reported as ignored.
_JDBC_PARAMS = {
    "sslmode": "sslmode",
    "sslrootcert": "sslrootcert",
    "sslcert": "sslcert",
    "sslkey": "sslkey",
    "sslpassword": "sslpassword",
    "connecttimeout": "connect_timeout",
    "applicationname": "application_name",
    "options": "options",
}
# Flyway settings read here, or harmless to ignore (they match what this path always does).
_KNOWN_SETTINGS = {
    "URL",
    "USER",
    "PASSWORD",
    "SCHEMAS",
    "DEFAULT_SCHEMA",
    "LOCATIONS",
    "TABLE",
    "CONNECT_RETRIES",
    "CONNECT_RETRIES_INTERVAL",
    "INSTALLED_BY",
    "PLACEHOLDER_REPLACEMENT",
    "CREATE_SCHEMAS",
    "CLEAN_DISABLED",
    "VALIDATE_MIGRATION_NAMING",
    "EDITION",
    "LICENSE_KEY",
}


def parse_jdbc_url(url: str) -> tuple[str, int, str, dict[str, str]]:
    """(host, port, database, parameters) of `jdbc:postgresql://host:port/db?k=v`."""
    text = url.strip()
    prefix = "jdbc:postgresql:"
    if not text.startswith(prefix):
        raise MigrationError(
            "FLYWAY_URL must look like jdbc:postgresql://host:port/database "
            f"(it starts with {text[:16]!r})"
        )
    rest, _, query = text[len(prefix) :].partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    host, port = "localhost", DEFAULT_PORT
    if rest.startswith("//"):
        authority, _, database = rest[2:].partition("/")
        if "," in authority:
            raise MigrationError("FLYWAY_URL: several hosts are not supported by the native path")
        if "@" in authority:
            raise MigrationError("FLYWAY_URL: put the user in FLYWAY_USER, not in the host part")
        if authority.startswith("["):
            close = authority.find("]")
            if close < 0:
                raise MigrationError("FLYWAY_URL: unterminated IPv6 address")
            host, port_text = authority[1:close], authority[close + 1 :].removeprefix(":")
        else:
            host, _, port_text = authority.partition(":")
        host = host or "localhost"
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise MigrationError(f"FLYWAY_URL: invalid port {port_text!r}")
            port = int(port_text)
    else:
        database = rest.lstrip("/")
    return host, port, unquote(database), params


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise MigrationError(f"{name} must be a whole number >= 0, not {value!r}")
    return number


@dataclass(frozen=True)
class Config:
    """Connection and migration settings, read from Flyway's own environment variables so one
    set of variables drives both the Flyway image and this module."""

    locations: tuple[Path, ...]
    host: str = "localhost"
    port: int = DEFAULT_PORT
    dbname: str = ""
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    schemas: tuple[str, ...] = ()
    table: str = DEFAULT_TABLE
    connect_retries: int = 0
    placeholders: Mapping[str, str] = field(default_factory=dict, repr=False)
    placeholder_replacement: bool = True
    installed_by: str | None = None
    create_schemas: bool = True
    # Extra libpq parameters (sslmode, ...); may hold an SSL key password, so not in repr.
    params: Mapping[str, str] = field(default_factory=dict, repr=False)
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read FLYWAY_* variables (the process environment by default)."""
        env = os.environ if environ is None else environ
        url = env.get("FLYWAY_URL", "").strip()
        if not url:
            raise MigrationError("FLYWAY_URL is not set (jdbc:postgresql://host:port/database)")
        host, port, dbname, url_params = parse_jdbc_url(url)
        ignored: list[str] = []
        params: dict[str, str] = {}
        user = env.get("FLYWAY_USER") or None
        password = env.get("FLYWAY_PASSWORD") or None
        for key, value in url_params.items():
            lower = key.lower()
            if lower == "user":
                user = user or value or None
            elif lower == "password":
                password = password or value or None
            elif lower == "ssl":
                if value.lower() in ("", "true") and "sslmode" not in params:
                    params["sslmode"] = "verify-full"  # pgjdbc's meaning of ssl=true
            elif lower in _JDBC_PARAMS:
                params[_JDBC_PARAMS[lower]] = value
            else:
                ignored.append(f"FLYWAY_URL parameter {key}")

        raw_locations = env.get("FLYWAY_LOCATIONS", "").strip()
        if not raw_locations:
            raise MigrationError(
                "FLYWAY_LOCATIONS is not set (for example filesystem:deploy/db-deploy/sql)"
            )
        locations = tuple(_location_path(loc) for loc in raw_locations.split(",") if loc.strip())

        schemas = [s.strip() for s in env.get("FLYWAY_SCHEMAS", "").split(",") if s.strip()]
        default_schema = env.get("FLYWAY_DEFAULT_SCHEMA", "").strip()
        if default_schema:
            schemas = [default_schema, *(s for s in schemas if s != default_schema)]

        placeholders: dict[str, str] = {}
        settings_prefix, placeholder_prefix = "FLYWAY_", "FLYWAY_PLACEHOLDERS_"
        for key, value in env.items():
            if key.startswith(placeholder_prefix) and len(key) > len(placeholder_prefix):
                placeholders[key[len(placeholder_prefix) :].lower()] = value
            elif key.startswith(settings_prefix) and key[7:] not in _KNOWN_SETTINGS:
                ignored.append(key)

        replacement = env.get("FLYWAY_PLACEHOLDER_REPLACEMENT", "true").strip().lower()
        return cls(
            locations=locations,
            host=host,
            port=port,
            dbname=dbname,
            user=user,
            password=password,
            schemas=tuple(schemas),
            table=env.get("FLYWAY_TABLE", "").strip() or DEFAULT_TABLE,
            connect_retries=_positive_int(
                "FLYWAY_CONNECT_RETRIES", env.get("FLYWAY_CONNECT_RETRIES", "0").strip() or "0"
            ),
            placeholders=placeholders,
            placeholder_replacement=replacement != "false",
            installed_by=env.get("FLYWAY_INSTALLED_BY") or None,
            create_schemas=env.get("FLYWAY_CREATE_SCHEMAS", "true").strip().lower() != "false",
            params=params,
            ignored=tuple(sorted(ignored)),
        )

    def conninfo(self) -> str:
        """libpq connection string; make_conninfo quotes every value, so any password works."""
        extra: dict[str, Any] = {
            "connect_timeout": 10,
            "application_name": "flyway-native",
            "client_encoding": "UTF8",
        }
        extra.update(self.params)
        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.dbname or None,
            user=self.user,
            password=self.password,
            **extra,
        )

    @property
    def display_url(self) -> str:
        """Where we connect, for messages: never the password or URL parameters."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"jdbc:postgresql://{host}:{self.port}/{self.dbname}"

    def scrub(self, text: str) -> str:
        """Hide the password should a driver message ever echo it."""
        for secret in (self.password, self.params.get("sslpassword")):
            if secret:
                text = text.replace(secret, "***")
        return text


# --------------------------------------------------------------------------- history table


@dataclass(frozen=True)
class HistoryRow:
    """One row of the schema history table."""

    installed_rank: int
    version: str | None
    description: str
    type: str
    script: str
    checksum: int | None
    installed_by: str
    installed_on: dt.datetime | None
    execution_time: int
    success: bool


@dataclass(frozen=True)
class Applied:
    """A migration this run applied, with the history row it wrote."""

    migration: Migration
    installed_rank: int
    checksum: int
    execution_time_ms: int


@dataclass(frozen=True)
class InfoRow:
    """One line of `info`: an applied row or a pending file."""

    category: str
    version: str
    description: str
    type: str
    installed_on: str
    state: str
    script: str


Conn = psycopg.Connection[tuple[Any, ...]]


def _qualified(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def _create_table_sql(schema: str, table: str) -> sql.Composed:
    """Flyway's PostgreSQL DDL for the history table, constraint names derived from the table."""
    return sql.SQL(
        """CREATE TABLE {table} (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE {table} ADD CONSTRAINT {pk} PRIMARY KEY ("installed_rank");
CREATE INDEX {idx} ON {table} ("success");"""
    ).format(
        table=_qualified(schema, table),
        pk=sql.Identifier(f"{table}_pk"),
        idx=sql.Identifier(f"{table}_s_idx"),
    )


_INSERT_SQL = """INSERT INTO {table} ("installed_rank", "version", "description", "type",
    "script", "checksum", "installed_by", "execution_time", "success")
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"""


def _schema_exists(conn: Conn, schema: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,))
    return row.fetchone() is not None


def _table_exists(conn: Conn, schema: str, table: str) -> bool:
    cur = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
        " AND c.relkind IN ('r', 'p')",
        (schema, table),
    )
    return cur.fetchone() is not None


def _read_history(conn: Conn, schema: str, table: str) -> list[HistoryRow]:
    if not _table_exists(conn, schema, table):
        return []
    cur = conn.execute(
        sql.SQL(
            'SELECT "installed_rank", "version", "description", "type", "script", "checksum",'
            ' "installed_by", "installed_on", "execution_time", "success"'
            ' FROM {} ORDER BY "installed_rank"'
        ).format(_qualified(schema, table))
    )
    return [HistoryRow(*row) for row in cur.fetchall()]


def _abbreviate_description(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."


def _abbreviate_script(text: str) -> str:
    return text if len(text) <= MAX_SCRIPT else "..." + text[-(MAX_SCRIPT - 3) :]


# --------------------------------------------------------------------------- analysis


@dataclass
class _Analysis:
    """What validation found and what migrate would do."""

    errors: list[str] = field(default_factory=list)
    pending_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)
    current: str | None = None
    rows: list[InfoRow] = field(default_factory=list)


def _fmt_time(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _analyse(
    migrations: Sequence[Migration],
    history: Sequence[HistoryRow],
    effective: Mapping[str, int],
    where: str,
) -> _Analysis:
    """Compare files with history the way Flyway's validate does.

    `effective` maps a repeatable's script to the checksum of its replaced text.
    """
    result = _Analysis()
    local_versions = {m.key: m for m in migrations if m.version is not None}
    local_repeatables = {m.description: m for m in migrations if m.version is None}
    max_local = max(local_versions, default=())

    deleted_at: dict[tuple[int, ...] | str, int] = {}
    for row in history:
        if row.type == "DELETE":
            ident: tuple[int, ...] | str = (
                version_key(row.version) if row.version is not None else row.description
            )
            deleted_at[ident] = row.installed_rank

    applied: dict[tuple[int, ...], HistoryRow] = {}
    latest_repeatable: dict[str, HistoryRow] = {}
    superseded: set[int] = set()
    baseline: tuple[int, ...] = ()
    for row in history:
        if row.type in ("SCHEMA", "DELETE"):
            continue
        if row.version is None:
            if deleted_at.get(row.description, -1) > row.installed_rank:
                continue
            if not row.success:
                result.errors.append(
                    f'detected failed repeatable migration "{row.description}" ({row.script}) '
                    f"at installed_rank {row.installed_rank} in {where}: undo what it did, "
                    f"then delete that row (as `flyway repair` would) and migrate again"
                )
                continue
            previous = latest_repeatable.get(row.description)
            if previous is not None:
                superseded.add(previous.installed_rank)
            latest_repeatable[row.description] = row
            continue
        key = version_key(row.version)
        if deleted_at.get(key, -1) > row.installed_rank:
            continue
        if not row.success:
            result.errors.append(
                f"detected failed migration to version {row.version} ({row.description}, "
                f"{row.script}) at installed_rank {row.installed_rank} in {where}: undo what it "
                f"did, then delete that row (DELETE FROM {where} WHERE installed_rank = "
                f"{row.installed_rank}, as `flyway repair` would) and migrate again"
            )
            continue
        applied[key] = row
        if row.type == "BASELINE":
            baseline = max(baseline, key)

    highest = max(applied, default=())
    if applied:
        result.current = applied[highest].version

    # Applied versioned rows against the files.
    for key, row in applied.items():
        if row.type == "BASELINE":
            continue
        m = local_versions.get(key)
        if m is None:
            if key > max_local:
                result.warnings.append(
                    f"schema has version {row.version} applied ({row.script}), newer than the "
                    "latest local migration: this checkout is older than the database"
                )
            else:
                result.errors.append(
                    f"detected applied migration not resolved locally: {row.version} "
                    f"({row.script}). Restore the file; if it was removed on purpose, run "
                    "`flyway repair` to mark it deleted"
                )
            continue
        if row.type != m.type:
            result.errors.append(
                f"migration type mismatch for version {row.version}: applied to database "
                f"{row.type}, resolved locally {m.type} ({m.script})"
            )
        elif row.checksum != m.checksum:
            result.errors.append(
                f"migration checksum mismatch for {m.script} (version {m.version}): applied to "
                f"database {row.checksum}, resolved locally {m.checksum}. Never edit an applied "
                "migration: revert the file and add a new migration for the change"
            )
        elif row.description != _abbreviate_description(m.description):
            result.errors.append(
                f"migration description mismatch for version {row.version}: applied to "
                f"database {row.description!r}, resolved locally {m.description!r} "
                f"({m.script}). Revert the file name"
            )

    # Applied repeatables whose file is gone.
    for description, row in latest_repeatable.items():
        if description not in local_repeatables:
            result.errors.append(
                f'detected applied repeatable migration not resolved locally: "{description}" '
                f"({row.script}). Restore the file; if it was removed on purpose, run "
                "`flyway repair` to mark it deleted"
            )

    # Info rows for what is in the history.
    for row in history:
        category = "Repeatable" if row.version is None else "Versioned"
        if row.type == "SCHEMA":
            state, category = "Success", ""
        elif not row.success:
            state = "Failed"
        elif row.type == "DELETE":
            state = "Deleted"
        elif row.installed_rank in superseded:
            state = "Superseded"
        elif row.version is None:
            m = local_repeatables.get(row.description)
            if m is None:
                state = "Missing"
            elif row.checksum in (m.checksum, effective.get(m.script, m.checksum)):
                state = "Success"
            else:
                state = "Outdated"
        elif row.type == "BASELINE":
            state = "Baseline"
        else:
            key = version_key(row.version)
            if key in local_versions:
                state = "Success"
            else:
                state = "Future" if key > max_local else "Missing"
        result.rows.append(
            InfoRow(
                category,
                row.version or "",
                row.description,
                row.type,
                _fmt_time(row.installed_on),
                state,
                row.script,
            )
        )

    # Pending versioned files.
    for key, m in sorted(local_versions.items()):
        if key in applied:
            continue
        if baseline and key <= baseline:
            result.rows.append(
                InfoRow(
                    "Versioned",
                    m.version or "",
                    m.description,
                    m.type,
                    "",
                    "Below Baseline",
                    m.script,
                )
            )
            continue
        if key < highest:
            result.errors.append(
                f"detected resolved migration not applied to database: {m.version} ({m.script})"
                f" is below the highest applied version {applied[highest].version}; Flyway "
                "runs in order. Give it a version above the highest applied one"
            )
            result.rows.append(
                InfoRow(
                    "Versioned", m.version or "", m.description, m.type, "", "Ignored", m.script
                )
            )
            continue
        result.pending.append(m)
        result.pending_errors.append(
            f"detected resolved migration not applied to database: {m.version} ({m.script})"
        )
        result.rows.append(
            InfoRow("Versioned", m.version or "", m.description, m.type, "", "Pending", m.script)
        )

    # Repeatables that are new or changed, by description.
    for description, m in sorted(local_repeatables.items()):
        last = latest_repeatable.get(description)
        value = effective.get(m.script, m.checksum)
        # Flyway accepts the raw-text checksum as well as the replaced one.
        if last is not None and last.checksum in (value, m.checksum):
            continue
        result.pending.append(m)
        result.pending_errors.append(
            f'detected resolved repeatable migration not applied to database: "{description}"'
            f" ({m.script})"
        )
        result.rows.append(
            InfoRow("Repeatable", "", m.description, m.type, "", "Pending", m.script)
        )
    return result


# --------------------------------------------------------------------------- running


@dataclass
class _Session:
    conn: Conn
    schema: str
    table: str
    user: str
    database: str
    where: str
    # One ${flyway:timestamp} per run, like Flyway.
    stamp: str = field(default_factory=lambda: dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"))


def _connect(config: Config, out: Out) -> Conn:
    """Connect, retrying once a second up to FLYWAY_CONNECT_RETRIES times."""
    attempts = config.connect_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return psycopg.connect(config.conninfo(), autocommit=True)
        except psycopg.OperationalError as exc:
            reason = config.scrub(" ".join(str(exc).split()))
            if attempt >= attempts:
                hint = "" if config.connect_retries else " (set FLYWAY_CONNECT_RETRIES to wait)"
                raise MigrationError(
                    f"unable to connect to {config.display_url} as {config.user or '(default)'}"
                    f": {reason}{hint}"
                ) from None
            out(
                f"Database {config.display_url} not reachable yet ({reason}); "
                f"retrying in 1 s (attempt {attempt}/{config.connect_retries})"
            )
            time.sleep(1)
    raise AssertionError("unreachable")  # pragma: no cover


def _open(config: Config, out: Out) -> _Session:
    conn = _connect(config, out)
    try:
        row = conn.execute(
            "SELECT current_user, current_database(), current_schema(),"
            " current_setting('server_version')"
        ).fetchone()
        assert row is not None
        user, database, current_schema, server_version = row
        schema = config.schemas[0] if config.schemas else current_schema
        if not schema:
            raise MigrationError(
                "no default schema: set FLYWAY_SCHEMAS (the first one holds the history table)"
            )
        version = str(server_version).split(" ", 1)[0]
        out(f"Database: {config.display_url} (PostgreSQL {version})")
        return _Session(
            conn,
            schema,
            config.table,
            config.installed_by or user,
            database,
            f"{_quote(schema)}.{_quote(config.table)}",
        )
    except BaseException:
        conn.close()
        raise


def _builtins(config: Config, session: _Session, m: Migration, stamp: str) -> dict[str, str]:
    """Configured placeholders plus Flyway's built-in ones (names lower-cased)."""
    values = dict(config.placeholders)
    values.update(
        {
            "flyway:defaultschema": session.schema,
            "flyway:user": session.user,
            "flyway:database": session.database,
            "flyway:timestamp": stamp,
            "flyway:filename": m.path.name,
            "flyway:workingdirectory": str(Path.cwd()),
            "flyway:table": session.table,
        }
    )
    return values


def _render(config: Config, session: _Session, migrations: Sequence[Migration]) -> dict[str, str]:
    """Replaced text of each migration, keyed by script. Callers render every pending file
    before applying any, so an unknown placeholder stops the run with nothing applied."""
    texts: dict[str, str] = {}
    for m in migrations:
        text = m.read_text()
        if config.placeholder_replacement:
            values = _builtins(config, session, m, session.stamp)
            text = replace_placeholders(text, values, filename=m.script)
        texts[m.script] = text
    return texts


def _position(text: str, position: str | None) -> str:
    if not position or not position.isdigit():
        return ""
    index = max(0, min(len(text), int(position) - 1))
    line = text.count("\n", 0, index) + 1
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    snippet = " ".join(text[start : end if end >= 0 else len(text)].split())[:120]
    return f" at line {line}, column {index - start + 1}: {snippet}"


def _sql_error(m: Migration, text: str, exc: psycopg.Error, config: Config) -> MigrationError:
    diag = exc.diag
    message = diag.message_primary or str(exc)
    parts = [
        f"migration {m.script} failed, rolled back, no history row written: "
        f"{diag.severity or 'ERROR'}: {message}"
        + (f" (SQLSTATE {diag.sqlstate})" if diag.sqlstate else "")
        + _position(text, diag.statement_position)
    ]
    if diag.message_detail:
        parts.append(f"DETAIL: {diag.message_detail}")
    if diag.message_hint:
        parts.append(f"HINT: {diag.message_hint}")
    if diag.context:
        parts.append(f"WHERE: {diag.context}")
    if diag.sqlstate == "25001":
        parts.append(
            "the native path runs every migration in a transaction; statements such as CREATE "
            "INDEX CONCURRENTLY or VACUUM are not supported here (apply it with the Flyway image)"
        )
    return MigrationError(config.scrub(" ".join("; ".join(parts).split())))


def _prepare(session: _Session, config: Config, out: Out) -> None:
    """Create missing schemas and the history table like Flyway, with its schema marker."""
    conn = session.conn
    with conn.transaction():
        missing = [s for s in config.schemas if not _schema_exists(conn, s)]
        if missing and not config.create_schemas:
            raise MigrationError(
                f'schema "{missing[0]}" does not exist and FLYWAY_CREATE_SCHEMAS is false'
            )
        for schema in missing:
            out(f"Creating schema {_quote(schema)} ...")
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        if not _schema_exists(conn, session.schema):
            raise MigrationError(f'schema "{session.schema}" does not exist')
        if not _table_exists(conn, session.schema, session.table):
            out(f"Creating Schema History table {session.where} ...")
            conn.execute(_create_table_sql(session.schema, session.table))
            if missing:
                conn.execute(
                    sql.SQL(_INSERT_SQL).format(table=_qualified(session.schema, session.table)),
                    (
                        0,
                        None,
                        SCHEMA_MARKER_DESCRIPTION,
                        "SCHEMA",
                        ",".join(_quote(s) for s in missing),
                        None,
                        session.user,
                        0,
                        True,
                    ),
                )


def _set_search_path(session: _Session, original: str) -> None:
    """Flyway puts the default schema first and keeps the original path after it."""
    quoted = _quote(session.schema)
    path = quoted if not original.strip() else f"{quoted},{original}"
    if original.startswith((session.schema + ",", quoted + ",")) or original in (
        session.schema,
        quoted,
    ):
        path = original
    session.conn.execute("SELECT set_config('search_path', %s, false)", (path,))


def _apply(session: _Session, m: Migration, text: str, value: int, config: Config) -> Applied:
    """Run one migration and write its history row in one transaction."""
    conn = session.conn
    try:
        with conn.transaction():
            started = time.perf_counter()
            # Bytes and no parameters: sent as one simple-protocol script, `%` left alone.
            conn.execute(text.encode("utf-8"), prepare=False)
            elapsed = round((time.perf_counter() - started) * 1000)
            if conn.info.transaction_status != TransactionStatus.INTRANS:
                raise MigrationError(
                    f"migration {m.script} ended the transaction itself (COMMIT/ROLLBACK in the "
                    "file): its statements up to that point are committed but no history row "
                    "was written; remove the transaction control and check the schema by hand"
                )
            conn.execute("RESET ROLE")
            row = conn.execute(
                sql.SQL('SELECT coalesce(max("installed_rank"), 0) + 1 FROM {}').format(
                    _qualified(session.schema, session.table)
                )
            ).fetchone()
            assert row is not None
            rank = int(row[0])
            conn.execute(
                sql.SQL(_INSERT_SQL).format(table=_qualified(session.schema, session.table)),
                (
                    rank,
                    m.version,
                    _abbreviate_description(m.description),
                    m.type,
                    _abbreviate_script(m.script),
                    value,
                    session.user,
                    elapsed,
                    True,
                ),
            )
    except psycopg.Error as exc:
        raise _sql_error(m, text, exc, config) from exc
    return Applied(m, rank, value, elapsed)


def _effective(migrations: Sequence[Migration], texts: Mapping[str, str]) -> dict[str, int]:
    return {m.script: _checksum_text(texts[m.script]) for m in migrations if m.version is None}


def _db_error(config: Config, exc: psycopg.Error) -> MigrationError:
    """A database error outside a migration's SQL, on one line, password scrubbed."""
    return MigrationError(
        config.scrub(f"database error on {config.display_url}: " + " ".join(str(exc).split()))
    )


def _raise(errors: Sequence[str]) -> None:
    if errors:
        raise MigrationError("validate failed: " + " | ".join(errors))


def _plural(count: int) -> str:
    return f"{count} migration" + ("" if count == 1 else "s")


def migrate(config: Config, *, out: Out = print) -> list[Applied]:
    """Validate, then apply pending migrations under Flyway's advisory lock; returns what ran.

    Each migration and its history row commit together, so a failure leaves neither.
    """
    migrations = discover(config.locations)
    for name in config.ignored:
        out(f"WARNING: {name} is not supported by the native path and is ignored")
    try:
        session = _open(config, out)
    except psycopg.Error as exc:
        raise _db_error(config, exc) from None
    conn = session.conn
    key = lock_id(session.schema, session.table)
    try:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not got or not got[0]:
            out(f"Waiting for another migration run to finish (advisory lock {key}) ...")
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            return _migrate_locked(session, config, migrations, out)
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    except psycopg.Error as exc:
        raise _db_error(config, exc) from None
    finally:
        conn.close()


def _migrate_locked(
    session: _Session, config: Config, migrations: Sequence[Migration], out: Out
) -> list[Applied]:
    started = time.perf_counter()
    _prepare(session, config, out)
    history = _read_history(session.conn, session.schema, session.table)
    # Only repeatables need their text now (their checksum is over the replaced text);
    # applied versioned files are never rendered, as under Flyway.
    texts = _render(config, session, [m for m in migrations if m.version is None])
    effective = _effective(migrations, texts)
    analysis = _analyse(migrations, history, effective, session.where)
    _raise(analysis.errors)
    texts.update(_render(config, session, [m for m in analysis.pending if m.version is not None]))
    out(f"Successfully validated {_plural(len(migrations))}")
    for warning in analysis.warnings:
        out(f"WARNING: {warning}")
    out(
        f'Current version of schema "{session.schema}": '
        + (analysis.current or "<< Empty Schema >>")
    )
    if not analysis.pending:
        out(f'Schema "{session.schema}" is up to date. No migration necessary.')
        return []

    original_row = session.conn.execute("SELECT current_setting('search_path')").fetchone()
    original = str(original_row[0]) if original_row else ""
    applied: list[Applied] = []
    try:
        for m in analysis.pending:
            _set_search_path(session, original)
            value = m.checksum if m.version is not None else effective[m.script]
            done = _apply(session, m, texts[m.script], value, config)
            applied.append(done)
            what = (
                f'to version "{m.version}' + (f' - {m.description}"' if m.description else '"')
                if m.version is not None
                else f'with repeatable migration "{m.description}"'
            )
            out(
                f'Migrating schema "{session.schema}" {what} ... done in '
                f"{done.execution_time_ms} ms"
            )
    finally:
        if not session.conn.broken:
            session.conn.execute("RESET ROLE")
            session.conn.execute("SELECT set_config('search_path', %s, false)", (original,))
    total = round((time.perf_counter() - started) * 1000)
    versions = [a.migration for a in applied if a.migration.version is not None]
    now_at = versions[-1].version if versions else analysis.current
    out(
        f'Successfully applied {_plural(len(applied))} to schema "{session.schema}"'
        + (f", now at version v{now_at}" if now_at else "")
        + f" ({total} ms)"
    )
    return applied


def _inspect(config: Config, out: Out) -> tuple[_Session, list[Migration], _Analysis]:
    migrations = discover(config.locations)
    session = _open(config, out)
    try:
        history = _read_history(session.conn, session.schema, session.table)
        texts = _render(config, session, [m for m in migrations if m.version is None])
        analysis = _analyse(migrations, history, _effective(migrations, texts), session.where)
    except BaseException:
        session.conn.close()
        raise
    return session, migrations, analysis


def info(config: Config, *, out: Out = print) -> list[InfoRow]:
    """Print applied and pending migrations as a table (read-only: creates nothing)."""
    try:
        session, _, analysis = _inspect(config, out)
    except psycopg.Error as exc:
        raise _db_error(config, exc) from None
    session.conn.close()
    out(f"Schema version: {analysis.current or '<< Empty Schema >>'}")
    headers = ("Category", "Version", "Description", "Type", "Installed On", "State")
    cells = [headers] + [
        (r.category, r.version, r.description, r.type, r.installed_on, r.state)
        for r in analysis.rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out(rule)
    for index, row in enumerate(cells):
        out("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            out(rule)
    if not analysis.rows:
        out("| " + "No migrations found".ljust(len(rule) - 4) + " |")
    out(rule)
    for warning in analysis.warnings + analysis.errors:
        out(f"WARNING: {warning}")
    return analysis.rows


def validate(config: Config, *, out: Out = print) -> None:
    """Check files against history like `flyway validate` (pending migrations fail it too)."""
    try:
        session, migrations, analysis = _inspect(config, out)
    except psycopg.Error as exc:
        raise _db_error(config, exc) from None
    session.conn.close()
    errors = analysis.errors + [e + "; run migrate" for e in analysis.pending_errors]
    _raise(errors)
    for warning in analysis.warnings:
        out(f"WARNING: {warning}")
    out(f"Successfully validated {_plural(len(migrations))}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 1 with one clear line on a migration problem, 0 otherwise."""
    spec = globals().get("__spec__")
    module = getattr(spec, "name", None) or "migrate"
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description="Apply Flyway migrations natively; configured by the FLYWAY_* variables.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="migrate",
        choices=("migrate", "info", "validate"),
        help="migrate (default): apply pending migrations; info: list applied and pending; "
        "validate: check applied migrations against the files",
    )
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
        if args.command == "info":
            info(config)
        elif args.command == "validate":
            validate(config)
        else:
            migrate(config)
    except MigrationError as exc:
        print("ERROR: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
