"""The command line: `python -m <app>.db.migrate [migrate|info|validate]`.

Exit 1 with one clear line on stderr for a problem the operator must fix, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import Config
from .errors import MigrationError
from .runner import info, migrate, validate


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 1 with one clear line on a migration problem, 0 otherwise."""
    # The package, not this module: `python -m <app>.db.migrate` runs its __main__.
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__ or 'migrate'}",
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
