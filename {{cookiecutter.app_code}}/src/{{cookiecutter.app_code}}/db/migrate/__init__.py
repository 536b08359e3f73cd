"""Flyway-compatible migration applier for machines without Docker.

The compose stack runs the official Flyway image; this package applies the same SQL files with
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

The modules, one concern each: `names` (file names, versions, checksums, placeholders),
`discovery` (the files), `config` (the FLYWAY_* variables), `history` (the history table and
its lock), `analysis` (files against history, as `flyway validate` and `info` see them),
`session` (the connection), `runner` (migrate, info, validate) and `cli` (the command line).
"""

from .analysis import InfoRow
from .cli import main
from .config import Config, parse_jdbc_url
from .discovery import Migration, discover
from .errors import MigrationError
from .history import HistoryRow, lock_id
from .names import checksum, parse_name, replace_placeholders, version_key
from .runner import Applied, info, migrate, validate

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
