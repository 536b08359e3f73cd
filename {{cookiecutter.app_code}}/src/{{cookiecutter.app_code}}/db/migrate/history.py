"""Flyway's schema history table on PostgreSQL: its DDL, rows, reads and advisory lock.

The table, its constraint names and the lock key are Flyway's own, so the Flyway image and
this path can take turns on one database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_TABLE = "flyway_schema_history"
# Flyway's PostgreSQLAdvisoryLockTemplate: "Flyway" in ASCII, plus the table's hash code.
LOCK_MAGIC_NUM = 0x466C79776179
SCHEMA_MARKER_DESCRIPTION = "<< Flyway Schema Creation >>"
# Flyway abbreviates longer values to fit the history table's columns.
MAX_DESCRIPTION = 200
MAX_SCRIPT = 1000

Conn = psycopg.Connection[tuple[Any, ...]]


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


def _java_hash(text: str) -> int:
    """java.lang.String.hashCode(), over UTF-16 code units, as a signed 32-bit integer."""
    data = text.encode("utf-16-be")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= (1 << 31) else h


def quote(name: str) -> str:
    """An identifier quoted the way Flyway prints and hashes it."""
    return '"' + name.replace('"', '""') + '"'


def lock_id(schema: str, table: str = DEFAULT_TABLE) -> int:
    """The advisory lock key Flyway takes for this history table, so the two paths exclude
    each other: the magic number plus the hash of the quoted `"schema"."table"`.

    For "public"."flyway_schema_history" this is 77433833903597.
    """
    return LOCK_MAGIC_NUM + _java_hash(f"{quote(schema)}.{quote(table)}")


def qualified(schema: str, table: str) -> sql.Composed:
    """`"schema"."table"` for a query."""
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
        table=qualified(schema, table),
        pk=sql.Identifier(f"{table}_pk"),
        idx=sql.Identifier(f"{table}_s_idx"),
    )


_INSERT_SQL = """INSERT INTO {table} ("installed_rank", "version", "description", "type",
    "script", "checksum", "installed_by", "execution_time", "success")
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"""


def insert_row(conn: Conn, schema: str, table: str, values: tuple[Any, ...]) -> None:
    """Write one row: (installed_rank, version, description, type, script, checksum,
    installed_by, execution_time, success); installed_on is the server's now()."""
    conn.execute(sql.SQL(_INSERT_SQL).format(table=qualified(schema, table)), values)


def create_table(conn: Conn, schema: str, table: str, user: str, created: Sequence[str]) -> None:
    """Create the history table; when this run created schemas, Flyway's marker row says so
    at rank 0 (the schemas it names are the ones `flyway clean` may drop)."""
    conn.execute(_create_table_sql(schema, table))
    if created:
        marker = ",".join(quote(s) for s in created)
        values = (0, None, SCHEMA_MARKER_DESCRIPTION, "SCHEMA", marker, None, user, 0, True)
        insert_row(conn, schema, table, values)


def next_rank(conn: Conn, schema: str, table: str) -> int:
    """The installed_rank of the next row: one above the highest."""
    row = conn.execute(
        sql.SQL('SELECT coalesce(max("installed_rank"), 0) + 1 FROM {}').format(
            qualified(schema, table)
        )
    ).fetchone()
    assert row is not None
    return int(row[0])


def schema_exists(conn: Conn, schema: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,))
    return row.fetchone() is not None


def table_exists(conn: Conn, schema: str, table: str) -> bool:
    cur = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
        " AND c.relkind IN ('r', 'p')",
        (schema, table),
    )
    return cur.fetchone() is not None


def read_history(conn: Conn, schema: str, table: str) -> list[HistoryRow]:
    """Every row by rank; none when the table does not exist yet (read-only commands)."""
    if not table_exists(conn, schema, table):
        return []
    cur = conn.execute(
        sql.SQL(
            'SELECT "installed_rank", "version", "description", "type", "script", "checksum",'
            ' "installed_by", "installed_on", "execution_time", "success"'
            ' FROM {} ORDER BY "installed_rank"'
        ).format(qualified(schema, table))
    )
    return [HistoryRow(*row) for row in cur.fetchall()]


def abbreviate_description(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."


def abbreviate_script(text: str) -> str:
    return text if len(text) <= MAX_SCRIPT else "..." + text[-(MAX_SCRIPT - 3) :]
