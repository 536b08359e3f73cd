"""Files against history, the way Flyway's validate and info see them.

Pure: given the discovered files, the history rows and the repeatables' effective checksums,
say what is wrong (errors), what is merely odd (warnings), what migrate would apply (pending)
and what `info` shows for each migration. The messages follow Flyway's and say how to fix it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .discovery import Migration
from .history import HistoryRow, abbreviate_description
from .names import version_key

Key = tuple[int, ...]


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


@dataclass
class Analysis:
    """What validation found and what migrate would do."""

    errors: list[str] = field(default_factory=list)
    pending_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)
    current: str | None = None
    rows: list[InfoRow] = field(default_factory=list)


@dataclass(frozen=True)
class _Local:
    """The files: versioned by numeric key, repeatables by description."""

    versions: dict[Key, Migration]
    repeatables: dict[str, Migration]
    highest: Key
    # A repeatable's script -> checksum of its text after placeholder replacement.
    effective: Mapping[str, int]

    @classmethod
    def of(cls, migrations: Sequence[Migration], effective: Mapping[str, int]) -> _Local:
        versions = {m.key: m for m in migrations if m.version is not None}
        repeatables = {m.description: m for m in migrations if m.version is None}
        return cls(versions, repeatables, max(versions, default=()), effective)


@dataclass
class _Applied:
    """What the history says is in the database (deleted and failed rows left out)."""

    versions: dict[Key, HistoryRow] = field(default_factory=dict)
    repeatables: dict[str, HistoryRow] = field(default_factory=dict)  # the latest of each
    superseded: set[int] = field(default_factory=set)  # ranks of older repeatable runs
    baseline: Key = ()

    @property
    def highest(self) -> Key:
        return max(self.versions, default=())


def _fmt_time(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _deleted_at(history: Sequence[HistoryRow]) -> dict[Key | str, int]:
    """Rank of the DELETE row (written by `flyway repair`) of each version or repeatable."""
    deleted_at: dict[Key | str, int] = {}
    for row in history:
        if row.type == "DELETE":
            ident: Key | str = (
                version_key(row.version) if row.version is not None else row.description
            )
            deleted_at[ident] = row.installed_rank
    return deleted_at


def _read_applied(history: Sequence[HistoryRow], where: str, result: Analysis) -> _Applied:
    """Replay the history in rank order; failed rows are errors (Flyway needs a repair)."""
    deleted_at = _deleted_at(history)
    applied = _Applied()
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
            previous = applied.repeatables.get(row.description)
            if previous is not None:
                applied.superseded.add(previous.installed_rank)
            applied.repeatables[row.description] = row
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
        applied.versions[key] = row
        if row.type == "BASELINE":
            applied.baseline = max(applied.baseline, key)
    return applied


def _check_versions(local: _Local, applied: _Applied, result: Analysis) -> None:
    """Applied versioned rows against the files: missing, newer, or changed."""
    for key, row in applied.versions.items():
        if row.type == "BASELINE":
            continue
        m = local.versions.get(key)
        if m is None:
            if key > local.highest:
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
        elif row.description != abbreviate_description(m.description):
            result.errors.append(
                f"migration description mismatch for version {row.version}: applied to "
                f"database {row.description!r}, resolved locally {m.description!r} "
                f"({m.script}). Revert the file name"
            )


def _check_repeatables(local: _Local, applied: _Applied, result: Analysis) -> None:
    """Applied repeatables whose file is gone."""
    for description, row in applied.repeatables.items():
        if description not in local.repeatables:
            result.errors.append(
                f'detected applied repeatable migration not resolved locally: "{description}" '
                f"({row.script}). Restore the file; if it was removed on purpose, run "
                "`flyway repair` to mark it deleted"
            )


def _state(row: HistoryRow, local: _Local, applied: _Applied) -> str:
    """The `info` state of a history row (SCHEMA marker rows aside)."""
    if not row.success:
        return "Failed"
    if row.type == "DELETE":
        return "Deleted"
    if row.installed_rank in applied.superseded:
        return "Superseded"
    if row.version is None:
        m = local.repeatables.get(row.description)
        if m is None:
            return "Missing"
        if row.checksum in (m.checksum, local.effective.get(m.script, m.checksum)):
            return "Success"
        return "Outdated"
    if row.type == "BASELINE":
        return "Baseline"
    key = version_key(row.version)
    if key in local.versions:
        return "Success"
    return "Future" if key > local.highest else "Missing"


def _history_rows(
    history: Sequence[HistoryRow], local: _Local, applied: _Applied, result: Analysis
) -> None:
    """Info rows for what is in the history."""
    for row in history:
        if row.type == "SCHEMA":
            state, category = "Success", ""
        else:
            state = _state(row, local, applied)
            category = "Repeatable" if row.version is None else "Versioned"
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


def _file_row(m: Migration, state: str) -> InfoRow:
    """Info row of a file with no history row."""
    category = "Repeatable" if m.version is None else "Versioned"
    return InfoRow(category, m.version or "", m.description, m.type, "", state, m.script)


def _pending_versions(local: _Local, applied: _Applied, result: Analysis) -> None:
    """Versioned files not applied: pending above the highest applied version, refused below
    it (Flyway runs in order), ignored below a baseline."""
    highest = applied.highest
    for key, m in sorted(local.versions.items()):
        if key in applied.versions:
            continue
        if applied.baseline and key <= applied.baseline:
            result.rows.append(_file_row(m, "Below Baseline"))
            continue
        if key < highest:
            result.errors.append(
                f"detected resolved migration not applied to database: {m.version} ({m.script})"
                f" is below the highest applied version {applied.versions[highest].version}; "
                "Flyway runs in order. Give it a version above the highest applied one"
            )
            result.rows.append(_file_row(m, "Ignored"))
            continue
        result.pending.append(m)
        result.pending_errors.append(
            f"detected resolved migration not applied to database: {m.version} ({m.script})"
        )
        result.rows.append(_file_row(m, "Pending"))


def _pending_repeatables(local: _Local, applied: _Applied, result: Analysis) -> None:
    """Repeatables that are new or changed, by description."""
    for description, m in sorted(local.repeatables.items()):
        last = applied.repeatables.get(description)
        value = local.effective.get(m.script, m.checksum)
        # Flyway accepts the raw-text checksum as well as the replaced one.
        if last is not None and last.checksum in (value, m.checksum):
            continue
        result.pending.append(m)
        result.pending_errors.append(
            f'detected resolved repeatable migration not applied to database: "{description}"'
            f" ({m.script})"
        )
        result.rows.append(_file_row(m, "Pending"))


def analyse(
    migrations: Sequence[Migration],
    history: Sequence[HistoryRow],
    effective: Mapping[str, int],
    where: str,
) -> Analysis:
    """Compare files with history the way Flyway's validate does.

    `effective` maps a repeatable's script to the checksum of its replaced text; `where` is
    the quoted history table, for messages.
    """
    result = Analysis()
    local = _Local.of(migrations, effective)
    applied = _read_applied(history, where, result)
    if applied.versions:
        result.current = applied.versions[applied.highest].version
    _check_versions(local, applied, result)
    _check_repeatables(local, applied, result)
    _history_rows(history, local, applied, result)
    _pending_versions(local, applied, result)
    _pending_repeatables(local, applied, result)
    return result
