"""The migration files: found under the FLYWAY_LOCATIONS, named, checksummed and ordered."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import MigrationError
from .names import Kind, checksum, parse_name, version_key


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


def location_path(location: str | Path) -> Path:
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
        root = location_path(location)
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
