"""The commands: migrate (validate, then apply what is pending under Flyway's lock), info and
validate (read-only), as Flyway runs them and with Flyway's messages."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from .analysis import Analysis, InfoRow, analyse
from .config import Config
from .discovery import Migration, discover
from .errors import MigrationError, Out
from .history import (
    abbreviate_description,
    abbreviate_script,
    create_table,
    insert_row,
    lock_id,
    next_rank,
    quote,
    read_history,
    schema_exists,
    table_exists,
)
from .names import checksum_text, replace_placeholders
from .session import Session, db_error, open_session, set_search_path


@dataclass(frozen=True)
class Applied:
    """A migration this run applied, with the history row it wrote."""

    migration: Migration
    installed_rank: int
    checksum: int
    execution_time_ms: int


def _builtins(config: Config, session: Session, m: Migration, stamp: str) -> dict[str, str]:
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


def _render(config: Config, session: Session, migrations: Sequence[Migration]) -> dict[str, str]:
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


def _prepare(session: Session, config: Config, out: Out) -> None:
    """Create missing schemas and the history table like Flyway, with its schema marker."""
    conn = session.conn
    with conn.transaction():
        missing = [s for s in config.schemas if not schema_exists(conn, s)]
        if missing and not config.create_schemas:
            raise MigrationError(
                f'schema "{missing[0]}" does not exist and FLYWAY_CREATE_SCHEMAS is false'
            )
        for schema in missing:
            out(f"Creating schema {quote(schema)} ...")
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        if not schema_exists(conn, session.schema):
            raise MigrationError(f'schema "{session.schema}" does not exist')
        if not table_exists(conn, session.schema, session.table):
            out(f"Creating Schema History table {session.where} ...")
            create_table(conn, session.schema, session.table, session.user, missing)


def _apply(session: Session, m: Migration, text: str, value: int, config: Config) -> Applied:
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
            rank = next_rank(conn, session.schema, session.table)
            row = (
                rank,
                m.version,
                abbreviate_description(m.description),
                m.type,
                abbreviate_script(m.script),
                value,
                session.user,
                elapsed,
                True,
            )
            insert_row(conn, session.schema, session.table, row)
    except psycopg.Error as exc:
        raise _sql_error(m, text, exc, config) from exc
    return Applied(m, rank, value, elapsed)


def _effective(migrations: Sequence[Migration], texts: Mapping[str, str]) -> dict[str, int]:
    return {m.script: checksum_text(texts[m.script]) for m in migrations if m.version is None}


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
        session = open_session(config, out)
    except psycopg.Error as exc:
        raise db_error(config, exc) from None
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
        raise db_error(config, exc) from None
    finally:
        conn.close()


def _migrate_locked(
    session: Session, config: Config, migrations: Sequence[Migration], out: Out
) -> list[Applied]:
    started = time.perf_counter()
    _prepare(session, config, out)
    history = read_history(session.conn, session.schema, session.table)
    # Only repeatables need their text now (their checksum is over the replaced text);
    # applied versioned files are never rendered, as under Flyway.
    texts = _render(config, session, [m for m in migrations if m.version is None])
    effective = _effective(migrations, texts)
    analysis = analyse(migrations, history, effective, session.where)
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
            set_search_path(session, original)
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


def _inspect(config: Config, out: Out) -> tuple[Session, list[Migration], Analysis]:
    migrations = discover(config.locations)
    session = open_session(config, out)
    try:
        history = read_history(session.conn, session.schema, session.table)
        texts = _render(config, session, [m for m in migrations if m.version is None])
        analysis = analyse(migrations, history, _effective(migrations, texts), session.where)
    except BaseException:
        session.conn.close()
        raise
    return session, migrations, analysis


def info(config: Config, *, out: Out = print) -> list[InfoRow]:
    """Print applied and pending migrations as a table (read-only: creates nothing)."""
    try:
        session, _, analysis = _inspect(config, out)
    except psycopg.Error as exc:
        raise db_error(config, exc) from None
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
        raise db_error(config, exc) from None
    session.conn.close()
    errors = analysis.errors + [e + "; run migrate" for e in analysis.pending_errors]
    _raise(errors)
    for warning in analysis.warnings:
        out(f"WARNING: {warning}")
    out(f"Successfully validated {_plural(len(migrations))}")
