"""Settings from Flyway's own environment variables, so one set drives both the Flyway image
and this path: FLYWAY_URL (a JDBC URL) becomes a libpq connection string."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from psycopg.conninfo import make_conninfo

from .discovery import location_path
from .errors import MigrationError
from .history import DEFAULT_TABLE

DEFAULT_PORT = 5432

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
        locations = tuple(location_path(loc) for loc in raw_locations.split(",") if loc.strip())

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
