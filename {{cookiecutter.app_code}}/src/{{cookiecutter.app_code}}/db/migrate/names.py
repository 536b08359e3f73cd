"""Flyway's text rules: file names, version order, checksums and placeholders.

Pure functions, no I/O: what they compute must match what real Flyway computes, or the
history rows this path writes would be rejected by `flyway validate`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Literal

from .errors import MigrationError

Kind = Literal["V", "R"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def checksum_text(text: str) -> int:
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
    return checksum_text(data.decode("utf-8"))


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
