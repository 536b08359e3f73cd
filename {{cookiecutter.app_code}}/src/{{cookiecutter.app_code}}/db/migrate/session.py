"""The database connection of one run: connect (with Flyway's retries), learn who and where
we are, and keep the search path as Flyway sets it."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import psycopg

from .config import Config
from .errors import MigrationError, Out
from .history import Conn, quote


@dataclass
class Session:
    """An open connection and what the run needs to know about it."""

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


def open_session(config: Config, out: Out) -> Session:
    """Connect and read the user, database, default schema and server version."""
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
        return Session(
            conn,
            schema,
            config.table,
            config.installed_by or user,
            database,
            f"{quote(schema)}.{quote(config.table)}",
        )
    except BaseException:
        conn.close()
        raise


def set_search_path(session: Session, original: str) -> None:
    """Flyway puts the default schema first and keeps the original path after it."""
    quoted = quote(session.schema)
    path = quoted if not original.strip() else f"{quoted},{original}"
    if original.startswith((session.schema + ",", quoted + ",")) or original in (
        session.schema,
        quoted,
    ):
        path = original
    session.conn.execute("SELECT set_config('search_path', %s, false)", (path,))


def db_error(config: Config, exc: psycopg.Error) -> MigrationError:
    """A database error outside a migration's SQL, on one line, password scrubbed."""
    return MigrationError(
        config.scrub(f"database error on {config.display_url}: " + " ".join(str(exc).split()))
    )
